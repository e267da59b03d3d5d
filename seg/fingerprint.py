"""A dataset's fingerprint: the facts about the data and the machine that a recipe follows from."""

from __future__ import annotations

import os
import platform
from dataclasses import dataclass

import numpy as np

from seg.data import balance as class_balance

OBJECT_SAMPLE = 48           # masks of the connected-component statistics
MASK_SAMPLE = 4096           # masks of the class histogram (an even sample beyond)


@dataclass
class Objects:
    """One class's connected components on the sampled masks."""

    count: int
    median_area: float
    extent_p75: float | None  # 75th percentile of the bounding box's longer side, components
                              # that span the image (background, "stuff") left out
    thickness: float          # 2 x pixels / boundary pixels: a strip's width


@dataclass
class Fingerprint:
    data: str
    num_train: int
    num_val: int
    sizes: list[tuple[int, int]]  # (height, width) of the sampled masks, train and validation
    channels: int
    bit_depth: str
    hist: class_balance.Histogram
    class_names: list[str]
    objects: dict[int, Objects]
    machine: dict

    @property
    def median_size(self) -> tuple[int, int]:
        hs, ws = zip(*self.sizes, strict=False)
        return int(np.median(hs)), int(np.median(ws))

    @property
    def typical_extent(self) -> float:
        """The largest of the classes' typical object sizes (each class's 75th-percentile
        extent, pixels): the receptive field should take in an object of any class whole."""
        found = [o.extent_p75 for o in self.objects.values() if o.extent_p75]
        return float(max(found)) if found else min(self.median_size) / 2


def machine() -> dict:
    """Cores, memory, and the GPU (name, memory) when TensorFlow sees one."""
    import tensorflow as tf

    from seg import resources

    gpus = tf.config.list_physical_devices("GPU")
    memory = resources.available_memory()
    out = {"cores": os.cpu_count() or 1, "memory_gib": round(memory / 2 ** 30, 1) if memory
           else None, "device": "GPU" if gpus else "CPU", "gpu": None, "gpu_memory_gib": None}
    if gpus:
        details = tf.config.experimental.get_device_details(gpus[0])
        gpu_bytes = resources._gpu_memory()
        out.update(gpu=details.get("device_name", "GPU"),
                   gpu_memory_gib=round(gpu_bytes / 2 ** 30, 1) if gpu_bytes else None)
    out["kind"] = (f"{out['gpu']} x{len(gpus)}" if gpus else
                   f"CPU, {out['cores']} cores ({platform.machine()})")
    return out


def object_stats(masks: list[np.ndarray], num_classes: int) -> dict[int, Objects]:
    """Connected components (8-connected) of every class on the masks: their number, median
    area and 75th-percentile extent, and the class's thickness (twice its pixels over its
    boundary pixels: a strip's width, a disk's radius)."""
    from scipy import ndimage

    areas, extents = ({k: [] for k in range(num_classes)} for _ in range(2))
    pixels, boundary = np.zeros(num_classes), np.zeros(num_classes)
    for mask in masks:
        side = min(mask.shape)
        for k in np.unique(mask):
            if not 0 <= k < num_classes:
                continue
            region = mask == k
            labels, _ = ndimage.label(region, structure=np.ones((3, 3)))
            area = np.bincount(labels.ravel())[1:]
            pixels[k] += region.sum()
            boundary[k] += (region & ~ndimage.binary_erosion(region, border_value=1)).sum()
            for box, a in zip(ndimage.find_objects(labels), area, strict=False):
                if a < 4:  # specks: label noise, not objects
                    continue
                extent = max(box[0].stop - box[0].start, box[1].stop - box[1].start)
                areas[k].append(a)
                if extent < 0.9 * side:
                    extents[k].append(extent)
    return {k: Objects(len(areas[k]), float(np.median(areas[k])),
                       float(np.percentile(extents[k], 75)) if extents[k] else None,
                       float(2 * pixels[k] / max(boundary[k], 1)))
            for k in range(num_classes) if areas[k]}


def fingerprint(cfg: dict, source) -> Fingerprint:
    """The dataset's fingerprint: every training mask for the histogram (an even sample of
    MASK_SAMPLE beyond), validation sizes, components on a sample."""
    data = cfg["data"]
    named = source.sample_masks(min(source.num_train, MASK_SAMPLE))
    _check_labels(named, data["num_classes"], data["ignore_index"])
    masks = [m for _, m in named]
    if not masks:
        from seg.data import DataError
        raise DataError("no training mask could be read (python scripts/check_data.py names "
                        "each file)")
    hist = class_balance.histogram(masks, data["num_classes"])
    if not hist.pixels.sum():
        from seg.data import DataError
        raise DataError(f"the {hist.masks} training masks read hold no labelled pixel (all "
                        f"ignore_index={data['ignore_index']}): check data.label_map (0/255 "
                        "masks need {0: 0, 255: 1}) and data.ignore_index (python "
                        "scripts/check_data.py)")
    present = np.flatnonzero(hist.pixels)
    if len(present) == 1:
        from seg.data import DataError
        raise DataError(f"every labelled pixel of the {hist.masks} training masks is class "
                        f"{present[0]} ({source.class_names[present[0]]}): nothing to "
                        "segment; check data.label_map (0/255 masks need {0: 0, 255: 1}) and "
                        "data.ignore_index (python scripts/check_data.py)")
    val_sizes = [tuple(int(s) for s in y.shape) for _, y in source.val.take(256)]
    step = max(len(masks) // OBJECT_SAMPLE, 1)
    objects = object_stats(masks[::step][:OBJECT_SAMPLE], data["num_classes"])
    return Fingerprint(source.description, source.num_train, source.num_val,
                       [m.shape for m in masks] + val_sizes, source.channels,
                       _bit_depth(cfg, source), hist, list(source.class_names), objects,
                       machine())


def _check_labels(named: list, num_classes: int, ignore_index: int):
    """DataError naming the first mask with a value that is no class and not ignore_index (the
    histogram would count it as void, silently): the pipeline's own check."""
    from seg.data import pipeline

    for name, mask in named:
        pipeline._check_labels(name, mask, num_classes, ignore_index)


def _bit_depth(cfg: dict, source) -> str:
    if source.band_stats:
        return "over 8 bits (standardised per band in the model)"
    return "8 bits" + (" (generated)" if cfg["data"]["name"] == "shapes" else "")
