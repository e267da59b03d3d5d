"""Scan a whole dataset and report every problem at once: python scripts/check_data.py [overrides]

Names every defective file (unpaired, duplicate, unreadable, zero-byte or truncated, size
mismatch, wrong mask mode, labels out of range, EXIF orientation differences, too large,
train/validation overlap, empty split) and prints the class histogram per split.
Exits 1 when there are errors.
"""

import json
import sys

from hydra import compose, initialize_config_dir

import _hydra


def main(argv: list[str]) -> int:
    from seg.train import check_data

    as_json = "--json" in argv
    argv = [a for a in argv if a != "--json"]
    try:
        with initialize_config_dir(config_dir=_hydra.CONFIG_DIR, version_base="1.3"):
            cfg = _hydra.to_dict(compose(config_name="train", overrides=argv))
        cfg.pop("hydra", None)
        report = check_data(cfg, progress=sys.stdout.isatty() and not as_json)
    except _hydra.refusal_types() as e:
        _hydra.fail(e)
    except Exception as e:  # Hydra's override errors name the bad key or option
        if type(e).__module__.startswith(("hydra", "omegaconf")):
            _hydra.fail(e)
        raise
    if report is None:
        print("data.name=shapes is generated in memory: there are no files to check.")
        return 0
    print(json.dumps(report.as_dict(), indent=2) if as_json else report.text())
    return 1 if report.errors else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
