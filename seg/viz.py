"""Pure array -> picture functions: class colours, error maps and side-by-side panels."""

from __future__ import annotations

import re

import numpy as np
from PIL import Image, ImageDraw, ImageFont

# One fixed palette for every picture, colour-blind safe: class 0 (usually background) dark
# grey, classes 1-7 the Okabe-Ito colours (Okabe & Ito 2008, told apart with every common
# colour-vision deficiency), 8-11 four of Paul Tol's muted/bright colours chosen to stay apart
# from them and from ERROR_COLOUR, then more of Tol's light and muted colours, where nothing
# can stay far apart any more. tests/test_viz.py measures the distances (CIE76 delta-E, also
# under simulated deuteranopia).
PALETTE = np.array([
    (40, 40, 40),  # 0: dark grey
    (230, 159, 0), (86, 180, 233), (0, 158, 115), (240, 228, 66), (0, 114, 178), (213, 94, 0),
    (204, 121, 167),  # 1-7: Okabe-Ito orange, sky blue, bluish green, yellow, blue, vermillion,
    # reddish purple
    (51, 34, 136), (221, 204, 119), (136, 34, 85), (34, 136, 51),  # 8-11: Tol indigo, sand,
    # wine, green
    (187, 204, 51), (68, 187, 153), (119, 170, 221), (255, 170, 187), (153, 153, 51),
    (238, 136, 102), (136, 204, 238), (204, 102, 119), (128, 128, 128),
], np.uint8)
# Wrong pixels in the error column: a vivid violet, the colour farthest from every class colour
# above (and from white and the dark 'correct'), with normal sight (delta-E >= 60) and with
# deuteranopia (>= 30) among the colours light enough to stand out on the dark. Not red: red
# was a class colour's neighbour (a two-class run's foreground looked like its errors).
ERROR_COLOUR = np.array((190, 0, 255), np.uint8)
CORRECT_COLOUR = np.array((30, 30, 30), np.uint8)
IGNORE_COLOUR = np.array((255, 255, 255), np.uint8)
# Share colour ramp of the confusion matrix (dark blue -> teal -> yellow, viridis), 0 to 1.
_RAMP = np.array([(68, 1, 84), (59, 82, 139), (33, 145, 140), (94, 201, 98), (253, 231, 37)],
                 np.float32)
# Confidence ramp of the panels, from a guess (1/C) to certain: orange -> pale grey -> navy.
# Not viridis: its top is yellow, so a healthy model, sure almost everywhere, painted a picture
# that looked like the 'yellow image' users come to us about. Here sure is dark and calm, and
# what draws the eye is where the model hesitates (boundaries, thin parts, a flat output).
_CONFIDENCE = np.array([(236, 112, 20), (222, 222, 230), (24, 36, 90)], np.float32)
# Column heads: one word each, so they stay readable where TensorBoard shrinks the panel.
COLUMNS = ("image", "truth", "prediction", "errors", "confidence")
# Text height as a share of a picture's width. TensorBoard's IMAGES card shows a picture
# scaled to the card's width (about 450 CSS px at its default size): 3.5% of the width keeps
# letters about 15 px high there, whatever the picture's own width.
TEXT_SHARE = 0.035


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
    """Correct pixels dark (CORRECT_COLOUR), wrong ones violet (ERROR_COLOUR), ignored ones
    white."""
    rgb = np.empty(true.shape + (3,), np.uint8)
    rgb[...] = CORRECT_COLOUR
    rgb[(true != pred) & (true != ignore_index)] = ERROR_COLOUR
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


def text_px(width: int) -> int:
    """The font size for a picture `width` pixels wide: TEXT_SHARE of it, at least 14."""
    return max(14, round(TEXT_SHARE * width))


