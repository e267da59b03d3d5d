"""Pure array -> picture functions: class colours, error maps and side-by-side panels."""

from __future__ import annotations

import numpy as np
from PIL import Image, ImageDraw, ImageFont

# One fixed palette for every picture: background dark grey, then well-separated colours.
PALETTE = np.array([
    (40, 40, 40), (230, 25, 75), (60, 180, 75), (0, 130, 200), (255, 225, 25), (245, 130, 48),
    (145, 30, 180), (70, 240, 240), (240, 50, 230), (210, 245, 60), (250, 190, 212),
    (0, 128, 128), (220, 190, 255), (170, 110, 40), (255, 250, 200), (128, 0, 0),
    (170, 255, 195), (128, 128, 0), (255, 215, 180), (0, 0, 128), (128, 128, 128),
], np.uint8)
IGNORE_COLOUR = np.array((255, 255, 255), np.uint8)
# Confidence colour ramp (dark blue -> teal -> yellow), 0 to 1.
_RAMP = np.array([(68, 1, 84), (59, 82, 139), (33, 145, 140), (94, 201, 98), (253, 231, 37)],
                 np.float32)
COLUMNS = ("input", "ground truth", "prediction", "error", "confidence")


def colourise(mask: np.ndarray, ignore_index: int = 255) -> np.ndarray:
    """Class-index mask [H, W] -> RGB uint8 [H, W, 3]; ignored pixels white."""
    rgb = PALETTE[np.mod(mask, len(PALETTE))]
    rgb[mask == ignore_index] = IGNORE_COLOUR
    return rgb


def ramp(values: np.ndarray) -> np.ndarray:
    """Values in [0, 1] -> RGB uint8 through the confidence ramp."""
    v = np.clip(np.nan_to_num(values), 0, 1) * (len(_RAMP) - 1)
    lo = np.floor(v).astype(int).clip(0, len(_RAMP) - 2)
    t = (v - lo)[..., None]
    return ((1 - t) * _RAMP[lo] + t * _RAMP[lo + 1]).astype(np.uint8)


def error_map(true: np.ndarray, pred: np.ndarray, ignore_index: int = 255) -> np.ndarray:
    """Correct pixels dark, wrong ones red, ignored ones white."""
    rgb = np.full(true.shape + (3,), 30, np.uint8)
    rgb[(true != pred) & (true != ignore_index)] = (255, 40, 40)
    rgb[true == ignore_index] = IGNORE_COLOUR
    return rgb


def to_rgb(image: np.ndarray) -> np.ndarray:
    """Float [H, W, C] in [0, 1] (C = 1 or 3) -> uint8 RGB."""
    image = np.clip(np.nan_to_num(image), 0, 1)
    if image.shape[-1] == 1:
        image = np.repeat(image, 3, axis=-1)
    return (255 * image[..., :3]).astype(np.uint8)


def _font(size: int):
    try:
        return ImageFont.load_default(size=size)
    except TypeError:  # Pillow < 10.1 has a single bitmap size
        return ImageFont.load_default()


def panel(images, truths, preds, confidences, *, class_names: list[str], ignore_index: int = 255,
          title: str = "", banner: str = "", cell: int = 160) -> np.ndarray:
    """Side-by-side rows: input | ground truth | prediction | error | confidence, with a legend.

    Args:
        images: list of float [H, W, C] in [0, 1]. truths, preds: lists of int [H, W].
        confidences: list of float [H, W], the probability of the predicted class.
        class_names: names for the legend (colours from PALETTE by index).
        title: a line above the panel. banner: a red warning line (e.g. constant output).
        cell: the side, in pixels, every picture is scaled to (nearest neighbour).

    Returns:
        uint8 RGB picture.
    """
    font, small = _font(15), _font(12)
    pad, header = 4, 22
    rows = []
    for image, true, pred, conf in zip(images, truths, preds, confidences):
        tiles = [to_rgb(image), colourise(true, ignore_index), colourise(pred, ignore_index),
                 error_map(true, pred, ignore_index), ramp(conf)]
        h, w = true.shape
        scale = cell / max(h, w)
        size = (max(int(w * scale), 1), max(int(h * scale), 1))
        tiles = [np.asarray(Image.fromarray(t).resize(size, Image.NEAREST)) for t in tiles]
        row = np.full((size[1], 5 * (size[0] + pad), 3), 255, np.uint8)
        for i, t in enumerate(tiles):
            row[:, i * (size[0] + pad): i * (size[0] + pad) + size[0]] = t
        rows.append(row)
    width = max(r.shape[1] for r in rows)
    legend_h = 22 * (1 + (len(class_names) + 1) // 6)
    top = header * (1 + bool(title) + bool(banner))
    height = top + sum(r.shape[0] + pad for r in rows) + legend_h + 26
    canvas = Image.new("RGB", (width, height), (255, 255, 255))
    draw = ImageDraw.Draw(canvas)
    y = 2
    if title:
        draw.text((4, y), title, fill=(0, 0, 0), font=font)
        y += header
    if banner:
        draw.rectangle([0, y - 2, width, y + header - 4], fill=(200, 0, 0))
        draw.text((4, y), banner, fill=(255, 255, 255), font=font)
        y += header
    tile_w = (rows[0].shape[1]) // 5
    for i, name in enumerate(COLUMNS):
        draw.text((i * tile_w + 2, y), name, fill=(0, 0, 0), font=font)
    y += header
    for r in rows:
        canvas.paste(Image.fromarray(r), (0, y))
        y += r.shape[0] + pad
    x = 4
    for k, name in enumerate(list(class_names) + ["ignored"]):
        colour = tuple(int(c) for c in (PALETTE[k % len(PALETTE)] if k < len(class_names)
                                        else IGNORE_COLOUR))
        if x > width - 120:
            x, y = 4, y + 22
        draw.rectangle([x, y + 3, x + 14, y + 17], fill=colour, outline=(0, 0, 0))
        draw.text((x + 18, y + 3), name, fill=(0, 0, 0), font=small)
        x += 24 + int(draw.textlength(name, font=small))
    y += 24
    bar = ramp(np.linspace(0, 1, 120)[None, :].repeat(12, 0))
    canvas.paste(Image.fromarray(bar), (4, y + 2))
    draw.text((130, y + 1), "confidence 0 -> 1   error: red = wrong, white = ignored",
              fill=(0, 0, 0), font=small)
    return np.asarray(canvas)
