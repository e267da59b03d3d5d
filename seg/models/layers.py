"""Layers and initialisers of seg's models, all serialisable so .keras files reload."""

from __future__ import annotations

import keras
import numpy as np
import tensorflow as tf
from keras import ops


@keras.saving.register_keras_serializable(package="seg")
class PadToMultiple(keras.layers.Layer):
    """Zero-pads height and width (bottom/right) up to a multiple of `multiple`."""

    def __init__(self, multiple: int, **kwargs):
        super().__init__(**kwargs)
        self.multiple = int(multiple)

    def call(self, x):
        h, w = ops.shape(x)[1], ops.shape(x)[2]
        m = self.multiple
        return ops.pad(x, [[0, 0], [0, (m - h % m) % m], [0, (m - w % m) % m], [0, 0]])

    def compute_output_shape(self, shape):
        up = lambda d: None if d is None else -(-d // self.multiple) * self.multiple  # noqa: E731
        return (shape[0], up(shape[1]), up(shape[2]), shape[3])

    def get_config(self):
        return {**super().get_config(), "multiple": self.multiple}


@keras.saving.register_keras_serializable(package="seg")
class CropLike(keras.layers.Layer):
    """Crops x (bottom/right) to the height and width of a reference tensor."""

    def call(self, inputs):
        x, reference = inputs
        return x[:, : ops.shape(reference)[1], : ops.shape(reference)[2], :]

    def compute_output_shape(self, shapes):
        x, reference = shapes
        return (x[0], reference[1], reference[2], x[3])


@keras.saving.register_keras_serializable(package="seg")
class BilinearUpsampling(keras.layers.Layer):
    """x2 bilinear upsampling of inputs of any height and width.

    The same resize as keras.layers.UpSampling2D(interpolation="bilinear"), which fails inside
    model.fit when height and width are unknown (validation on whole images of any size):
    Keras 3.15 turns the symbolic new size into a Python bool there.
    """

    def call(self, x):
        return tf.image.resize(x, tf.shape(x)[1:3] * 2, method="bilinear")

    def compute_output_shape(self, shape):
        double = lambda d: None if d is None else 2 * d  # noqa: E731
        return (shape[0], double(shape[1]), double(shape[2]), shape[3])


@keras.saving.register_keras_serializable(package="seg")
class DepthToSpace(keras.layers.Layer):
    """Sub-pixel rearrangement (pixel shuffle): [H, W, C * r * r] -> [H * r, W * r, C].

    Keras has no pixel-shuffle layer; tf.nn.depth_to_space is the operation.
    """

    def __init__(self, block_size: int = 2, **kwargs):
        super().__init__(**kwargs)
        self.block_size = int(block_size)

    def call(self, x):
        return tf.nn.depth_to_space(x, self.block_size)

    def compute_output_shape(self, shape):
        r = self.block_size
        scale = lambda d: None if d is None else d * r  # noqa: E731
        return (shape[0], scale(shape[1]), scale(shape[2]), shape[3] // (r * r))

    def get_config(self):
        return {**super().get_config(), "block_size": self.block_size}


# How each Keras application backbone expects its [0, 1] input (BGR means for RGB, their mean
# for any other band count).
PREPROCESS = {
    "tf": lambda x: x * 2.0 - 1.0,  # MobileNetV2: [-1, 1]
    "caffe": lambda x: (x[..., ::-1] * 255.0 - ops.convert_to_tensor([103.939, 116.779, 123.68])
                        if x.shape[-1] == 3 else x * 255.0 - 114.799),
    "raw255": lambda x: x * 255.0,  # EfficientNet normalises inside the model
    "unit": lambda x: x,  # only grey repeated to RGB
}


@keras.saving.register_keras_serializable(package="seg")
class BackbonePreprocess(keras.layers.Layer):
    """Maps [0, 1] images to what a pretrained backbone expects (inside the model, so a saved
    model takes the same images as the pipeline gives it). Grayscale is repeated to RGB."""

    def __init__(self, mode: str, **kwargs):
        super().__init__(**kwargs)
        if mode not in PREPROCESS:
            raise ValueError(f"preprocessing mode {mode!r}: use one of {sorted(PREPROCESS)}")
        self.mode = mode

    def call(self, x):
        if x.shape[-1] == 1:
            x = ops.concatenate([x, x, x], axis=-1)
        return PREPROCESS[self.mode](x)

    def compute_output_shape(self, shape):
        return (*shape[:3], 3 if shape[-1] in (1, 3) else shape[-1])

    def get_config(self):
        return {**super().get_config(), "mode": self.mode}


@keras.saving.register_keras_serializable(package="seg")
class ScaleOffset(keras.layers.Layer):
    """x * scale + offset per band: a keras-hub preset's preprocessing, inside the model."""

    def __init__(self, scale, offset, **kwargs):
        super().__init__(**kwargs)
        self.scale, self.offset = [float(v) for v in scale], [float(v) for v in offset]

    def call(self, x):
        return x * ops.convert_to_tensor(self.scale, x.dtype) + \
            ops.convert_to_tensor(self.offset, x.dtype)

    def compute_output_shape(self, shape):
        return shape

    def get_config(self):
        return {**super().get_config(), "scale": self.scale, "offset": self.offset}


@keras.saving.register_keras_serializable(package="seg")
class BilinearUpsampleInit(keras.initializers.Initializer):
    """Conv2DTranspose kernel that starts as bilinear upsampling (FCN, Long et al. 2015).

    Kernel shape is (k, k, out_channels, in_channels). Each output channel averages the input
    channels assigned to it (i % out), each upsampled with the same bilinear filter, so with
    stride 2, kernel 4 and equal channel counts the layer is exactly bilinear x2 upsampling.
    """

    def __call__(self, shape, dtype=None):
        k, _, n_out, n_in = shape
        factor = (k + 1) // 2
        centre = factor - 1 if k % 2 == 1 else factor - 0.5
        f1 = 1 - np.abs(np.arange(k) - centre) / factor
        filt = np.outer(f1, f1)
        kernel = np.zeros(shape, np.float32)
        for i in range(n_in):
            kernel[:, :, i % n_out, i] = filt
        if n_in < n_out:
            for o in range(n_in, n_out):
                kernel[:, :, o, o % n_in] = filt
        counts = np.maximum((kernel.sum(axis=(0, 1)) > 0).sum(axis=1), 1)  # inputs per output
        kernel /= counts[None, None, :, None]
        return ops.convert_to_tensor(kernel, dtype=dtype or "float32")


@keras.saving.register_keras_serializable(package="seg")
class ICNR(keras.initializers.Initializer):
    """ICNR (Aitken et al. 2017): a sub-pixel convolution kernel whose r*r sub-pixels start
    identical, so conv + pixel shuffle starts as a convolution + nearest upsampling and shows no
    checkerboard. Kernel shape (k, k, in, out * r * r), channel order of tf.nn.depth_to_space."""

    def __init__(self, scale: int = 2, seed=None):
        self.scale, self.seed = int(scale), seed

    def __call__(self, shape, dtype=None):
        k1, k2, n_in, n_out = shape
        base = keras.initializers.HeNormal(seed=self.seed)((k1, k2, n_in, n_out // self.scale ** 2),
                                                           dtype=dtype)
        return ops.tile(base, (1, 1, 1, self.scale ** 2))

    def get_config(self):
        return {"scale": self.scale, "seed": self.seed}


@keras.saving.register_keras_serializable(package="seg")
class ClassProbabilities(keras.layers.Layer):
    """Model outputs -> class probabilities [B, H, W, K], always in float32.

    Softmax over the channels of logits; a 1-channel head gives K = 2 ([1 - p, p]). With
    from_logits=False the outputs are taken as probabilities already.
    """

    def __init__(self, from_logits: bool = True, **kwargs):
        super().__init__(**kwargs)
        self.from_logits = bool(from_logits)

    def call(self, x):
        x = ops.cast(x, "float32")
        if x.shape[-1] == 1:
            p = ops.sigmoid(x) if self.from_logits else x
            return ops.concatenate([1 - p, p], axis=-1)
        return ops.softmax(x, axis=-1) if self.from_logits else x

    def compute_output_shape(self, shape):
        return shape[:-1] + (2 if shape[-1] == 1 else shape[-1],)

    def get_config(self):
        return {**super().get_config(), "from_logits": self.from_logits}


@keras.saving.register_keras_serializable(package="seg")
class ArgMax(keras.layers.Layer):
    """Class probabilities [B, H, W, K] -> class index [B, H, W] (int32)."""

    def call(self, x):
        return ops.cast(ops.argmax(x, axis=-1), "int32")

    def compute_output_shape(self, shape):
        return shape[:-1]
