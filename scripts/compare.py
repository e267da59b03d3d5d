"""Compare the runs under a folder: python scripts/compare.py DIR

Prints a Markdown table of the runs under DIR (a sweep folder, or outputs/) grouped by the
settings that differ, seeds aside: val mIoU mean, spread and range over seeds, per-class IoU,
the monitors' alarms, epochs and wall time, then the runs without a result and which config
is best (with a Welch t-test when there are repeats). Writes DIR/compare.csv (one row per
config), DIR/compare_runs.csv (one row per run), DIR/compare.md, and DIR/compare.png: the same
validation images predicted by the best run of every config side by side (one block per class
set, each with its legend), also logged to TensorBoard as the run "compare" (tags
runs_compared/predictions and runs_compared/table).
"""

import argparse
import os
from pathlib import Path

import seg_hydra


def main(argv=None) -> str:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("dir", help="a folder of runs (a sweep folder, outputs/, ...)")
    p.add_argument("--csv", type=seg_hydra.file_to_write,
                   help="where the per-config CSV goes (default DIR/compare.csv); compare.md "
                        "and compare.png go beside it when DIR cannot be written")
    p.add_argument("--images", type=seg_hydra.whole(1), default=4,
                   help="validation images in the picture")
    p.add_argument("--no-picture", action="store_true", help="skip the prediction picture")
    args = p.parse_args(argv)
    from seg import compare

    root = Path(args.dir)
    try:
        runs = compare.find_runs(root)
    except FileNotFoundError as e:
        seg_hydra.fail(e)
    if not runs:
        seg_hydra.fail(FileNotFoundError(f"{root}: no run folders (with config.json) under it"))
    out = root if os.access(root, os.W_OK) else Path(args.csv).parent if args.csv else None
    if out is None:  # refused before the work, not a traceback after it
        seg_hydra.fail(PermissionError(
            f"{root}: cannot be written (read-only, or not this user's), so compare.csv, "
            "compare.md and compare.png cannot go there: give --csv OTHER_FOLDER/compare.csv "
            "(the others then go beside it)"))
    for run in runs:  # malformed JSON files: named, and the run left out of what they held
        for problem in run.problems:
            print(f"skipped: {problem}")
    groups, keys = compare.group_runs(runs)
    text = compare.markdown(groups, runs)
    print(f"{len(runs)} run(s) under {root}; settings that differ: "
          f"{', '.join(keys) or 'none'}\n\n{text}\n")
    csv_path = Path(args.csv) if args.csv else out / "compare.csv"
    csv_path.parent.mkdir(parents=True, exist_ok=True)
    compare.write_csv(csv_path, compare.rows(groups))
    compare.write_csv(csv_path.with_name(csv_path.stem + "_runs.csv"),
                      compare.run_records(runs, keys))
    (out / "compare.md").write_text(text + "\n")
    written = [str(csv_path), str(csv_path.with_name(csv_path.stem + "_runs.csv")),
               str(out / "compare.md")]
    if not args.no_picture and any(g.best is not None and g.best.config for g in groups):
        import tensorflow as tf
        from PIL import Image

        from seg.train import open_data

        picture, notes = compare.prediction_picture(
            groups, lambda data: open_data(data)[0], args.images)
        for note in notes:
            print(f"picture: {note}")
        Image.fromarray(picture).save(out / "compare.png")
        # The run "compare", made here only, with a picture to hold. Its tags' group,
        # "runs_compared", sorts after the runs' own "predictions" in TensorBoard (groups are
        # tag prefixes in name order: "compare/..." sat above them, empty for the other runs).
        writer = tf.summary.create_file_writer(str(out / "compare"))
        with writer.as_default():
            tf.summary.image("runs_compared/predictions", picture[None], step=0)
            tf.summary.text("runs_compared/table", text, step=0)
        writer.close()
        written.append(str(out / "compare.png"))
    print("written: " + ", ".join(written))
    return text


if __name__ == "__main__":
    seg_hydra.refusing(main)
