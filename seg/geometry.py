"""data.image_size, model.depth and trainer.batch_size = auto: the crop, depth and batch that a
run's data asks for, by scripts/plan.py's rules without its pilots (seg.recipe, seg.plan).

The objects decide: each class's typical object is its 75th-percentile extent over up to
SAMPLE training masks, and the median over the classes (`extent`) stands for the data.

- depth: the shallowest from 3 whose receptive field covers 1.5x the extent, at most
  MAX_DEPTH: under a short training a shallower model learns faster (on 360x480 street
  photographs depth 5, 8.7M parameters, reached 0.23 val mIoU where depth 4, 2.2M, reached
  0.35), and never so deep that a crop holds under 4 cells of 2**depth;
- crop: the next power of two over 2x the extent and the receptive field, at most
  MAX_CROP (the plan's pilots on ISBI and the street photographs measured 256 px beating
  128 at equal time), at most the images' shorter side;
- batch: about PIXELS per step (the old default: 16 crops of 128 px), from MIN_BATCH to
  MAX_BATCH crops.

On the built-in shapes (objects of 27 px) this gives what the defaults were: depth 3, 64 px
crops, batches of 16. On ISBI (membranes 43 px, cells 71 px) and the street photographs
(median class 73 px): depth 4, 256 px, batches of 4, what the plan chose on both.

A key given as a number stays as given, and the others follow it (a fixed crop bounds the
depth and sets the batch). Backbone encoders have their own depth, so theirs is not read.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from seg.recipe import receptive_field

KEYS = ("data.image_size", "model.depth", "trainer.batch_size")
SAMPLE = 16          # training masks read for the object sizes (a few seconds at most)
MIN_DEPTH, MAX_DEPTH = 3, 4
MAX_CROP = 256
PIXELS = 16 * 128 ** 2
MIN_BATCH, MAX_BATCH = 4, 16
BACKBONE_LEVELS = 5  # a Keras application or keras-hub backbone pads to a multiple of 32


@dataclass
class Sized:
    """What each `auto` geometry key became, and one line on why (printed, recorded)."""

    values: dict  # key path -> the number it became
    reason: str


def auto_keys(cfg: dict) -> list[str]:
    """The geometry keys of cfg whose value is `auto`."""
    return [k for k in KEYS if _get(cfg, k) == "auto"]


def _get(cfg: dict, path: str):
    section, _, name = path.partition(".")
    return cfg[section].get(name)


def typical_extent(masks: list[np.ndarray], num_classes: int) -> float | None:
    """The median over the classes of their 75th-percentile object extent (pixels)."""
    from seg.fingerprint import object_stats

    found = [o.extent_p75 for o in object_stats(masks, num_classes).values() if o.extent_p75]
    return float(np.median(found)) if found else None


def decide(cfg: dict, masks: list[np.ndarray]) -> Sized:
    """The numbers for cfg's `auto` geometry keys, from a sample of its training masks."""
    data, model, wanted = cfg["data"], cfg["model"], auto_keys(cfg)
    side = min(min(m.shape[:2]) for m in masks) if masks else None
    extent = typical_extent(masks, data["num_classes"]) if masks else None
    unet = model["encoder"] == "unet"
    crop = data["image_size"] if data["image_size"] != "auto" else None
    depth = model["depth"] if model["depth"] != "auto" else None
    values, why = {}, []
    if depth is None:
        depth = 3  # not read by a backbone encoder
        if unet:
            room = min(x for x in (crop, side, 2 ** 16) if x)
            fits = [d for d in range(1, MAX_DEPTH + 1) if 4 * 2 ** d <= room] or [1]
            cover = 1.5 * extent if extent else 0.0
            depth = next((d for d in fits if d >= MIN_DEPTH and receptive_field(d) >= cover),
                         fits[-1])
            why.append(f"a receptive field of {receptive_field(depth)} px"
                       + (" covers 1.5x it" if receptive_field(depth) >= cover else
                          f" (depth {MAX_DEPTH} at most: a short training learns faster "
                          "shallow)"))
        values["model.depth"] = depth
    levels = depth if unet else BACKBONE_LEVELS
    if crop is None:
        unit = 2 ** levels
        want = max(2 * (extent or 0.0), receptive_field(depth) if unet else 0, 4 * unit)
        crop = min(2 ** math.ceil(math.log2(want)), MAX_CROP)
        if side:
            crop = max(min(crop, side // unit * unit), unit)
        values["data.image_size"] = crop
        why.append(f"crops of 2x it and the receptive field (at most {MAX_CROP} px"
                   + (f" and the shorter side, {side} px)" if side else ")"))
    if cfg["trainer"]["batch_size"] == "auto":
        batch = int(min(max(PIXELS // crop ** 2, MIN_BATCH), MAX_BATCH))
        values["trainer.batch_size"] = batch
        why.append(f"~{PIXELS // 1024}K pixels a step ({MIN_BATCH} to {MAX_BATCH} crops)")
    what = (f"the typical object is {extent:.0f} px across (the median class, "
            f"{len(masks)} training masks)" if extent else
            f"no object measured in {len(masks)} training mask(s)")
    return Sized({k: values[k] for k in KEYS if k in values and k in wanted},
                 what + ": " + ", ".join(why))


def applied(cfg: dict, values: dict) -> dict:
    """A copy of cfg with the values (key path -> value) set."""
    out = {k: dict(v) if isinstance(v, dict) else v for k, v in cfg.items()}
    for path, value in values.items():
        section, _, name = path.partition(".")
        out[section][name] = value
    return out
