"""A strongly imbalanced, multi-class folder dataset: street-scene-like toys for tests and
benchmarks of class weighting and rare-class crops.

Classes: 0 background (sky above, vegetation near the horizon), 1 road (a trapezoid at the
bottom), 2 building (large rectangles on the horizon), and three rare ones, each well under 1%
of the pixels over the dataset: 3 pole (vertical lines 1-3 px wide), 4 sign (4-7 px squares and
diamonds, often on a pole's top) and 5 cyclist (5-9 px figures on the road). Every class has a
colour and texture of its own, blurred by per-pixel noise, per-object colour jitter and a
per-image brightness change, so the task is learnable but not trivial. The rare classes are in
most images (1-3 of each), so they can be learned.

    python -m seg.data.imbalanced ROOT [--train N] [--val N] [--seed S]

writes ROOT/images/NAME.png (RGB) and ROOT/masks/NAME.png (class indices, mode "L"); the stems
are train_NNNN then val_NNNN, so `data=folder data.split=contiguous` with
data.val_fraction=val / (train + val) splits them as written. Deterministic in the seed
(numpy and Pillow only).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
from PIL import Image

CLASS_NAMES = ["background", "road", "building", "pole", "sign", "cyclist"]
NUM_CLASSES = len(CLASS_NAMES)
RARE = (3, 4, 5)
MIN_SIZE = 32  # height and width: smaller scenes leave no room for the rare objects

BACKGROUND, ROAD, BUILDING, POLE, SIGN, CYCLIST = range(NUM_CLASSES)
# (mean RGB in [0, 1]) of each class; every object's colour is jittered around it
COLOURS = {
    ROAD: (0.42, 0.42, 0.45),
    BUILDING: (0.62, 0.45, 0.35),
    POLE: (0.18, 0.20, 0.30),
    SIGN: (0.90, 0.78, 0.15),
    CYCLIST: (0.80, 0.20, 0.60),
}


def _grid(h: int, w: int):
    return np.mgrid[0:h, 0:w]


class _Scene:
    """A scene being painted: the image, the mask, pixel coordinates and the horizon."""

    def __init__(self, rng: np.random.Generator, h: int, w: int):
        self.rng, self.h, self.w = rng, h, w
        self.rows, self.cols = _grid(h, w)
        self.mask = np.zeros((h, w), np.uint8)
        self.horizon = int(round(h * rng.uniform(0.45, 0.6)))
        self.image = None

    def paint(self, region, cls, spread=0.07):
        colour = np.array(COLOURS[cls]) + self.rng.normal(0, spread, 3)
        self.image = np.where(region[..., None], colour, self.image)
        self.mask[region] = cls

    def count(self) -> int:  # 1-3 objects of a rare class in most scenes, none in some
        rng = self.rng
        return 0 if rng.random() < 0.1 else int(rng.choice([1, 2, 3], p=[0.45, 0.4, 0.15]))


def _sky_and_vegetation(s: _Scene):
    """Background: a sky gradient above, green noisy vegetation in a band above the horizon."""
    rng, rows, cols, h = s.rng, s.rows, s.cols, s.h
    sky_top = np.array([0.35, 0.55, 0.85]) + rng.normal(0, 0.04, 3)
    sky_low = np.array([0.70, 0.80, 0.92]) + rng.normal(0, 0.04, 3)
    t = (rows / max(h - 1, 1))[..., None]
    image = sky_top * (1 - t) + sky_low * t
    veg_top = s.horizon - int(round(h * rng.uniform(0.08, 0.2)))
    wave = np.sin(cols / rng.uniform(3.0, 8.0) + rng.uniform(0, 6.3)) * h * 0.03
    veg = rows >= veg_top + wave
    green = np.array([0.20, 0.45, 0.18]) + rng.normal(0, 0.03, 3)
    leaf = rng.normal(0, 0.09, (h, s.w, 1)) * np.array([0.6, 1.0, 0.5])
    s.image = np.where(veg[..., None], green + leaf, image)


def _buildings(s: _Scene):
    """Large rectangles standing on the horizon, a window texture on each."""
    rng, rows, cols, h, w = s.rng, s.rows, s.cols, s.h, s.w
    for _ in range(rng.integers(1, 4)):
        bw = int(rng.uniform(0.15, 0.35) * w)
        bh = int(rng.uniform(0.25, 0.5) * h)
        x0 = int(rng.integers(0, max(w - bw, 1)))
        y1 = s.horizon + int(rng.integers(0, max(h // 20, 1) + 1))
        y0 = max(y1 - bh, 0)
        inside = (rows >= y0) & (rows < y1) & (cols >= x0) & (cols < x0 + bw)
        colour = np.array(COLOURS[BUILDING]) + rng.normal(0, 0.06, 3)
        period = int(rng.integers(4, 7))
        windows = ((rows - y0) % period < period // 2) & ((cols - x0) % period < period // 2)
        texture = colour - 0.18 * windows[..., None]
        s.image = np.where(inside[..., None], texture, s.image)
        s.mask[inside] = BUILDING


def _road(s: _Scene):
    """A trapezoid from the horizon (narrow) to the bottom edge (wide); the ground beside it
    (below the horizon) is background, a darker dirt-green."""
    rng, rows, cols, h, w = s.rng, s.rows, s.cols, s.h, s.w
    centre = w * rng.uniform(0.35, 0.65)
    top_half, bottom_half = w * rng.uniform(0.05, 0.15), w * rng.uniform(0.45, 0.7)
    frac = np.clip((rows - s.horizon) / max(h - 1 - s.horizon, 1), 0, 1)
    half = top_half + (bottom_half - top_half) * frac
    road = (rows >= s.horizon) & (np.abs(cols - centre) <= half)
    colour = np.array(COLOURS[ROAD]) + rng.normal(0, 0.03, 3)
    grain = rng.normal(0, 0.05, (h, w, 1))
    s.image = np.where(road[..., None], colour + grain, s.image)
    s.mask[road] = ROAD
    ground = (rows >= s.horizon) & ~road & (s.mask != BUILDING)
    dirt = np.array([0.35, 0.38, 0.22]) + rng.normal(0, 0.03, 3)
    s.image = np.where(ground[..., None], dirt + rng.normal(0, 0.06, (h, w, 1)), s.image)
    return road


def _poles_and_signs(s: _Scene):
    """Poles: thin vertical lines from the ground up. Signs: small squares or diamonds, half
    of them on a pole's top."""
    rng, rows, cols, h, w = s.rng, s.rows, s.cols, s.h, s.w
    tops = []
    for _ in range(s.count()):
        pw = int(rng.choice([1, 2, 3], p=[0.5, 0.38, 0.12]))
        length = max(int(rng.uniform(0.1, 0.22) * h), 4)
        x = int(rng.integers(1, w - pw - 1))
        foot = int(rng.integers(s.horizon, min(s.horizon + h // 5, h - 1) + 1))
        top = max(foot - length, 0)
        s.paint((rows >= top) & (rows < foot) & (cols >= x) & (cols < x + pw), POLE)
        tops.append((top, x + pw // 2))
    for _ in range(s.count()):
        size = int(rng.integers(4, 8))
        if tops and rng.random() < 0.5:
            top, cx = tops[int(rng.integers(len(tops)))]
            cy = top - size // 2
        else:
            cy = int(rng.integers(size, max(s.horizon, size + 1)))
            cx = int(rng.integers(size, w - size))
        if rng.random() < 0.5:  # square
            half = (size - 1) / 2
            region = (np.abs(rows - cy) <= half) & (np.abs(cols - cx) <= half)
        else:  # diamond
            region = np.abs(rows - cy) + np.abs(cols - cx) <= size / 2
        s.paint(region, SIGN)


def _cyclists(s: _Scene, road):
    """Wheels (a flat ellipse) under a rider (a narrow upright bar), on the road."""
    rng, rows, cols = s.rng, s.rows, s.cols
    road_rows, road_cols = np.nonzero(road)
    for _ in range(s.count()):
        cw, ch = int(rng.integers(5, 10)), int(rng.integers(5, 10))
        if road_rows.size:
            at = int(rng.integers(road_rows.size))
            foot, cx = int(road_rows[at]), int(road_cols[at])
        else:
            foot, cx = s.h - 1, s.w // 2
        wheels = ((rows - (foot - ch / 4)) / max(ch / 4, 1)) ** 2 + \
            ((cols - cx) / (cw / 2)) ** 2 <= 1
        rider = (rows > foot - ch) & (rows <= foot - ch / 2) & \
            (np.abs(cols - cx) <= max(cw // 6, 1))
        s.paint(wheels | rider, CYCLIST)


def make_scene(rng: np.random.Generator, height: int, width: int):
    """One scene: (float RGB image [H, W, 3] in [0, 1], uint8 mask [H, W])."""
    s = _Scene(rng, height, width)
    _sky_and_vegetation(s)
    _buildings(s)
    road = _road(s)
    _poles_and_signs(s)
    _cyclists(s, road)
    # noise everywhere and a brightness change of the whole image
    image = s.image + rng.normal(0, 0.05, s.image.shape)
    image = image * rng.uniform(0.75, 1.2) + rng.uniform(-0.05, 0.05)
    return np.clip(image, 0.0, 1.0), s.mask


def check_root(root: Path):
    """Refuse a folder that holds anything but an earlier output of this generator (images/
    and masks/ of PNG files): FileExistsError naming it."""
    if root.exists() and not root.is_dir():
        raise FileExistsError(f"{root} is a file, not a folder")
    if not root.is_dir():
        return
    entries = {p.name: p for p in root.iterdir()}
    ours = set(entries) <= {"images", "masks"} and all(
        p.is_dir() and all(f.is_file() and f.suffix == ".png" for f in p.iterdir())
        for p in entries.values())
    if not ours:
        raise FileExistsError(
            f"{root} is not empty and is not an earlier output of this generator (which holds "
            "only images/ and masks/ of PNG files): choose a new or empty folder")


def write_dataset(root, *, num_train: int = 48, num_val: int = 12, height: int = 96,
                  width: int = 128, seed: int = 0) -> dict:
    """Write the scenes to root/images and root/masks (an earlier output there is replaced).

    Returns:
        {"num_classes": 6, "class_names": CLASS_NAMES, "shares": [pixel share per class over
        every written mask]}.

    Raises:
        ValueError: a count below 0 (train below 1) or a size below MIN_SIZE.
        FileExistsError: root holds anything else than an earlier output of this generator.
    """
    if num_train < 1 or num_val < 0:
        raise ValueError(f"num_train={num_train}, num_val={num_val}: use num_train >= 1 and "
                         "num_val >= 0")
    if height < MIN_SIZE or width < MIN_SIZE:
        raise ValueError(f"{height}x{width}: use a height and width of at least {MIN_SIZE}")
    root = Path(root)
    check_root(root)
    images, masks = root / "images", root / "masks"
    for folder in (images, masks):
        folder.mkdir(parents=True, exist_ok=True)
        for old in folder.glob("*.png"):
            old.unlink()
    counts = np.zeros(NUM_CLASSES, np.int64)
    for split, n in ((0, num_train), (1, num_val)):
        for i in range(n):
            rng = np.random.default_rng([seed, split, i])
            image, mask = make_scene(rng, height, width)
            name = f"{('train', 'val')[split]}_{i:04d}.png"
            Image.fromarray(np.round(image * 255).astype(np.uint8)).save(
                images / name, compress_level=1)
            Image.fromarray(mask).save(masks / name, compress_level=1)  # uint8 [H, W]: "L"
            counts += np.bincount(mask.ravel(), minlength=NUM_CLASSES)
    shares = counts / counts.sum()
    return {"num_classes": NUM_CLASSES, "class_names": list(CLASS_NAMES),
            "shares": [float(s) for s in shares]}


def _count(low: int):
    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
        if value < low:
            raise argparse.ArgumentTypeError(f"{value}: use a whole number >= {low}")
        return value
    return parse


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m seg.data.imbalanced",
        description="Write a strongly imbalanced street-scene-like folder dataset "
                    f"({', '.join(CLASS_NAMES)}): ROOT/images and ROOT/masks.")
    parser.add_argument("root", help="the folder to write (new, empty, or an earlier output)")
    parser.add_argument("--train", type=_count(1), default=48, help="training scenes (48)")
    parser.add_argument("--val", type=_count(0), default=12, help="validation scenes (12)")
    parser.add_argument("--seed", type=_count(0), default=0, help="the seed (0)")
    parser.add_argument("--height", type=_count(MIN_SIZE), default=96, help="pixels (96)")
    parser.add_argument("--width", type=_count(MIN_SIZE), default=128, help="pixels (128)")
    args = parser.parse_args(argv)
    try:
        info = write_dataset(args.root, num_train=args.train, num_val=args.val,
                             height=args.height, width=args.width, seed=args.seed)
    except (FileExistsError, ValueError, OSError) as e:
        parser.exit(2, f"{parser.prog}: error: {e}\n")
    total = args.train + args.val
    print(f"wrote {total} scenes ({args.train} train_*, {args.val} val_*) of "
          f"{args.height}x{args.width} to {args.root}; pixel share per class:")
    for k, (name, share) in enumerate(zip(CLASS_NAMES, info["shares"], strict=False)):
        print(f"  {k} {name:<11} {100 * share:7.3f}%" + ("  (rare)" if k in RARE else ""))
    off = [CLASS_NAMES[k] for k in RARE if not 0 < info["shares"][k] < 0.01]
    if off:
        print(f"note: {', '.join(off)} not between 0 and 1% of the pixels (small or few "
              "scenes)", file=sys.stderr)
    if args.val:
        print(f"train on it: python scripts/train.py data=folder data.root={args.root} "
              f"data.num_classes={NUM_CLASSES} data.split=contiguous "
              f"data.val_fraction={args.val / total:g} "
              f"'data.class_names=[{','.join(CLASS_NAMES)}]'")
    return 0


if __name__ == "__main__":
    sys.exit(main())
