"""Street scenes at photograph size, with eleven classes and a void label: a stand-in for the
street-photograph sets (CamVid's layout: 360x480, 11 classes, unlabelled pixels) that plans are
calibrated on. Nothing is downloaded: numpy, SciPy and Pillow paint every scene.

Classes, with their share of the labelled pixels over a few hundred scenes (33% down to about
0.3%, as in CamVid): 0 sky, 1 building, 2 pole, 3 road, 4 pavement, 5 tree, 6 sign, 7 fence,
8 car, 9 pedestrian, 10 bicyclist; 11 is void (unlabelled: data.ignore_index=11). Objects
shrink with their distance from the camera (perspective towards the horizon); look-alike pairs
share colours (road and pavement, building and fence, pedestrian and bicyclist) so that texture
and context decide; every object's colour is jittered, the lighting of each scene changes, and
sensor noise and a slight blur cover it all.

    python -m seg.data.scenes ROOT [--train 367] [--val 101] [--seed S]

writes ROOT/images/NAME.png (RGB) and ROOT/masks/NAME.png (class indices, 11 = void); the stems
are train_NNNN then val_NNNN, so `data.split=contiguous data.val_fraction=val/(train+val)`
splits them as written. Deterministic in the seed.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
from PIL import Image
from scipy import ndimage

from seg.data.imbalanced import check_root

CLASS_NAMES = ["sky", "building", "pole", "road", "pavement", "tree", "sign", "fence", "car",
               "pedestrian", "bicyclist"]
NUM_CLASSES = len(CLASS_NAMES)
VOID = NUM_CLASSES
(SKY, BUILDING, POLE, ROAD, PAVEMENT, TREE, SIGN, FENCE, CAR, PEDESTRIAN,
 BICYCLIST) = range(NUM_CLASSES)
COLOURS = {  # mean RGB in [0, 1]; look-alike pairs on purpose
    BUILDING: (0.55, 0.47, 0.40), POLE: (0.30, 0.30, 0.32), ROAD: (0.45, 0.44, 0.46),
    PAVEMENT: (0.55, 0.53, 0.52), TREE: (0.25, 0.42, 0.20), SIGN: (0.85, 0.75, 0.20),
    FENCE: (0.50, 0.42, 0.33), CAR: (0.55, 0.15, 0.15), PEDESTRIAN: (0.35, 0.25, 0.45),
    BICYCLIST: (0.40, 0.28, 0.50)}


class _Scene:
    def __init__(self, rng: np.random.Generator, h: int, w: int):
        self.rng, self.h, self.w = rng, h, w
        self.rows, self.cols = np.mgrid[0:h, 0:w]
        self.horizon = int(h * rng.uniform(0.38, 0.5))
        self.mask = np.full((h, w), VOID, np.uint8)
        self.image = np.zeros((h, w, 3))

    def scale(self, y: float) -> float:
        """An object's size factor at image row y: 0 at the horizon, 1 at the bottom edge."""
        return float(np.clip((y - self.horizon) / max(self.h - self.horizon, 1), 0.05, 1.0))

    def paint(self, region, cls, texture=0.04, colour=None):
        base = np.array(colour if colour is not None else COLOURS[cls])
        base = base + self.rng.normal(0, 0.1, 3)
        grain = self.rng.normal(0, texture, (self.h, self.w, 1))
        self.image = np.where(region[..., None], base + grain, self.image)
        self.mask[region] = cls


