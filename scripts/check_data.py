"""Scan a whole dataset and report every problem at once: python scripts/check_data.py [overrides]

Names every defective file (unpaired, duplicate, unreadable, zero-byte or truncated, size
mismatch, wrong mask mode, labels out of range, EXIF orientation differences, too large,
train/validation overlap, empty split) and prints the class histogram per split.
Exits 1 when there are errors.
"""

import json
import sys

import seg_hydra


def main(argv: list[str]) -> int:
    if {"-h", "--help"} & set(argv):
        print(__doc__.strip())
        return 0
    from seg.train import check_data

    as_json = "--json" in argv
    argv = [a for a in argv if a != "--json"]
    unknown = [a for a in argv if a.startswith("-")]
    if unknown:
        seg_hydra.fail(ValueError(f"unknown option {unknown[0]}: use --json, --help and "
                                  "key=value overrides"))
    report = seg_hydra.refusing(lambda: check_data(seg_hydra.compose_dict(argv),
                                                progress=sys.stdout.isatty() and not as_json))
    if report is None:
        print("data.name=shapes is generated in memory: there are no files to check.")
        return 0
    print(json.dumps(report.as_dict(), indent=2) if as_json else report.text())
    return 1 if report.errors else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
