"""Pure array -> picture functions: class colours, error maps and side-by-side panels."""

from __future__ import annotations

import re

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
# Share colour ramp of the confusion matrix (dark blue -> teal -> yellow, viridis), 0 to 1.
_RAMP = np.array([(68, 1, 84), (59, 82, 139), (33, 145, 140), (94, 201, 98), (253, 231, 37)],
                 np.float32)
# Confidence ramp of the panels, from a guess (1/C) to certain: orange -> pale grey -> navy.
# Not viridis: its top is yellow, so a healthy model, sure almost everywhere, painted a picture
# that looked like the 'yellow image' users come to us about. Here sure is dark and calm, and
# what draws the eye is where the model hesitates (boundaries, thin parts, a flat output).
_CONFIDENCE = np.array([(236, 112, 20), (222, 222, 230), (24, 36, 90)], np.float32)
COLUMNS = ("input", "ground truth", "prediction", "error", "confidence")


def colourise(mask: np.ndarray, ignore_index: int = 255) -> np.ndarray:
    """Class-index mask [H, W] -> RGB uint8 [H, W, 3]; ignored pixels white."""
    rgb = PALETTE[np.mod(mask, len(PALETTE))]
    rgb[mask == ignore_index] = IGNORE_COLOUR
    return rgb


def ramp(values: np.ndarray, stops: np.ndarray = _RAMP) -> np.ndarray:
    """Values in [0, 1] -> RGB uint8 through a colour ramp (by default the confusion matrix's)."""
    v = np.clip(np.nan_to_num(values), 0, 1) * (len(stops) - 1)
    lo = np.floor(v).astype(int).clip(0, len(stops) - 2)
    t = (v - lo)[..., None]
    return ((1 - t) * stops[lo] + t * stops[lo + 1]).astype(np.uint8)


def confidence_colours(confidence: np.ndarray, num_classes: int) -> np.ndarray:
    """The probability of the predicted class -> RGB: orange at a guess (1/num_classes), navy
    when certain (see _CONFIDENCE for why these colours)."""
    guess = 1 / max(num_classes, 2)
    return ramp((np.asarray(confidence, np.float32) - guess) / (1 - guess), _CONFIDENCE)


def error_map(true: np.ndarray, pred: np.ndarray, ignore_index: int = 255) -> np.ndarray:
    """Correct pixels dark, wrong ones red, ignored ones white."""
    rgb = np.full(true.shape + (3,), 30, np.uint8)
    rgb[(true != pred) & (true != ignore_index)] = (255, 40, 40)
    rgb[true == ignore_index] = IGNORE_COLOUR
    return rgb


def to_rgb(image: np.ndarray) -> np.ndarray:
    """Float [H, W, C] in [0, 1] -> uint8 RGB: grey (and 2 bands: the first) repeated, the
    first 3 of more bands shown as RGB. Raw bands (16-bit, float: values outside [0, 1]) are
    stretched for display between their 2nd and 98th percentiles."""
    image = np.nan_to_num(np.asarray(image, np.float32))
    image = np.repeat(image[..., :1], 3, axis=-1) if image.shape[-1] < 3 else image[..., :3]
    if image.size and (image.min() < 0 or image.max() > 1):
        lo, hi = np.percentile(image, [2, 98])
        image = (image - lo) / max(hi - lo, 1e-9)
    return (255 * np.clip(image, 0, 1)).astype(np.uint8)


