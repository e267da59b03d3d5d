"""Class balance of a training split: its histogram, class weights and the rare classes.

Median-frequency balancing is SegNet's (Eigen and Fergus): a class's frequency is its pixels
over the pixels of the images it appears in, and its weight is the median frequency over its
own, so the typical class weighs 1 and a class ten times rarer weighs 10. Inverse frequency is
the "balanced" weighting (pixels / (classes x class pixels)), whose pixel-weighted mean is 1.
Their square roots (sqrt_median_frequency, sqrt_inverse_frequency) are the milder forms: a
class ten times rarer weighs about 3. Under a short training, full weights of 10 and more let
the rare classes take over the large ones (a building predicted as pole); the square root
raises the rare classes without starving the rest, and scripts/plan.py measures which
strength helps the mean. Void pixels (ignore_index, or any value that is not a class) are left
out of all of them.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

WEIGHTINGS = ("median_frequency", "inverse_frequency", "sqrt_median_frequency",
              "sqrt_inverse_frequency")
MAX_WEIGHT = 50.0  # a class seen on a handful of pixels would otherwise dominate the loss
RARE_SHARE = 0.02  # a class under 2% of the labelled pixels is rare, whatever the class count


@dataclass
class Histogram:
    """Labelled pixels per class, and pixels of the images each class appears in."""

    pixels: np.ndarray  # [C] int64
    image_pixels: np.ndarray  # [C] int64: labelled pixels of the images holding the class
    void: int  # pixels that are no class (ignore_index)
    masks: int  # masks counted

    @property
    def shares(self) -> np.ndarray:
        return self.pixels / max(int(self.pixels.sum()), 1)

    @property
    def void_share(self) -> float:
        return self.void / max(int(self.pixels.sum()) + self.void, 1)


def histogram(masks, num_classes: int) -> Histogram:
    """The histogram of an iterable of int masks (values outside [0, C) count as void)."""
    pixels = np.zeros(num_classes, np.int64)
    image_pixels = np.zeros(num_classes, np.int64)
    void, count = 0, 0
    for mask in masks:
        mask = np.asarray(mask)
        valid = mask[(mask >= 0) & (mask < num_classes)]
        counts = np.bincount(valid.ravel(), minlength=num_classes)[:num_classes]
        pixels += counts
        image_pixels += np.where(counts > 0, valid.size, 0)
        void += mask.size - valid.size
        count += 1
    return Histogram(pixels, image_pixels, int(void), count)


def class_weights(method: str, hist: Histogram) -> list[float]:
    """One weight per class by one of WEIGHTINGS (a class absent from the training split
    weighs 1: there is nothing to balance), capped at MAX_WEIGHT."""
    if method not in WEIGHTINGS:
        raise ValueError(f"loss.class_weights={method!r}: use one of {', '.join(WEIGHTINGS)} "
                         "or a list of weights")
    present = hist.pixels > 0
    root, method = method.startswith("sqrt_"), method.removeprefix("sqrt_")
    if method == "median_frequency":
        freq = np.where(present, hist.pixels / np.maximum(hist.image_pixels, 1), np.nan)
        weights = np.nanmedian(freq) / freq
    else:
        total = hist.pixels.sum()
        weights = total / (present.sum() * np.maximum(hist.pixels, 1))
    weights = np.sqrt(weights) if root else weights
    weights = np.where(present, np.minimum(weights, MAX_WEIGHT), 1.0)
    return [round(float(w), 4) for w in weights]


def rare_classes(hist: Histogram) -> list[int]:
    """Classes present in training on under half of an even share (1 / C) of the labelled
    pixels, or under RARE_SHARE: what rare-class crops are centred on."""
    shares, n = hist.shares, len(hist.pixels)
    return [k for k in range(n) if 0 < shares[k] < max(0.5 / n, RARE_SHARE)]
