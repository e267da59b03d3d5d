"""tf.data pipelines: decoding, joint image/mask augmentation, batching.

Randomness is stateless: every training element gets its own seed pair from
tf.data.Dataset.random(seed), so a run's augmentation depends only on the seed, not on thread
timing. Masks are only ever resampled with nearest neighbour: interpolated labels are invented
labels.
"""

from __future__ import annotations

import contextlib

import numpy as np
import tensorflow as tf
from keras import ops

from seg.data.folder import DataError, Pair, read_pair

AUTOTUNE = tf.data.AUTOTUNE


def from_arrays(images: np.ndarray, masks: np.ndarray) -> tf.data.Dataset:
    """(uint8 image [H, W, C], int32 mask [H, W]) elements from in-memory arrays."""
    return tf.data.Dataset.from_tensor_slices((images, masks)).map(
        lambda x, y: (x, tf.cast(y, tf.int32)))


def from_pairs(pairs: list[Pair], *, on_bad_sample: str = "error",
               skipped: dict | None = None, num_classes: int | None = None,
               ignore_index: int = 255, **read_kwargs) -> tf.data.Dataset:
    """(uint8 image, int32 mask) elements decoded from files in parallel with Pillow
    (float32 images of the files' own values with raw=True: 16-bit and float data).

    A pair that cannot be read, or (given num_classes) whose mask holds a label outside
    [0, num_classes) that is not ignore_index, stops the pipeline with an error naming the
    file, or, with on_bad_sample="skip", is left out, printed once and recorded in `skipped`
    (file -> reason).
    """
    by_index = list(pairs)
    channels = read_kwargs["channels"]
    dtype = np.float32 if read_kwargs.get("raw") else np.uint8  # raw: the files' own values
    skipped = {} if skipped is None else skipped

    def load(i):
        pair = by_index[int(i)]
        try:
            image, mask = read_pair(pair, **read_kwargs)
            if num_classes is not None:
                _check_labels(pair.mask, mask, num_classes, ignore_index)
        except DataError as e:
            if on_bad_sample != "skip":
                raise
            if pair.image not in skipped:
                skipped[pair.image] = str(e)
                print(f"\n[seg data] skipped {pair.image}: {e}", flush=True)
            return np.zeros((0, 0, channels), dtype), np.zeros((0, 0), np.int32)
        return image, mask.astype(np.int32)

    def load_tf(i):
        image, mask = tf.numpy_function(load, [i], (dtype, tf.int32), stateful=False)
        image.set_shape([None, None, channels])
        mask.set_shape([None, None])
        return image, mask

    ds = tf.data.Dataset.range(len(by_index)).map(load_tf, num_parallel_calls=AUTOTUNE)
    if on_bad_sample == "skip":
        ds = ds.filter(lambda image, mask: tf.size(mask) > 0)
    return ds


_LABEL_CHECKS = {"on": True}


@contextlib.contextmanager
def labels_unchecked():
    """Read without the label check of from_pairs, for the preflight: its audit reports label
    problems with their fixes (a label map for 0/255 masks, ...), which the check would
    pre-empt with a bare error."""
    before, _LABEL_CHECKS["on"] = _LABEL_CHECKS["on"], False
    try:
        yield
    finally:
        _LABEL_CHECKS["on"] = before


def _check_labels(path: str, mask: np.ndarray, num_classes: int, ignore_index: int):
    if not _LABEL_CHECKS["on"]:
        return
    out = (mask != ignore_index) & ((mask < 0) | (mask >= num_classes))
    if out.any():
        values = np.unique(mask[out])[:8].tolist()
        raise DataError(f"{path}: mask values {values} are outside [0, {num_classes}) and not "
                        f"ignore_index={ignore_index}; check data.label_map and "
                        "data.num_classes (python scripts/check_data.py lists every such file)")