def scaled(tiles: list[np.ndarray], cell: int) -> list[np.ndarray]:
    """Same-size pictures scaled (nearest neighbour: labels stay labels) so the longer side is
    `cell` pixels."""
    h, w = tiles[0].shape[:2]
    scale = cell / max(h, w)
    size = (max(int(w * scale), 1), max(int(h * scale), 1))
    return [np.asarray(Image.fromarray(t).resize(size, Image.NEAREST)) for t in tiles]


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
    for image, true, pred, conf in zip(images, truths, preds, confidences, strict=False):
        rows.append(_panel_row(image, true, pred, conf, num_classes=len(class_names),
                               ignore_index=ignore_index, cell=cell, pad=pad))
    width = max(r.shape[1] for r in rows)
    legend_h = 22 * (1 + (len(class_names) + 1) // 6)
    top = header * (1 + bool(title) + bool(banner))
    height = top + sum(r.shape[0] + pad for r in rows) + legend_h + 42
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
    _panel_legend(canvas, draw, class_names, y=y, width=width, font=small)
    return np.asarray(canvas)


def _panel_row(image, true, pred, conf, *, num_classes: int, ignore_index: int, cell: int,
               pad: int) -> np.ndarray:
    """One row of the panel: input | truth | prediction | error | confidence, pad apart."""
    tiles = [to_rgb(image), colourise(true, ignore_index), colourise(pred, ignore_index),
             error_map(true, pred, ignore_index), confidence_colours(conf, num_classes)]
    tiles = scaled(tiles, cell)
    size = (tiles[0].shape[1], tiles[0].shape[0])
    row = np.full((size[1], 5 * (size[0] + pad), 3), 255, np.uint8)
    for i, t in enumerate(tiles):
        row[:, i * (size[0] + pad): i * (size[0] + pad) + size[0]] = t
    return row


def _panel_legend(canvas, draw, class_names: list[str], *, y: int, width: int, font):
    """From y down: the class colours (and 'ignored'), wrapped at width, then the confidence
    ramp and what the colours mean."""
    x = 4
    for k, name in enumerate(list(class_names) + ["ignored"]):
        colour = tuple(int(c) for c in (PALETTE[k % len(PALETTE)] if k < len(class_names)
                                        else IGNORE_COLOUR))
        if x > width - 120:
            x, y = 4, y + 22
        draw.rectangle([x, y + 3, x + 14, y + 17], fill=colour, outline=(0, 0, 0))
        draw.text((x + 18, y + 3), name, fill=(0, 0, 0), font=font)
        x += 24 + int(draw.textlength(name, font=font))
    y += 24
    bar = ramp(np.linspace(0, 1, 120)[None, :].repeat(12, 0), _CONFIDENCE)
    canvas.paste(Image.fromarray(bar), (4, y + 2))
    draw.text((130, y + 1), "confidence: orange = a guess, navy = sure   error: red = wrong, "
              "white = ignored", fill=(0, 0, 0), font=font)
    draw.text((4, y + 17), "(no yellow in the confidence map: a sure, healthy model must not "
              "look like the 'yellow image')", fill=(90, 90, 90), font=font)


def confusion_picture(cm: np.ndarray, class_names: list[str], title: str = "",
                      cell: int = 64) -> np.ndarray:
    """A confusion matrix as a picture: rows true class, columns predicted, each row normalised.

    Every cell shows the share of the true class's pixels (colour and %) and the pixel count.
    """
    cm = np.asarray(cm, np.float64)
    rows = cm / np.maximum(cm.sum(1, keepdims=True), 1)
    font, small = _font(14), _font(11)
    probe = ImageDraw.Draw(Image.new("RGB", (1, 1)))
    left = 12 + max(int(probe.textlength(n, font=font)) for n in class_names)
    cell = max(cell, 8 + max(int(probe.textlength(n, font=small)) for n in class_names))
    top = 44 + (22 if title else 0)
    k = len(class_names)
    canvas = Image.new("RGB", (left + k * cell + 10, top + k * cell + 40), (255, 255, 255))
    draw = ImageDraw.Draw(canvas)
    if title:
        draw.text((4, 2), title, fill=(0, 0, 0), font=font)
    draw.text((left, top - 40), "predicted ->", fill=(0, 0, 0), font=small)
    colours = ramp(rows)
    for j, name in enumerate(class_names):
        draw.text((left + j * cell + 2, top - 22), name, fill=(0, 0, 0), font=small)
    for i, name in enumerate(class_names):
        draw.text((4, top + i * cell + cell // 2 - 8), name, fill=(0, 0, 0), font=font)
        for j in range(k):
            x0, y0 = left + j * cell, top + i * cell
            draw.rectangle([x0, y0, x0 + cell - 2, y0 + cell - 2],
                           fill=tuple(int(c) for c in colours[i, j]))
            ink = (0, 0, 0) if rows[i, j] > 0.6 else (255, 255, 255)
            draw.text((x0 + 4, y0 + cell // 2 - 14), f"{100 * rows[i, j]:.1f}%", fill=ink,
                      font=font)
            draw.text((x0 + 4, y0 + cell // 2 + 4), f"{int(cm[i, j]):,}", fill=ink, font=small)
    draw.text((4, top + k * cell + 12), "rows: true class (each row sums to 100%)",
              fill=(0, 0, 0), font=small)
    return np.asarray(canvas)


def comparison(images, truths, predictions: dict[str, list], *, class_names: list[str],
               ignore_index: int = 255, title: str = "", cell: int = 128) -> np.ndarray:
    """Rows of input | ground truth | one prediction per named model, for the same images.

    Args:
        images: float [H, W, C] in [0, 1]. truths: int [H, W]. predictions: model label ->
            one int [H, W] per image. Labels are wrapped on commas over the column's width.
    """
    font, small = _font(13), _font(11)
    names = ["input", "ground truth"] + list(predictions)
    probe = ImageDraw.Draw(Image.new("RGB", (1, 1)))
    labels = [_wrap(n, probe=probe, font=small, width=cell - 4) for n in names]
    head = 6 + 14 * max(len(lines) for lines in labels) + (22 if title else 0)
    pad = 4
    tiles_per_row = []
    for i, (image, true) in enumerate(zip(images, truths, strict=False)):
        tiles = [to_rgb(image), colourise(true, ignore_index)]
        tiles += [colourise(preds[i], ignore_index) for preds in predictions.values()]
        tiles_per_row.append(scaled(tiles, cell))
    height = head + sum(row[0].shape[0] + pad for row in tiles_per_row) + 30
    canvas = Image.new("RGB", (len(names) * (cell + pad) + pad, height), (255, 255, 255))
    draw = ImageDraw.Draw(canvas)
    y = 2
    if title:
        draw.text((pad, y), title, fill=(0, 0, 0), font=font)
        y += 22
    for j, lines in enumerate(labels):
        for n, line in enumerate(lines):
            draw.text((pad + j * (cell + pad), y + 14 * n), line, fill=(0, 0, 0), font=small)
    y = head
    for row in tiles_per_row:
        for j, tile in enumerate(row):
            canvas.paste(Image.fromarray(tile), (pad + j * (cell + pad), y))
        y += row[0].shape[0] + pad
    x = pad
    for k, name in enumerate(class_names):
        draw.rectangle([x, y + 6, x + 12, y + 18],
                       fill=tuple(int(c) for c in PALETTE[k % len(PALETTE)]), outline=(0, 0, 0))
        draw.text((x + 16, y + 6), name, fill=(0, 0, 0), font=small)
        x += 26 + int(draw.textlength(name, font=small))
    return np.asarray(canvas)


def _wrap(label: str, *, probe, font, width: int) -> list[str]:
    """label's lines of at most width pixels (as probe draws them in font): greedy, breaking
    after commas, spaces and '=' where it can."""
    lines, line = [], ""
    for token in re.split(r"(?<=[, =])", label):
        while token:
            fit = len(token)
            while fit > 1 and probe.textlength(line + token[:fit], font=font) > width:
                fit -= 1
            if fit < len(token) and line:  # does not fit: start a new line first
                lines.append(line)
                line = ""
                continue
            line, token = line + token[:fit], token[fit:]
    return [x for x in lines + [line] if x]
