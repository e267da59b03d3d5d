"""The plan against the default config and a hand recipe, at the same wall time: issue 28's table.

    python scripts/plan_benchmark.py OUT --data "data=folder data.root=DIR ..." \\
        --hand "data.image_size=256 model.depth=4 ..." [--minutes 15] [--seeds 0 1] \\
        [--only plan,default,hand]

For each seed it runs, one after another (each alone on the machine):
  plan     scripts/plan.py DATA seed=S plan.budget_minutes=M, then the train command it
           printed: the budget covers both, as a user runs them;
  default  scripts/train.py DATA seed=S trainer.time_budget_minutes=M;
  hand     scripts/train.py DATA HAND seed=S trainer.time_budget_minutes=M;
each into OUT/<recipe>_s<seed>, and prints a Markdown table from their metrics.json: val mIoU on
the whole validation split, per-class IoU, wall time (the plan's own time included) and the
share of the budget used. `--table` only prints the table of what OUT holds.
"""

from __future__ import annotations

import argparse
import json
import shlex
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
RECIPES = ("plan", "default", "hand")


def _run(args: list[str], log: Path) -> float:
    start = time.perf_counter()
    with open(log, "w") as f:
        done = subprocess.run([sys.executable, *args], cwd=ROOT, stdout=f, stderr=subprocess.STDOUT)
    if done.returncode:
        sys.exit(f"{' '.join(args[:2])} failed (exit {done.returncode}): see {log}")
    return time.perf_counter() - start


def one(out: Path, recipe: str, seed: int, data: list[str], hand: list[str], minutes: float):
    folder, name = out / f"{recipe}_s{seed}", f"bench_{out.name}_s{seed}"
    log = out / f"{recipe}_s{seed}.log"
    budget = f"trainer.time_budget_minutes={minutes:g}"
    plan_s = 0.0
    if recipe == "plan":
        plan_s = _run(["scripts/plan.py", *data, f"seed={seed}", f"plan.budget_minutes={minutes:g}",
                       f"plan.name={name}"], out / f"plan_s{seed}.plan.log")
        args = [f"+experiment=plan_{name}"]
    else:
        args = [*data, *(hand if recipe == "hand" else []), f"seed={seed}", budget]
    wall = _run(["scripts/train.py", *args, f"hydra.run.dir={folder}"], log)
    (folder / "bench.json").write_text(json.dumps({"plan_s": plan_s, "train_s": wall}))


def table(out: Path, minutes: float) -> str:
    rows = ["| recipe | seed | val mIoU | per-class IoU | steps | wall time (plan + run) | "
            "budget used |", "|---|---|---|---|---|---|---|"]
    for folder in sorted(p for p in out.iterdir() if (p / "metrics.json").is_file()):
        m = json.loads((folder / "metrics.json").read_text())
        times = json.loads((folder / "bench.json").read_text()) if (
            folder / "bench.json").is_file() else {"plan_s": 0.0, "train_s": m["wall_time_s"]}
        cfg = json.loads((folder / "config.json").read_text())
        per_epoch = m.get("steps_per_epoch") or cfg["trainer"]["steps_per_epoch"]
        steps = (m["epochs_completed"] * per_epoch) if isinstance(per_epoch, int) else "-"
        total = times["plan_s"] + times["train_s"]
        recipe, _, seed = folder.name.rpartition("_s")
        per_class = " / ".join(f"{v:.2f}" for v in m["val_iou_per_class"])
        rows.append(f"| {recipe} | {seed} | {m['val_mean_iou']:.4f} | {per_class} | {steps} | "
                    f"{times['plan_s']:.0f} + {times['train_s']:.0f} = {total:.0f} s | "
                    f"{100 * total / (60 * minutes):.0f}% |")
    return "\n".join(rows)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python scripts/plan_benchmark.py",
                                     description=__doc__.split("\n")[0])
    parser.add_argument("out", type=Path, help="the folder of the runs")
    parser.add_argument("--data", default="", help="the data overrides, one string")
    parser.add_argument("--hand", default="", help="the hand recipe's overrides, one string")
    parser.add_argument("--minutes", type=float, default=15.0)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1])
    parser.add_argument("--only", default=",".join(RECIPES),
                        help="which recipes, comma-separated (plan,default,hand)")
    parser.add_argument("--table", action="store_true", help="only print the table")
    args = parser.parse_args(argv)
    recipes = [r for r in args.only.split(",") if r]
    unknown = [r for r in recipes if r not in RECIPES]
    if unknown:
        parser.error(f"--only {','.join(unknown)}: use some of {','.join(RECIPES)}")
    if not args.table:
        args.out.mkdir(parents=True, exist_ok=True)
        for seed in args.seeds:
            for recipe in recipes:
                print(f"{recipe}, seed {seed} ...", flush=True)
                one(args.out, recipe, seed, shlex.split(args.data), shlex.split(args.hand),
                    args.minutes)
    print(table(args.out, args.minutes))
    return 0


if __name__ == "__main__":
    sys.exit(main())