def _ground(s: _Scene):
    rng, rows, cols, h, w = s.rng, s.rows, s.cols, s.h, s.w
    t = (rows / max(s.horizon, 1))[..., None]
    sky = rows < s.horizon
    top, low = np.array([0.35, 0.55, 0.85]), np.array([0.75, 0.82, 0.90])
    s.image = np.where(sky[..., None], top * (1 - t) + low * t + rng.normal(0, 0.03, 3),
                       s.image)
    s.mask[sky] = SKY
    centre = w * rng.uniform(0.35, 0.65)
    frac = np.clip((rows - s.horizon) / max(h - s.horizon, 1), 0, 1)
    half = w * (rng.uniform(0.02, 0.06) + rng.uniform(0.35, 0.55) * frac)
    road = (rows >= s.horizon) & (np.abs(cols - centre) <= half)
    s.paint(road, ROAD, texture=0.05)
    lane = road & (np.abs(cols - centre) <= 1 + 3 * frac) & ((rows // 12) % 2 == 0)
    s.image[lane] = 0.85  # lane markings are road
    walk = (rows >= s.horizon) & ~road & (np.abs(cols - centre) <= half * 1.9)
    s.paint(walk, PAVEMENT, texture=0.03)
    tiles = walk & (((rows // 9) % 2) ^ ((cols // 9) % 2)).astype(bool)
    s.image[tiles] -= 0.06
    fronts = (rows >= s.horizon) & ~road & ~walk  # shop fronts beside the pavement
    s.paint(fronts, BUILDING, colour=np.array(COLOURS[BUILDING]) * 0.8)
    return road, walk


def _buildings_and_trees(s: _Scene):
    rng, rows, cols, h, w = s.rng, s.rows, s.cols, s.h, s.w
    x = int(rng.integers(-w // 10, w // 10))
    while x < w:
        bw = int(rng.uniform(0.15, 0.4) * w)
        top = int(rng.uniform(0.1, 0.35) * h)
        foot = s.horizon + int(rng.integers(0, h // 12))
        inside = (rows >= top) & (rows < foot) & (cols >= x) & (cols < x + bw)
        colour = np.array(COLOURS[BUILDING]) + rng.normal(0, 0.08, 3)
        s.paint(inside, BUILDING, colour=colour)
        period = int(rng.integers(10, 22))
        windows = inside & ((rows - top) % period < period // 2) & \
            ((cols - x) % period < period // 2)
        s.image[windows] *= 0.6
        x += bw + int(rng.integers(0, w // 8))
    for _ in range(int(rng.integers(1, 5))):  # crowns: unions of discs near the horizon
        cx, cy = rng.uniform(0, w), s.horizon - rng.uniform(0.05, 0.25) * h
        r = rng.uniform(0.05, 0.13) * h
        crown = np.zeros((h, w), bool)
        for _ in range(5):
            dx, dy = rng.normal(0, r / 2, 2)
            crown |= (rows - cy - dy) ** 2 + (cols - cx - dx) ** 2 <= (r * 0.7) ** 2
        trunk = (rows >= cy) & (rows < s.horizon + 0.03 * h) & (np.abs(cols - cx) <= r / 8)
        s.paint(crown | trunk, TREE, texture=0.09)


def _fence(s: _Scene, walk):
    rng, rows, cols = s.rng, s.rows, s.cols
    if rng.random() < 0.4:
        return
    height = int(s.h * rng.uniform(0.06, 0.12))
    x0, x1 = sorted(rng.uniform(0, s.w, 2))
    band = (rows < s.horizon + 4) & (rows >= s.horizon + 4 - height) & (cols >= x0) & \
        (cols < x1)
    slats = band & ((cols % 6) < 3)
    s.paint(slats, FENCE, texture=0.03)


def _cars(s: _Scene, road):
    rng, rows, cols = s.rng, s.rows, s.cols
    rr, cc = np.nonzero(road)
    for _ in range(int(rng.choice([0, 1, 2, 3, 4], p=[0.15, 0.3, 0.3, 0.15, 0.1]))):
        k = int(rng.integers(rr.size))
        foot, cx = rr[k], cc[k]
        f = s.scale(foot)
        cw, ch = 160 * f * rng.uniform(0.8, 1.2), 80 * f * rng.uniform(0.8, 1.2)
        body = (rows <= foot) & (rows > foot - ch) & (np.abs(cols - cx) <= cw / 2)
        cabin = (rows <= foot - ch * 0.9) & (rows > foot - ch * 1.4) & \
            (np.abs(cols - cx) <= cw / 3)
        colour = rng.uniform(0.1, 0.8, 3)
        s.paint(body | cabin, CAR, colour=colour, texture=0.03)
        s.image[cabin & (rows > foot - ch * 1.3)] *= 0.5  # windows
        wheels = (np.abs(rows - foot) <= max(ch / 6, 1)) & \
            (np.abs(np.abs(cols - cx) - cw * 0.3) <= max(cw / 10, 1))
        s.image[wheels] = 0.08


def _people(s: _Scene, road, walk):
    rng, rows, cols = s.rng, s.rows, s.cols
    for where, cls, counts in ((walk, PEDESTRIAN, [0, 1, 2, 3]), (road, BICYCLIST, [0, 1, 2])):
        rr, cc = np.nonzero(where)
        if not rr.size:
            continue
        for _ in range(int(rng.choice(counts))):
            k = int(rng.integers(rr.size))
            foot, cx = rr[k], cc[k]
            tall = 90 * s.scale(foot) * rng.uniform(0.8, 1.2)
            wide = tall / 5
            body = ((rows - (foot - tall / 2)) / max(tall / 2, 2)) ** 2 + \
                ((cols - cx) / max(wide / 2, 1)) ** 2 <= 1
            head = (rows - (foot - tall)) ** 2 + (cols - cx) ** 2 <= max(wide / 2.5, 1) ** 2
            region = body | head
            if cls == BICYCLIST:  # a bicycle under the rider
                wheels = ((rows - foot) / max(tall / 6, 1)) ** 2 + \
                    ((np.abs(cols - cx) - tall / 5) / max(tall / 6, 1)) ** 2 <= 1
                region = (region & (rows < foot - tall / 3)) | wheels
            s.paint(region, cls, texture=0.06)


def _poles_and_signs(s: _Scene, walk):
    rng, rows, cols = s.rng, s.rows, s.cols
    rr, cc = np.nonzero(walk)
    if not rr.size:
        return
    for _ in range(int(rng.choice([1, 2, 3, 4]))):
        k = int(rng.integers(rr.size))
        foot, x = rr[k], cc[k]
        f = s.scale(foot)
        length, width = 0.6 * s.h * f + 20, max(int(round(6 * f)), 1) + 1
        top = int(max(foot - length, 0))
        s.paint((rows >= top) & (rows <= foot) & (cols >= x) & (cols < x + width), POLE,
                texture=0.02)
        if rng.random() < 0.7:
            size = max(30 * f, 4)
            sign = (np.abs(rows - top) <= size / 2) & (np.abs(cols - x - width / 2) <= size / 2)
            s.paint(sign, SIGN, texture=0.03)


def make_scene(rng: np.random.Generator, height: int = 360, width: int = 480):
    """One scene: (uint8 RGB image [H, W, 3], uint8 mask [H, W] with VOID where unlabelled)."""
    s = _Scene(rng, height, width)
    road, walk = _ground(s)
    _buildings_and_trees(s)
    _fence(s, walk)
    _cars(s, road)
    _people(s, road, walk)
    _poles_and_signs(s, walk)
    for _ in range(int(rng.integers(0, 4))):  # clutter nobody labelled: void
        cy, cx = rng.uniform(s.horizon, height), rng.uniform(0, width)
        r = rng.uniform(4, 18)
        blob = (s.rows - cy) ** 2 + (s.cols - cx) ** 2 <= r * r
        s.paint(blob, VOID, colour=rng.uniform(0, 1, 3))
    edges = ndimage.morphological_gradient(s.mask, size=2) > 0  # outlines left unlabelled
    s.mask[edges & (rng.random(s.mask.shape) < 0.2)] = VOID
    image = ndimage.gaussian_filter(s.image, sigma=(0.8, 0.8, 0))
    image = image * rng.uniform(0.6, 1.25) + rng.uniform(-0.08, 0.08, 3)  # lighting, cast
    image = image + rng.normal(0, 0.03, image.shape)
    return (np.clip(image, 0, 1) * 255).round().astype(np.uint8), s.mask


def write_dataset(root, *, num_train: int = 367, num_val: int = 101, height: int = 360,
                  width: int = 480, seed: int = 0) -> dict:
    """Write the scenes to root/images and root/masks (an earlier output there is replaced).

    Returns {"num_classes", "class_names", "ignore_index", "shares"} (labelled-pixel shares).
    Raises ValueError for counts below 1 (val below 0) or sizes under 64; FileExistsError when
    root holds anything but an earlier output of a seg generator.
    """
    if num_train < 1 or num_val < 0 or min(height, width) < 64:
        raise ValueError(f"num_train={num_train}, num_val={num_val}, {height}x{width}: use "
                         "num_train >= 1, num_val >= 0 and sizes of at least 64")
    root = Path(root)
    check_root(root)
    counts = np.zeros(NUM_CLASSES + 1, np.int64)
    for folder in ("images", "masks"):
        (root / folder).mkdir(parents=True, exist_ok=True)
        for old in (root / folder).glob("*.png"):
            old.unlink()
    for split, n in ((0, num_train), (1, num_val)):
        for i in range(n):
            image, mask = make_scene(np.random.default_rng([seed, 7, split, i]), height, width)
            name = f"{('train', 'val')[split]}_{i:04d}.png"
            Image.fromarray(image).save(root / "images" / name, compress_level=1)
            Image.fromarray(mask).save(root / "masks" / name, compress_level=1)
            counts += np.bincount(mask.ravel(), minlength=NUM_CLASSES + 1)
    labelled = counts[:NUM_CLASSES]
    return {"num_classes": NUM_CLASSES, "class_names": list(CLASS_NAMES), "ignore_index": VOID,
            "shares": [float(c) for c in labelled / labelled.sum()],
            "void_share": float(counts[VOID] / counts.sum())}


def main(argv=None) -> int:
    from seg.data.imbalanced import _count

    parser = argparse.ArgumentParser(
        prog="python -m seg.data.scenes",
        description="Write street scenes of 11 classes and a void label (CamVid's layout): "
                    "ROOT/images and ROOT/masks.")
    parser.add_argument("root", help="the folder to write (new, empty, or an earlier output)")
    parser.add_argument("--train", type=_count(1), default=367, help="training scenes (367)")
    parser.add_argument("--val", type=_count(0), default=101, help="validation scenes (101)")
    parser.add_argument("--seed", type=_count(0), default=0, help="the seed (0)")
    parser.add_argument("--height", type=_count(64), default=360, help="pixels (360)")
    parser.add_argument("--width", type=_count(64), default=480, help="pixels (480)")
    args = parser.parse_args(argv)
    try:
        info = write_dataset(args.root, num_train=args.train, num_val=args.val,
                             height=args.height, width=args.width, seed=args.seed)
    except (FileExistsError, ValueError, OSError) as e:
        parser.exit(2, f"{parser.prog}: error: {e}\n")
    total = args.train + args.val
    print(f"wrote {total} scenes ({args.train} train_*, {args.val} val_*) of "
          f"{args.height}x{args.width} to {args.root}; {100 * info['void_share']:.1f}% void; "
          "share of the labelled pixels per class:")
    for k, (name, share) in enumerate(zip(CLASS_NAMES, info["shares"], strict=True)):
        print(f"  {k:2d} {name:<11} {100 * share:7.3f}%")
    if args.val:
        print(f"train on it: python scripts/train.py data=folder data.root={args.root} "
              f"data.num_classes={NUM_CLASSES} data.ignore_index={VOID} "
              f"data.split=contiguous data.val_fraction={args.val / total:.4f} "
              f"'data.class_names=[{','.join(CLASS_NAMES)}]'")
    return 0


if __name__ == "__main__":
    sys.exit(main())