def _place(image, mask, size, offsets_seed, ignore_index, random, centre=None):
    """Pad (mask with ignore_index) to at least size x size, then crop size x size (around
    `centre`, a (found, row, column) triple, when found)."""
    h, w = tf.shape(image)[0], tf.shape(image)[1]
    ph, pw = tf.maximum(size - h, 0), tf.maximum(size - w, 0)
    image = tf.pad(image, [[0, ph], [0, pw], [0, 0]])
    mask = tf.pad(mask, [[0, ph], [0, pw], [0, 0]], constant_values=ignore_index)
    h, w = h + ph, w + pw
    if random:
        oy = tf.random.stateless_uniform([], offsets_seed[0], 0, h - size + 1, tf.int32)
        ox = tf.random.stateless_uniform([], offsets_seed[1], 0, w - size + 1, tf.int32)
        if centre is not None:
            found, cy, cx = centre
            oy = tf.where(found, tf.clip_by_value(cy - size // 2, 0, h - size), oy)
            ox = tf.where(found, tf.clip_by_value(cx - size // 2, 0, w - size), ox)
    else:
        oy, ox = (h - size) // 2, (w - size) // 2
    return image[oy:oy + size, ox:ox + size], mask[oy:oy + size, ox:ox + size]


def rare_centre(mask, rare_classes, share: float, seeds):
    """(found, row, column): with probability `share`, a pixel of one of the rare classes in
    this mask (the class, then the pixel, drawn uniformly); found is False otherwise or when
    none is present. mask: int32 [H, W, 1]. seeds: three stateless seeds."""
    rare = tf.constant(list(rare_classes) or [-1], tf.int32)
    present = tf.reduce_any(tf.equal(mask, rare[None, None, :]), axis=[0, 1])
    classes = tf.boolean_mask(rare, present)
    n = tf.size(classes)
    wanted = (tf.random.stateless_uniform([], seeds[0]) < share) & (n > 0)

    def pick():
        cls = classes[tf.random.stateless_uniform([], seeds[1], 0, tf.maximum(n, 1), tf.int32)]
        where = tf.cast(tf.where(tf.equal(mask[..., 0], cls)), tf.int32)
        at = tf.random.stateless_uniform([], seeds[2], 0, tf.shape(where)[0], tf.int32)
        return where[at, 0], where[at, 1]

    cy, cx = tf.cond(wanted, pick, lambda: (tf.constant(0), tf.constant(0)))
    return wanted, cy, cx


def photometric(image, seed, *, brightness=0.0, contrast=0.0, saturation=0.0, hue=0.0,
                blur=0.0, scaled: bool = True):
    """Image-only changes of one crop: brightness (+- delta), contrast and saturation (x 1 +-
    v), hue (+- delta) and a Gaussian blur of a random sigma in [0, blur] pixels. Stateless, so
    the same seed gives the same change. Raw bands (scaled=False) get contrast and blur only:
    the others assume values in [0, 1]."""
    seeds = tf.random.experimental.stateless_split(seed, 5)
    if brightness and scaled:
        image = tf.image.stateless_random_brightness(image, brightness, seeds[0])
    if contrast:
        image = tf.image.stateless_random_contrast(image, 1 - contrast, 1 + contrast, seeds[1])
    if saturation and scaled and image.shape[-1] == 3:
        image = tf.image.stateless_random_saturation(image, max(1 - saturation, 0.0),
                                                     1 + saturation, seeds[2])
    if hue and scaled and image.shape[-1] == 3:
        image = tf.image.stateless_random_hue(image, hue, seeds[3])
    if blur:
        image = _gaussian_blur(image, tf.random.stateless_uniform([], seeds[4], 0.0, blur), blur)
    return image


def _gaussian_blur(image, sigma, max_sigma: float):
    """A separable Gaussian blur of one [H, W, C] image; the kernel's radius covers max_sigma."""
    radius = max(int(np.ceil(3 * max_sigma)), 1)
    x = tf.range(-radius, radius + 1, dtype=tf.float32)
    kernel = tf.exp(-0.5 * tf.square(x / tf.maximum(sigma, 1e-3)))
    kernel /= tf.reduce_sum(kernel)
    channels = image.shape[-1]
    padded = tf.pad(image[None], [[0, 0], [radius, radius], [radius, radius], [0, 0]], "REFLECT")
    rows = tf.tile(kernel[:, None, None, None], [1, 1, channels, 1])
    cols = tf.tile(kernel[None, :, None, None], [1, 1, channels, 1])
    out = tf.nn.depthwise_conv2d(padded, rows, [1, 1, 1, 1], "VALID")
    return tf.nn.depthwise_conv2d(out, cols, [1, 1, 1, 1], "VALID")[0]


def elastic(image, mask, seed, *, sigma: float, grid: int = 3):
    """Warp an image (bilinear) and its mask (nearest) by one smooth random displacement field.

    As in the U-Net paper: displacements drawn from N(0, sigma^2) pixels on a coarse grid x grid
    lattice, interpolated bicubically to every pixel; borders are reflected, so no pixel is
    invented and no label is mixed.
    """
    h, w = tf.shape(image)[0], tf.shape(image)[1]
    coarse = tf.random.stateless_normal([1, grid, grid, 2], seed, stddev=sigma)
    field = tf.image.resize(coarse, [h, w], method="bicubic")[0]
    rows, cols = tf.meshgrid(tf.range(h, dtype=tf.float32), tf.range(w, dtype=tf.float32),
                             indexing="ij")
    at = tf.stack([rows + field[..., 0], cols + field[..., 1]])

    def warp(a, order):
        return tf.stack([ops.image.map_coordinates(a[..., c], at, order, fill_mode="reflect")
                         for c in range(a.shape[-1])], axis=-1)

    return warp(image, 1), tf.cast(warp(tf.cast(mask, tf.float32), 0), mask.dtype)


def augment(image, mask, seed, *, size: int, scale_range=(0.8, 1.25), ignore_index: int = 255,
            random: bool = True, elastic_sigma: float = 0.0, transpose: bool = False,
            rare_classes=(), rare_class_crops: float = 0.0, photometric_args=None):
    """Jointly scale, crop and flip one (uint8 image, int32 mask) pair to size x size.

    Args:
        image: uint8 [H, W, C] (or float32 raw bands). mask: int32 [H, W]. seed: int64 [2],
            the element's seed.
        size: output height and width. scale_range: (low, high) random zoom factors.
        ignore_index: label for pixels created by padding. random: False gives a centre
            crop/pad and no flips (deterministic, for evaluation-style inputs).
        elastic_sigma: > 0 also warps the crop elastically (see `elastic`), by this many
            pixels (standard deviation of the displacements).
        transpose: also swap height and width at random; with the two flips, every rotation
            by 90 degrees and mirror (the 8 symmetries of a square) is equally likely.
        rare_classes, rare_class_crops: this share of the crops is centred on a pixel of one
            of these classes (where the image has one); see `rare_centre`.
        photometric_args: `photometric`'s strengths (image only; masks untouched).

    Returns:
        float32 image [size, size, C] in [0, 1] (raw bands: their values), int32 mask
        [size, size].
    """
    # one seed per random choice; a longer split starts with the same seeds (streams stay put)
    seeds = tf.random.experimental.stateless_split(tf.cast(seed, tf.int64), 11)
    scaled = image.dtype == tf.uint8  # raw float bands keep their values (no clipping)
    image = tf.image.convert_image_dtype(image, tf.float32)
    mask = mask[..., None]
    if random:
        scale = tf.random.stateless_uniform([], seeds[0], scale_range[0], scale_range[1])
        hw = tf.cast(tf.shape(image)[:2], tf.float32) * scale
        hw = tf.maximum(tf.cast(tf.round(hw), tf.int32), 1)
        image = tf.image.resize(image, hw, method="bilinear")
        mask = tf.image.resize(mask, hw, method="nearest")
    centre = (rare_centre(mask, rare_classes, rare_class_crops, seeds[7:10])
              if random and rare_classes and rare_class_crops > 0 else None)
    image, mask = _place(image, mask, size, seeds[1:3], ignore_index, random, centre)
    image.set_shape([size, size, image.shape[-1]])
    mask.set_shape([size, size, 1])
    if random:
        for axis, s in ((1, seeds[3]), (0, seeds[4])):
            flip = tf.random.stateless_uniform([], s) < 0.5
            # tf.cond calls its lambdas here, within this iteration: the loop variables are current
            image = tf.cond(flip, lambda: tf.reverse(image, [axis]), lambda: image)  # noqa: B023
            mask = tf.cond(flip, lambda: tf.reverse(mask, [axis]), lambda: mask)  # noqa: B023
        if transpose:
            swap = tf.random.stateless_uniform([], seeds[6]) < 0.5
            image = tf.cond(swap, lambda: tf.transpose(image, [1, 0, 2]), lambda: image)
            mask = tf.cond(swap, lambda: tf.transpose(mask, [1, 0, 2]), lambda: mask)
        if elastic_sigma > 0:
            image, mask = elastic(image, mask, seeds[5], sigma=elastic_sigma)
        if photometric_args and any(photometric_args.values()):
            image = photometric(image, seeds[10], scaled=scaled, **photometric_args)
    return (tf.clip_by_value(image, 0.0, 1.0) if scaled else image), mask[..., 0]


def training(ds: tf.data.Dataset, *, num_examples: int, batch_size: int, image_size: int,
             augment_data: bool = True, scale_range=(0.8, 1.25), ignore_index: int = 255,
             seed: int = 0, cache: bool = False, start_batch: int = 0,
             elastic_sigma: float = 0.0, transpose: bool = False, rare_classes=(),
             rare_class_crops: float = 0.0, photometric_args=None) -> tf.data.Dataset:
    """An endless, shuffled, augmented stream of fixed-size batches (image, mask).

    The stream of the first iterator of the returned dataset is a function of the seed alone:
    the passes over the data are shuffled in a fixed sequence, and element i of the stream is
    augmented with the i-th seed of Dataset.random(seed). So `start_batch=n` gives exactly the
    stream an uninterrupted run sees from its n-th batch on (what a resumed run needs); the
    skipped elements are not augmented. Make one dataset per training run (a second iterator
    of the same object continues the shuffle sequence).
    """
    if cache:
        ds = ds.cache()  # decoded pixels, shared by every pass; augmentation stays random
    buffer = min(num_examples, 10_000)
    # A new Dataset object per call: its shuffle seeds pass 0, 1, 2, ... from `seed` alone.
    passes = ds.shuffle(buffer, seed=seed, reshuffle_each_iteration=True).repeat()
    seeds = tf.data.Dataset.random(seed=seed).batch(2)
    ds = tf.data.Dataset.zip((passes, seeds)).skip(start_batch * batch_size)
    ds = ds.map(
        lambda pair, s: augment(pair[0], pair[1], s, size=image_size, scale_range=scale_range,
                                ignore_index=ignore_index, random=augment_data,
                                elastic_sigma=elastic_sigma, transpose=transpose,
                                rare_classes=rare_classes, rare_class_crops=rare_class_crops,
                                photometric_args=photometric_args),
        num_parallel_calls=AUTOTUNE, deterministic=True)
    return ds.batch(batch_size, drop_remainder=True).prefetch(AUTOTUNE)


def validation(ds: tf.data.Dataset, *, batch_size: int, ignore_index: int = 255,
               cache: bool = True) -> tf.data.Dataset:
    """Whole images, batched only with images of the same size.

    Padding images of different sizes into one batch would change the predictions near their
    borders (after the first convolution the padded zeros are no longer zeros), so an image's
    score would depend on its batch-mates. Grouping by size keeps every image exactly as it
    would be alone; the model pads each batch to a multiple of 2**depth itself and crops back.
    """
    ds = ds.map(lambda x, y: (tf.image.convert_image_dtype(x, tf.float32), y),
                num_parallel_calls=AUTOTUNE)
    if cache:
        ds = ds.cache()
    size_key = lambda x, y: tf.cast(tf.shape(y)[0] * 65536 + tf.shape(y)[1], tf.int64)  # noqa: E731
    ds = ds.group_by_window(size_key, lambda _, window: window.batch(batch_size),
                            window_size=batch_size)
    return ds.prefetch(AUTOTUNE)