def panel(images, truths, preds, confidences, *, class_names: list[str], ignore_index: int = 255,
          title: str = "", banner: str = "", cell: int = 160) -> np.ndarray:
    """Side-by-side rows: image | truth | prediction | errors | confidence, with a legend.

    Text is sized to the picture's width (text_px), so it stays readable where TensorBoard
    shows the panel shrunk to its card; long titles and banners wrap.

    Args:
        images: list of float [H, W, C] in [0, 1]. truths, preds: lists of int [H, W].
        confidences: list of float [H, W], the probability of the predicted class.
        class_names: names for the legend (colours from PALETTE by index).
        title: a line above the panel. banner: a red warning line (e.g. constant output).
        cell: the side, in pixels, every picture is scaled to (nearest neighbour).

    Returns:
        uint8 RGB picture.
    """
    pad = 4
    rows = []
    for image, true, pred, conf in zip(images, truths, preds, confidences, strict=False):
        rows.append(_panel_row(image, true, pred, conf, num_classes=len(class_names),
                               ignore_index=ignore_index, cell=cell, pad=pad))
    width = max(r.shape[1] for r in rows)
    size = text_px(width)
    font, margin, line = _font(size), size // 3, round(1.25 * size)
    probe = ImageDraw.Draw(Image.new("RGB", (1, 1)))
    titles = _wrap(title, probe=probe, font=font, width=width - 2 * margin) if title else []
    banners = _wrap(banner, probe=probe, font=font, width=width - 2 * margin) if banner else []
    column = rows[0].shape[1] // 5
    head = _font(_fitting(COLUMNS, size, column - pad - 2, probe))
    legend = _legend_layout(_class_items(class_names) + [_key_item()], probe=probe, font=font,
                            width=width - 2 * margin, size=size)
    height = (margin + line * (len(titles) + len(banners) + 1)
              + sum(r.shape[0] + pad for r in rows) + line * len(legend) + margin)
    canvas = Image.new("RGB", (width, height), (255, 255, 255))
    draw = ImageDraw.Draw(canvas)
    y = margin
    for text in titles:
        draw.text((margin, y), text, fill=(0, 0, 0), font=font)
        y += line
    if banners:
        draw.rectangle([0, y - margin // 2, width, y + line * len(banners)], fill=(200, 0, 0))
    for text in banners:
        draw.text((margin, y), text, fill=(255, 255, 255), font=font)
        y += line
    for i, name in enumerate(COLUMNS):  # centred over its column
        x = i * column + (column - pad - draw.textlength(name, font=head)) / 2
        draw.text((x, y + (line - size) // 2), name, fill=(0, 0, 0), font=head)
    y += line
    for r in rows:
        canvas.paste(Image.fromarray(r), (0, y))
        y += r.shape[0] + pad
    _draw_legend(canvas, draw, legend, x=margin, y=y, font=font, size=size, line=line)
    return np.asarray(canvas)


def _panel_row(image, true, pred, conf, *, num_classes: int, ignore_index: int, cell: int,
               pad: int) -> np.ndarray:
    """One row of the panel: image | truth | prediction | errors | confidence, pad apart."""
    tiles = [to_rgb(image), colourise(true, ignore_index), colourise(pred, ignore_index),
             error_map(true, pred, ignore_index), confidence_colours(conf, num_classes)]
    tiles = scaled(tiles, cell)
    size = (tiles[0].shape[1], tiles[0].shape[0])
    row = np.full((size[1], 5 * (size[0] + pad), 3), 255, np.uint8)
    for i, t in enumerate(tiles):
        row[:, i * (size[0] + pad): i * (size[0] + pad) + size[0]] = t
    return row


def _fitting(texts, size: int, width: int, probe) -> int:
    """The largest font size, at most size (and at least 10), at which every text fits width."""
    while size > 10 and max(probe.textlength(t, font=_font(size)) for t in texts) > width:
        size -= 1
    return size


# A legend is a list of items, each kept on one line; an item is a list of parts: a str (text),
# a tuple (a colour swatch) or an array (a small picture, the confidence ramp).
def _class_items(class_names: list[str]) -> list[list]:
    """One legend item per class: its swatch and its name."""
    return [[tuple(int(c) for c in PALETTE[k % len(PALETTE)]), name]
            for k, name in enumerate(class_names)]


def _key_item() -> list:
    """What the error and confidence colours mean, as one legend item."""
    bar = ramp(np.linspace(0, 1, 64)[None, :].repeat(4, 0), _CONFIDENCE)
    return [tuple(int(c) for c in ERROR_COLOUR), "wrong", tuple(int(c) for c in IGNORE_COLOUR),
            "ignored", "  confidence: guess", bar, "sure"]


def _part_width(part, *, probe, font, size: int) -> float:
    if isinstance(part, str):
        return probe.textlength(part, font=font)
    return 3 * size if isinstance(part, np.ndarray) else size


def _legend_layout(items: list[list], *, probe, font, width: int, size: int) -> list[list]:
    """items in lines no wider than width (an item too wide alone has its text cut with
    '...')."""
    gap = size // 3
    lines, line, used = [], [], 0

    def span(item):
        return sum(_part_width(p, probe=probe, font=font, size=size) for p in item) \
            + gap * (len(item) - 1)

    for item in items:
        while span(item) > width and isinstance(item[-1], str) and len(item[-1]) > 1:
            item = item[:-1] + [item[-1][:-4] + "..." if len(item[-1]) > 4 else item[-1][:-1]]
        w = span(item)
        if line and used + size + w > width:
            lines.append(line)
            line, used = [], 0
        line.append(item)
        used += w + (size if used else 0)
    return lines + [line] if line else lines


def _draw_legend(canvas, draw, lines: list[list], *, x: int, y: int, font, size: int,
                 line: int):
    """The legend lines from _legend_layout, from (x, y) down, one every `line` pixels."""
    gap = size // 3
    for items in lines:
        at = x
        for item in items:
            for part in item:
                if isinstance(part, str):
                    draw.text((at, y + (line - size) // 2), part, fill=(0, 0, 0), font=font)
                elif isinstance(part, np.ndarray):
                    bar = Image.fromarray(part).resize((3 * size, int(0.7 * size)))
                    canvas.paste(bar, (int(at), y + (line - bar.size[1]) // 2))
                    draw.rectangle([at, y + (line - bar.size[1]) // 2, at + 3 * size - 1,
                                    y + (line + bar.size[1]) // 2 - 1], outline=(0, 0, 0))
                else:
                    top = y + (line - size) // 2
                    draw.rectangle([at, top, at + size - 1, top + size - 1], fill=part,
                                   outline=(0, 0, 0))
                at += _part_width(part, probe=draw, font=font, size=size) + gap
            at += size - gap
        y += line


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
               ignore_index: int = 255, title: str = "", cell: int = 128,
               width: int = 0) -> np.ndarray:
    """Rows of image | truth | one prediction per named model, for the same images.

    The model columns are headed #1, #2, ...; a key under the pictures gives each one's
    label in full (labels are long: narrow column heads were unreadable), then the class
    legend. Text is sized to the width (text_px).

    Args:
        images: float [H, W, C] in [0, 1]. truths: int [H, W]. predictions: model label ->
            one int [H, W] per image.
        width: the least width of the picture (pictures stacked together pass the same one,
            so that their text is one size).
    """
    pad = 4
    heads = ["image", "truth"] + [f"#{k}" for k in range(1, len(predictions) + 1)]
    tiles_per_row = []
    for i, (image, true) in enumerate(zip(images, truths, strict=False)):
        tiles = [to_rgb(image), colourise(true, ignore_index)]
        tiles += [colourise(preds[i], ignore_index) for preds in predictions.values()]
        tiles_per_row.append(scaled(tiles, cell))
    width = max(width, len(heads) * (cell + pad) + pad)
    size = text_px(width)
    font, margin, line = _font(size), size // 3, round(1.25 * size)
    probe = ImageDraw.Draw(Image.new("RGB", (1, 1)))
    titles = _wrap(title, probe=probe, font=font, width=width - 2 * margin) if title else []
    head = _font(_fitting(heads, size, cell - 2, probe))
    key = [text for k, label in enumerate(predictions, 1)
           for text in _wrap(f"#{k}: {label}", probe=probe, font=font, width=width - 2 * margin)]
    legend = _legend_layout(_class_items(class_names), probe=probe, font=font,
                            width=width - 2 * margin, size=size)
    height = (margin + line * (len(titles) + 1) + sum(row[0].shape[0] + pad
                                                      for row in tiles_per_row)
              + line * (len(key) + len(legend)) + margin)
    canvas = Image.new("RGB", (width, height), (255, 255, 255))
    draw = ImageDraw.Draw(canvas)
    y = margin
    for text in titles:
        draw.text((margin, y), text, fill=(0, 0, 0), font=font)
        y += line
    for j, name in enumerate(heads):
        x = pad + j * (cell + pad) + (cell - draw.textlength(name, font=head)) / 2
        draw.text((x, y + (line - size) // 2), name, fill=(0, 0, 0), font=head)
    y += line
    for row in tiles_per_row:
        for j, tile in enumerate(row):
            canvas.paste(Image.fromarray(tile), (pad + j * (cell + pad), y))
        y += row[0].shape[0] + pad
    for text in key:
        draw.text((margin, y + (line - size) // 2), text, fill=(0, 0, 0), font=font)
        y += line
    _draw_legend(canvas, draw, legend, x=margin, y=y, font=font, size=size, line=line)
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
