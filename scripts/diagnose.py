"""Run every check and probe for a config without training: python scripts/diagnose.py [overrides]

Prints a report; exits 1 when a check finds an error (a set-up that cannot train).
"""

import sys

import _hydra


def main(argv: list[str]) -> int:
    from seg.train import diagnose

    report = _hydra.refusing(lambda: diagnose(_hydra.compose_dict(argv)))
    print(report.text())
    return 1 if report.errors else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
