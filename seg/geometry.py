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
  128 at equal time), at most the images' (median) shorter side;
- batch: about PIXELS per step (the old default: 16 crops of 128 px), from MIN_BATCH to
  MAX_BATCH crops.

On the built-in shapes (objects of 26 px) this gives what the defaults were: depth 3, 64 px
crops, batches of 16. On ISBI (membranes 43 px, cells 71 px) and the street photographs
(the median class 54-73 px across): depth 4, 256 px, batches of 4, what the plan chose on
both.

A key given as a number stays as given, and the others follow it (a fixed crop bounds the
depth and sets the batch). Backbone encoders have their own depth, so theirs is not read.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from seg import config

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


def reads_objects(cfg: dict) -> bool:
    """Whether the `auto` keys need the objects of the data (a batch for a given crop does
    not; nor does the depth of a backbone encoder)."""
    wanted = auto_keys(cfg)
    return "data.image_size" in wanted or ("model.depth" in wanted
                                           and cfg["model"]["encoder"] == "unet")


def _get(cfg: dict, path: str):
    section, _, name = path.partition(".")
    return cfg[section].get(name)


def receptive_field(depth: int) -> int:
    """The receptive field, in pixels, of seg's U-Net encoder: two 3x3 convolutions per level
    and a 2x2 pooling between levels."""
    return 1 + sum(4 * 2 ** level for level in range(depth + 1)) + (2 ** depth - 1)


def typical_extent(objects: dict) -> float | None:
    """The median over the classes of their 75th-percentile object extent (pixels), from
    seg.fingerprint.object_stats."""
    found = [o.extent_p75 for o in objects.values() if o.extent_p75]
    return float(np.median(found)) if found else None


def decide(cfg: dict, objects: dict, side: int | None, masks: int) -> Sized:
    """The numbers for cfg's `auto` geometry keys, from the objects of a sample of its
    training masks (seg.fingerprint.object_stats), their shorter side and how many they are."""
    data, model, wanted = cfg["data"], cfg["model"], auto_keys(cfg)
    extent = typical_extent(objects)
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
            field = receptive_field(depth)
            why.append(f"depth {depth} (receptive field {field} px)" if not extent else
                       f"a receptive field of {field} px covers 1.5x it" if field >= cover else
                       f"a receptive field of {field} px (depth {MAX_DEPTH} at most: a short "
                       "training learns faster shallow)")
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
        batch = batch_for(crop)
        values["trainer.batch_size"] = batch
        why.append(f"~{PIXELS // 1024}K pixels a step ({MIN_BATCH} to {MAX_BATCH} crops)")
    what = (f"the typical object is {extent:.0f} px across (the median class, "
            f"{masks} training masks): " if extent else
            f"no object measured in {masks} training mask(s): " if masks else "")
    return Sized({k: values[k] for k in KEYS if k in values and k in wanted},
                 what + ", ".join(why))


def batch_for(crop: int) -> int:
    """About PIXELS a step, MIN_BATCH to MAX_BATCH crops."""
    return int(min(max(PIXELS // crop ** 2, MIN_BATCH), MAX_BATCH))


def largest(cfg: dict) -> dict:
    """cfg with each `auto` geometry key at the most auto can choose (for a memory estimate
    before the data is read): depth MAX_DEPTH, the crop MAX_CROP, the batch for that crop."""
    crop = cfg["data"]["image_size"]
    crop = MAX_CROP if crop == "auto" else crop
    most = {"data.image_size": crop, "model.depth": MAX_DEPTH,
            "trainer.batch_size": batch_for(crop)}
    return config.applied(cfg, {k: most[k] for k in auto_keys(cfg)})
