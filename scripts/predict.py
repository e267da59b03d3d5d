"""Predict masks for new images: python scripts/predict.py CHECKPOINT INPUTS... --out DIR

CHECKPOINT is a run folder (its checkpoints/best.keras) or a .keras file; INPUTS are image files
or folders (searched recursively). For every image, DIR receives NAME_mask.png (a palette PNG:
its pixel values are the class indices, viewers show the class colours) and NAME_overlay.png
(the colours blended over the image). Images of the same size are predicted in batches; images
larger than --tile are predicted in overlapping tiles. A file that cannot be read is reported
by name and the others are still predicted (exit code 1 at the end).
"""

import argparse
import sys
from pathlib import Path

import seg_hydra

MAX_PENDING_VALUES = 64_000_000  # pixel values held while same-size batches fill up
IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".tif", ".tiff", ".bmp", ".gif", ".webp", ".npy"}


def _not_a_file(path: Path) -> str:
    """What a path that is neither a file nor a folder is (a fifo, a socket, a device)."""
    from seg.data.folder import DataError, check_file

    try:
        check_file(str(path))
    except DataError as e:
        return str(e)
    return f"{path}: not a regular file"


def parse(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("checkpoint", help="a run folder or a .keras file")
    p.add_argument("inputs", nargs="+", help="image files or folders")
    p.add_argument("--out", required=True, type=seg_hydra.folder_to_write, help="output folder")
    p.add_argument("--batch-size", type=seg_hydra.whole(1), default=8)
    p.add_argument("--tile", type=seg_hydra.whole(0), default=512,
                   help="images with a side longer than this are predicted in overlapping tiles "
                        "(0: whole images)")
    p.add_argument("--overlap", type=seg_hydra.number(0, 0.9), default=0.25,
                   help="tile overlap, 0..0.9 (default 0.25)")
    p.add_argument("--alpha", type=seg_hydra.number(0, 1), default=0.5,
                   help="overlay opacity of the mask colours, 0..1")
    return p.parse_args(argv)


def collect(inputs: list[str], unreadable: dict | None = None) -> list[tuple[Path, Path]]:
    """(image file, output stem relative to --out) for every input, folders searched.

    Files that cannot be predicted (a dangling link, an unsupported extension) go into
    unreadable, {file: why}, and are named at the end.
    """
    found, unreadable = [], {} if unreadable is None else unreadable
    supported = ", ".join(sorted(IMAGE_SUFFIXES))
    for given in map(Path, inputs):
        if given.is_dir():
            for f in sorted(given.rglob("*")):
                if f.is_symlink() and not f.exists():
                    unreadable[str(f)] = f"{f}: a dangling symbolic link (its target is gone)"
                elif f.is_file() and f.suffix.lower() in IMAGE_SUFFIXES:
                    found.append((f, f.relative_to(given).with_suffix("")))
                elif f.is_file():
                    unreadable[str(f)] = (f"{f}: unsupported extension {f.suffix or '(none)'!r} "
                                          f"(supported: {supported})")
                elif not f.is_dir() and f.suffix.lower() in IMAGE_SUFFIXES:
                    unreadable[str(f)] = _not_a_file(f)  # a fifo, a socket, a device
        elif given.is_file():
            if given.suffix.lower() not in IMAGE_SUFFIXES:
                raise ValueError(f"{given}: unsupported extension {given.suffix or '(none)'!r} "
                                 f"(supported: {supported})")
            found.append((given, Path(given.stem)))
        elif given.is_symlink() and not given.exists():
            raise FileNotFoundError(f"{given}: a dangling symbolic link (its target is gone)")
        elif given.exists():
            raise ValueError(_not_a_file(given))
        else:
            raise FileNotFoundError(f"{given}: no such file or folder")
    stems = {}
    for f, stem in found:
        if stem in stems:
            raise ValueError(f"{f} and {stems[stem]} would both be written as {stem}_mask.png; "
                             "predict them in separate runs or rename one")
        stems[stem] = f
    return found


def check_out(out: Path, inputs: list[str], files: list[tuple[Path, Path]]):
    """--out must not overwrite an input, nor lie inside an input folder (a second run would
    predict the first one's outputs)."""
    target = out.resolve()
    for given in map(Path, inputs):
        if given.is_dir() and (target == given.resolve() or given.resolve() in target.parents):
            raise ValueError(f"--out {out} is inside the input folder {given}: the masks would "
                             "land among the images (and be predicted by the next run); give "
                             "another folder")
    sources = {f.resolve() for f, _ in files}
    for f, stem in files:
        for suffix in ("_mask.png", "_overlay.png"):
            written = (target / f"{stem}{suffix}").resolve()
            if written in sources:
                raise ValueError(f"--out {out}: {written} is an input and would be overwritten "
                                 f"by the prediction for {f}; give another folder")


def main(argv=None) -> int:
    args = parse(argv)
    import numpy as np
    from PIL import Image

    from seg import inference, viz
    from seg.console import progress
    from seg.data.folder import DataError, read_image

    failed: dict[str, str] = {}
    try:
        files = collect(args.inputs, failed)
        check_out(Path(args.out), args.inputs, files)
    except (FileNotFoundError, ValueError) as e:
        seg_hydra.fail(e)
    trained = inference.load(args.checkpoint)
    if not files:
        seg_hydra.fail(FileNotFoundError(f"no image files ({', '.join(sorted(IMAGE_SUFFIXES))}) "
                                      f"in {' '.join(args.inputs)}" + "".join(
                                          f"\n  {why}" for why in list(failed.values())[:10])))
    train_size = ((trained.config or {}).get("data") or {}).get("image_size") or 0
    tile = max(args.tile, train_size) if args.tile else 0
    fixed = trained.model.input_shape[1]  # a fixed-size encoder (MiT): tiles of its size
    tile = fixed if fixed else tile
    out = Path(args.out)
    palette = np.zeros((256, 3), np.uint8)
    palette[: len(viz.PALETTE)] = viz.PALETTE
    done = 0
    for why in failed.values():
        print(f"predict: left out {why}", flush=True)
    # Keras' bar on a terminal; in a pipe or a file, where its colour codes and carriage
    # returns would be garbage, a plain line every 20 s
    bar = progress(len(files), "image", "predict")
    print(f"predict: {len(files)} image(s) with {trained.checkpoint} -> {out}", flush=True)

    def write(batch):
        images = inference.model_input(np.stack([image for _, _, image in batch]))
        probs = inference.predict_probs(trained.model, images, from_logits=trained.from_logits,
                                        tile=tile, overlap=args.overlap,
                                        batch_size=args.batch_size)
        for (_f, stem, image), p in zip(batch, probs, strict=False):
            labels = p.argmax(-1).astype(np.uint8)
            target = out / stem
            target.parent.mkdir(parents=True, exist_ok=True)
            mask = Image.fromarray(labels, mode="P")
            mask.putpalette(palette.flatten().tolist())
            mask.save(f"{target}_mask.png")
            rgb = viz.to_rgb(inference.model_input(image)).astype(np.float32)
            overlay = (1 - args.alpha) * rgb + args.alpha * viz.colourise(labels, 256)
            Image.fromarray(overlay.round().astype(np.uint8)).save(f"{target}_overlay.png")

    pending: dict[tuple, list] = {}  # same-size images wait for a full batch
    for f, stem in files:
        try:
            image = read_image(str(f), trained.channels, raw=trained.raw)
        except DataError as e:
            failed[str(f)] = str(e)
            print(f"\npredict: skipped {e}", flush=True)
            bar.add(1)
            continue
        if tile and max(image.shape[:2]) > tile:  # tiled on its own, at once
            write([(f, stem, image)])
            done += 1
            bar.add(1)
            continue
        group = pending.setdefault(image.shape, [])
        group.append((f, stem, image))
        waiting = sum(x.size for g in pending.values() for _, _, x in g)
        if len(group) == args.batch_size or waiting > MAX_PENDING_VALUES:
            for shape in [image.shape] if len(group) == args.batch_size else list(pending):
                batch = pending.pop(shape)
                write(batch)
                done += len(batch)
                bar.add(len(batch))
    for group in pending.values():
        write(group)
        done += len(group)
        bar.add(len(group))
    print(f"predict: {done} mask(s) and overlay(s) written to {out}")
    if failed:
        print(f"predict: {len(failed)} file(s) could not be read:\n  "
              + "\n  ".join(failed.values()), file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(seg_hydra.refusing(main))
