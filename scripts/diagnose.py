"""Run every check and probe for a config without training: python scripts/diagnose.py [overrides]

Prints a report; exits 1 when a check finds an error (a set-up that cannot train).
"""

import sys

from hydra import compose, initialize_config_dir

import _hydra


def main(argv: list[str]) -> int:
    from seg.train import diagnose

    try:
        with initialize_config_dir(config_dir=_hydra.CONFIG_DIR, version_base="1.3"):
            cfg = _hydra.to_dict(compose(config_name="train", overrides=argv))
        cfg.pop("hydra", None)
        report = diagnose(cfg)
    except _hydra.refusal_types() as e:
        _hydra.fail(e)
    except Exception as e:  # Hydra's override errors name the bad key or option
        if type(e).__module__.startswith(("hydra", "omegaconf")):
            _hydra.fail(e)
        raise
    print(report.text())
    return 1 if report.errors else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
