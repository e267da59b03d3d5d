"""Evaluate a trained model on a split: python scripts/evaluate.py RUN_DIR_OR_CHECKPOINT [key=value]

Scores whole images (tiled sliding-window inference for images larger than --tile), and writes
evaluation.json (mean IoU, per-class IoU, pixel accuracy, Dice, confusion matrix, every image's
mean IoU), confusion_matrix.png and panels of the worst images into
RUN_DIR/evaluation/SPLIT/ (or --out), and the pictures to the run's TensorBoard.
key=value overrides change the run's saved config, e.g. data.root=/new/place/of/the/data.
"""

import argparse
import json
import sys
from pathlib import Path

import seg_hydra


def parse(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("run", help="a run folder (uses checkpoints/best.keras) or a .keras file")
    p.add_argument("overrides", nargs="*", help="key=value changes to the run's config")
    p.add_argument("--split", default="val", choices=["val", "train"])
    p.add_argument("--tile", type=seg_hydra.whole(0), default=512,
                   help="images with a side longer than this are predicted in overlapping "
                        "tiles of this size (0: always whole images; default 512)")
    p.add_argument("--overlap", type=seg_hydra.number(0, 0.9), default=0.25,
                   help="tile overlap (0..0.9)")
    p.add_argument("--flip", action="store_true", help="also predict mirrored images, average "
                   "(the same as --tta flip)")
    p.add_argument("--tta", default="none", choices=["none", "flip", "d4"],
                   help="test-time augmentation: average the predictions of the image and its "
                        "mirror (flip) or of its 8 rotations and mirrors (d4)")
    p.add_argument("--worst", type=seg_hydra.whole(0), default=4,
                   help="panels of this many worst images")
    p.add_argument("--out", type=seg_hydra.folder_to_write,
                   help="output folder (default RUN/evaluation/SPLIT)")
    p.add_argument("--no-progress", action="store_true")
    return p.parse_args(argv)


def _unwritable(folder: Path) -> str | None:
    """Why folder (or the nearest folder above it that exists) cannot be written, or None."""
    import os

    for place in [folder, *folder.absolute().parents]:
        if place.exists():
            if not place.is_dir():
                return f"{place} is a file"
            if os.access(place, os.W_OK | os.X_OK):
                return None
            read_only = bool(os.statvfs(place).f_flag & os.ST_RDONLY)
            return f"{place} is " + ("on a read-only file system" if read_only else
                                     "not writable by this user")
    return None


def main(argv=None) -> dict:
    args = parse(argv)
    import numpy as np
    from PIL import Image

    from seg import inference, viz
    from seg.config import ConfigError
    from seg.train import open_data

    trained = inference.load(args.run)
    if trained.config is None:
        raise inference.LoadError(f"{trained.checkpoint}: no config.json of its run beside it, "
                                  "so the data set is unknown (evaluate a run folder)")
    fixed = [o for o in args.overrides if not o.startswith("data.")]
    if fixed:
        raise ConfigError(
            f"{' '.join(fixed)}: evaluate.py takes data.* overrides only (where the data is, "
            "e.g. data.root=DIR); the model was trained and saved with its own settings, and a "
            "config group cannot be switched here (give its keys, e.g. data.root=...)")
    lacking = [f"data.{k}" for k in ("num_classes", "ignore_index")
               if k not in trained.config["data"]]
    if lacking:
        raise inference.LoadError(f"{trained.run_dir / 'config.json'}: lacks {', '.join(lacking)}"
                                  ", which every run's config.json holds; restore it from the run")
    cfg = seg_hydra.apply_overrides(trained.config, args.overrides)
    cfg.pop("class_names", None)
    data = cfg["data"]
    predicted = trained.model.output_shape[-1]
    if data["num_classes"] != (2 if predicted == 1 else predicted):
        raise inference.LoadError(
            f"data.num_classes={data['num_classes']}, but {trained.checkpoint} predicts "
            f"{2 if predicted == 1 else predicted} classes: evaluate it with the run's own "
            "data.num_classes (leave it out of the overrides)")
    out = Path(args.out) if args.out else (
        (trained.run_dir or trained.checkpoint.parent) / "evaluation" / args.split)
    unwritable = _unwritable(out)
    if unwritable:  # refused before the work, naming the folder
        raise ConfigError(f"{out}: the evaluation cannot be written there ({unwritable}); "
                          "give a writable folder with --out DIR")
    source, _ = open_data(data)
    dataset, names = source.split(args.split)
    tile = max(args.tile, data.get("image_size") or 0) if args.tile else 0
    print(f"evaluate: {trained.checkpoint} on {args.split} ({source.description}); "
          + (f"tiles of {tile} px for larger images" if tile else "whole images"), flush=True)
    tta = "flip" if args.flip and args.tta == "none" else args.tta
    result = inference.evaluate(
        trained, dataset, names, num_classes=data["num_classes"],
        ignore_index=data["ignore_index"], tile=tile, overlap=args.overlap, tta=tta,
        worst=args.worst, skipped=source.skipped,
        progress=not args.no_progress and sys.stdout.isatty())
    out.mkdir(parents=True, exist_ok=True)
    class_names = source.class_names
    pictures = {"confusion_matrix": viz.confusion_picture(
        np.array(result["confusion_matrix"]), class_names,
        title=f"{args.split}: mIoU {result['mean_iou']:.4f}")}
    for n, entry in enumerate(result["worst"], 1):
        pictures[f"worst_{n:02d}"] = inference.worst_panel(entry, class_names, data["ignore_index"])
    for name, picture in pictures.items():
        Image.fromarray(picture).save(out / f"{name}.png")
    if pictures and trained.run_dir is not None and not _unwritable(trained.run_dir / "tb"):
        # beside the training curves in TensorBoard (not for a run on a read-only place), as
        # the run "evaluation", made here only, with pictures to hold. The tags' group,
        # "val_evaluation" (or "train_evaluation"), sorts after the panels' "predictions"
        # (TensorBoard orders groups, the tags' prefixes, by name).
        import tensorflow as tf

        writer = tf.summary.create_file_writer(str(trained.run_dir / "tb" / "evaluation"))
        with writer.as_default():
            for name, picture in pictures.items():
                tf.summary.image(f"{args.split}_evaluation/{name}", picture[None], step=0)
        writer.close()
    report = {
        "checkpoint": str(trained.checkpoint), "split": args.split, "tile": tile,
        "overlap": args.overlap, "flip": args.flip, "tta": tta, "overrides": args.overrides,
        "images": result["images"], "mean_iou": result["mean_iou"],
        "pixel_accuracy": result["pixel_accuracy"], "dice": result["dice"],
        "iou_per_class": dict(zip(class_names, result["iou_per_class"], strict=False)),
        "confusion_matrix": result["confusion_matrix"], "class_names": class_names,
        "worst": [{"file": e["file"], "mean_iou": e["mean_iou"],
                   "panel": str(out / f"worst_{n:02d}.png")}
                  for n, e in enumerate(result["worst"], 1)],
        "per_image": result["per_image"],
        "skipped": dict(source.skipped),
    }
    (out / "evaluation.json").write_text(json.dumps(report, indent=2))
    width = max(len(n) for n in class_names)
    print(f"\n{args.split}: {result['images']} images, mean IoU {result['mean_iou']:.4f}, "
          f"pixel accuracy {result['pixel_accuracy']:.4f}, Dice {result['dice']:.4f}")
    for name, iou in zip(class_names, result["iou_per_class"], strict=False):
        print(f"  IoU {name:<{width}}  {iou:.4f}")
    for e in report["worst"]:
        print(f"  worst: {e['file']} (mIoU {e['mean_iou']:.3f})")
    print(f"written: {out}/evaluation.json, confusion_matrix.png, worst_*.png")
    return report


if __name__ == "__main__":
    seg_hydra.refusing(main)
