"""The diagnosis's verdicts on the zoo of public Keras models, and the monitor's false-alarm
rate: python scripts/verdicts.py [--seeds N] [--epochs E] [--no-monitor]

1. Every case of tests/zoo_models.py (public Keras segmentation models, as written and broken
   the way their users report) and of tests/test_diagnose_keras.py, through seg.diagnose:
   a sound model must get no error, a broken one an error; printed as cases, right verdicts,
   false alarms (an error on a sound model), misses (no error on a broken one) and tracebacks.
2. seg.SegmentationMonitor in a plain model.fit of sound U-Nets (BatchNorm, GroupNorm, no
   norm) at 4, 8 and 64 steps per epoch over N seeds: the share of runs with a collapse alarm.

A benchmark, not a test (the tests assert each verdict); it takes a few minutes on 2 cores.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import os
import sys
import traceback
import warnings
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))


def zoo_cases() -> list[tuple]:
    """(name, expected verdict, build, data, diagnose's keywords) of every zoo case and its
    fixed variant."""
    import test_diagnose_keras as keras_zoo
    import zoo_models

    cases = []
    for case in zoo_models.CASES:
        expected = "broken" if case.verdict == "broken" else "sound"
        if case.verdict == "scaling":
            expected = "any"  # unscaled images: an error about scaling is as right as none
        cases.append((case.name, expected, case.build, case.data, {}))
        if case.fixed is not None:
            cases.append((f"{case.name} (fixed)", "sound", case.fixed.build, case.fixed.data, {}))
    images = keras_zoo.IMAGES
    for name, factory, masks, level, _check, _words in keras_zoo.BROKEN:
        cases.append((name, "broken" if level == "error" else "sound", factory,
                      lambda masks=masks: (images, masks), keras_zoo.BROKEN_KWARGS.get(name, {})))
    for name, factory, masks in keras_zoo.SOUND:
        cases.append((name, "sound", factory, lambda masks=masks: (images, masks), {}))
    return cases


def verdicts() -> dict:
    import keras

    import seg

    counts = {"cases": 0, "right": 0, "false alarms": 0, "misses": 0, "tracebacks": 0}
    wrong = []
    for name, expected, build, data, kwargs in zoo_cases():
        counts["cases"] += 1
        keras.utils.set_random_seed(0)
        try:
            x, y = data()
            with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()):
                warnings.simplefilter("ignore")
                report = seg.diagnose(build(), x, y, **kwargs)
        except Exception:  # noqa: BLE001 (counted: a traceback is a defect)
            counts["tracebacks"] += 1
            wrong.append(f"traceback: {name}: {traceback.format_exc().splitlines()[-1]}")
            continue
        if expected == "sound" and report.errors:
            counts["false alarms"] += 1
            wrong.append(f"false alarm: {name}: {report.errors[0].check}: "
                         f"{report.errors[0].title}")
        elif expected == "broken" and not report.errors:
            counts["misses"] += 1
            wrong.append(f"miss: {name}")
        else:
            counts["right"] += 1
    return {"counts": counts, "wrong": wrong}


def monitor_rate(seeds: int, epochs: int) -> dict:
    import keras
    import test_monitor_verdicts as mv

    import seg

    runs = alarmed = 0
    notes = {"inference-mode lag": 0, "still learning": 0}
    rows = []
    for norm in ("batch", "group", None):
        for steps in (4, 8, 64):
            hits = 0
            for seed in range(seeds):
                keras.utils.set_random_seed(seed)
                x, y = mv.squares(8 * steps, 1 + seed)
                model = mv.sound(norm)
                monitor = seg.SegmentationMonitor(mv.squares(16, 99), log_dir=f"/tmp/verdicts/"
                                                  f"{norm}_{steps}_{seed}", every=0,
                                                  check_model=False)
                with contextlib.redirect_stdout(io.StringIO()):
                    model.fit(x, y, batch_size=8, epochs=epochs, verbose=0,
                              callbacks=[monitor])
                runs += 1
                hits += bool(monitor.alarms)
                for note in monitor.collapse.notes:
                    for kind in notes:
                        notes[kind] += note["note"].startswith(kind)
            alarmed += hits
            rows.append(f"  {str(norm):6} {steps:3} steps/epoch: {hits}/{seeds} runs alarmed")
    return {"runs": runs, "alarmed": alarmed, "rows": rows, "notes": notes}


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=3, help="seeds per monitor set-up")
    parser.add_argument("--epochs", type=int, default=5, help="epochs per monitor run")
    parser.add_argument("--no-monitor", action="store_true", help="the verdicts only")
    args = parser.parse_args(argv)
    if args.seeds < 1 or args.epochs < 1:
        parser.error("--seeds and --epochs must be at least 1")
    found = verdicts()
    c = found["counts"]
    print("== seg.diagnose on the zoo ==")
    print(f"  cases {c['cases']}, right verdicts {c['right']}, false alarms {c['false alarms']},"
          f" misses {c['misses']}, tracebacks {c['tracebacks']}")
    for line in found["wrong"]:
        print("  " + line)
    if not args.no_monitor:
        rate = monitor_rate(args.seeds, args.epochs)
        print(f"\n== seg.SegmentationMonitor on sound models ({args.epochs} epochs) ==")
        print("\n".join(rate["rows"]))
        print(f"  false-alarm rate {rate['alarmed']}/{rate['runs']} runs "
              f"({100 * rate['alarmed'] / rate['runs']:.1f}%); notes instead of alarms: "
              + ", ".join(f"{k} {v}" for k, v in rate["notes"].items()))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
