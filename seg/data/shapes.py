"""The built-in dataset: procedurally generated scenes of coloured shapes.

Classes: 0 background, 1 ellipse, 2 rectangle, 3 triangle. Each shape class has its own hue band
(with jitter, random saturation and brightness), and shapes vary in size, position, rotation and
overlap (later shapes occlude earlier ones) on a textured, noisy, low-saturation background. A
constant prediction scores about 0.2 mIoU and a blurry one loses the many edges, while a small
U-Net learns it in minutes on a CPU.
"""

from __future__ import annotations

import colorsys

import numpy as np
from PIL import Image, ImageDraw
from scipy import ndimage

CLASS_NAMES = ("background", "ellipse", "rectangle", "triangle")
_HUES = {1: 0.0, 2: 0.33, 3: 0.62}  # red-ish ellipses, green-ish rectangles, blue-ish triangles


def _background(rng: np.random.Generator, size: int) -> np.ndarray:
    """A smooth, low-saturation colour field plus fine texture, float32 in [0, 1]."""
    coarse = ndimage.zoom(rng.random((4, 4, 3)), (size / 4, size / 4, 1), order=1)
    grey = coarse.mean(axis=-1, keepdims=True)
    field = 0.7 * grey + 0.3 * coarse  # low saturation: shapes own the saturated colours
    n = max(size // 8, 2)
    texture = ndimage.zoom(rng.normal(0.0, 0.08, (n, n, 1)), (size / n, size / n, 1), order=1)
    return (0.15 + 0.7 * field + texture)[:size, :size].astype(np.float32)


def _polygon(cls: int, cx: float, cy: float, r: float, angle: float, aspect: float) -> list:
    """Vertices of a rotated rectangle (cls 2) or triangle (cls 3) around (cx, cy)."""
    if cls == 2:
        base = [(-1, -aspect), (1, -aspect), (1, aspect), (-1, aspect)]
    else:
        # A triangle covers less of its circle than a rectangle: 1.3x keeps the classes balanced.
        base = [(1.3 * np.cos(t), 1.3 * np.sin(t))
                for t in np.pi / 2 + np.arange(3) * 2 * np.pi / 3]
    c, s = np.cos(angle), np.sin(angle)
    return [(cx + r * (x * c - y * s), cy + r * (x * s + y * c)) for x, y in base]


def make_scene(rng: np.random.Generator, size: int, shape_classes=(1, 2, 3)):
    """One scene: (image float32 [size, size, 3] in [0, 1], mask uint8 [size, size])."""
    image = _background(rng, size)
    canvas = Image.new("RGB", (size, size))
    mask = Image.new("L", (size, size), 0)
    paint, label = ImageDraw.Draw(canvas), ImageDraw.Draw(mask)
    cover = Image.new("L", (size, size), 0)  # which pixels a shape covers, for blending
    covered = ImageDraw.Draw(cover)
    for _ in range(rng.integers(2, 6)):
        cls = int(rng.choice(shape_classes))
        r = rng.uniform(0.09, 0.22) * size
        cx, cy = rng.uniform(0, size), rng.uniform(0, size)
        hue = (_HUES[cls] + rng.uniform(-0.07, 0.07)) % 1.0
        rgb = colorsys.hsv_to_rgb(hue, rng.uniform(0.55, 1.0), rng.uniform(0.5, 1.0))
        colour = tuple(int(255 * v) for v in rgb)
        if cls == 1:
            ry = r * rng.uniform(0.7, 1.3)
            box = [cx - r, cy - ry, cx + r, cy + ry]
            for draw, value in ((paint, colour), (label, cls), (covered, 255)):
                draw.ellipse(box, fill=value)
        else:
            poly = _polygon(cls, cx, cy, r, rng.uniform(0, np.pi), rng.uniform(0.5, 1.0))
            for draw, value in ((paint, colour), (label, cls), (covered, 255)):
                draw.polygon(poly, fill=value)
    layer = np.asarray(cover) > 0
    shapes = np.asarray(canvas, np.float32) / 255.0
    shade = 1.0 + 0.1 * rng.normal(size=(size, size, 1))  # texture inside shapes too
    image = np.where(layer[..., None], shapes * shade, image)
    image = image + rng.normal(0.0, 0.05, image.shape)  # sensor noise everywhere
    return np.clip(image, 0.0, 1.0).astype(np.float32), np.asarray(mask, np.uint8)


def _bands(rng: np.random.Generator, rgb: np.ndarray, mask: np.ndarray, n: int) -> np.ndarray:
    """RGB extended (or cut) to n bands: extra band k mixes R, G, B with weights fixed by k and
    adds a share of its own in which every shape is brighter, plus noise."""
    extra = []
    for k in range(3, n):
        w = np.random.default_rng([7, k]).dirichlet(np.ones(3))
        own = 0.35 * (mask > 0) * (0.5 + 0.5 * np.sin(k))
        extra.append(0.6 * rgb @ w + own + rng.normal(0.0, 0.04, mask.shape))
    bands = np.concatenate([rgb, np.stack(extra, -1)], -1) if extra else rgb[..., :n]
    return np.clip(bands, 0.0, 1.0)


def make_shapes(n: int, size: int, *, num_classes: int = 4, channels: int = 3, seed: int = 0,
                split: int = 0):
    """Generate `n` scenes deterministically from (seed, split).

    Args:
        n: number of scenes.
        size: height and width in pixels.
        num_classes: 2 (every shape is foreground), 3 (ellipses and rectangles) or 4.
        channels: 3 for RGB, 1 for grayscale; any other count N: RGB then N - 3 more bands
            (or the first N of RGB), each a fixed mix of R, G, B and a band of its own that
            shows the shapes brighter (a near-infrared-like band), with noise.
        seed: data seed; split: 0 for training, 1 for validation (disjoint streams).

    Returns:
        images uint8 [n, size, size, channels], masks uint8 [n, size, size].
    """
    if num_classes not in (2, 3, 4):
        raise ValueError(f"data.num_classes={num_classes}: "
                         "the shapes dataset has 2, 3 or 4 classes")
    if not 1 <= channels <= 64:
        raise ValueError(f"data.channels={channels}: use 1 to 64 bands")
    shape_classes = (1, 2) if num_classes == 3 else (1, 2, 3)
    images = np.empty((n, size, size, channels), np.uint8)
    masks = np.empty((n, size, size), np.uint8)
    for i in range(n):
        rng = np.random.default_rng([seed, split, i])
        image, mask = make_scene(rng, size, shape_classes)
        if channels == 1:
            image = image.mean(axis=-1, keepdims=True)
        elif channels != 3:
            image = _bands(rng, image, mask, channels)
        images[i] = np.round(image * 255)
        masks[i] = np.minimum(mask, 1) if num_classes == 2 else mask
    return images, masks


def class_names(num_classes: int) -> list[str]:
    """Names of the classes for a given num_classes."""
    return ["background", "shape"] if num_classes == 2 else list(CLASS_NAMES[:num_classes])
