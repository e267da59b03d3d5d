"""U-Net builder with swappable decoders (upsampling + convolution, or transposed convolution).

Any input size works: the network pads its input up to a multiple of 2**depth (PadToMultiple)
and crops its logits back to the input's size (CropLike), so every skip connection meets a
tensor of exactly its own size and the output always matches the input.
"""

from __future__ import annotations

import numpy as np
import keras
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
        og = np.arange(k)
        f1 = 1 - np.abs(og - centre) / factor
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


NORMS = {
    # momentum 0.9 (PyTorch's default) rather than Keras' 0.99: the moving statistics used at
    # inference then follow the weights within tens of steps, so short runs and early epochs
    # do not validate (and look collapsed) with stale statistics.
    "batch": lambda name: keras.layers.BatchNormalization(momentum=0.9, name=name),
    "group": lambda name: keras.layers.GroupNormalization(groups=8, name=name),
    "layer": lambda name: keras.layers.LayerNormalization(name=name),
    "none": None,
}


def _conv_block(x, filters, *, norm, activation, name):
    for i in (1, 2):
        x = keras.layers.Conv2D(filters, 3, padding="same", use_bias=NORMS[norm] is None,
                                name=f"{name}_conv{i}")(x)
        if NORMS[norm] is not None:
            x = NORMS[norm](f"{name}_norm{i}")(x)
        x = keras.layers.Activation(activation, name=f"{name}_act{i}")(x)
    return x


def upsample(x, filters, *, interpolation="nearest", name="up"):
    """Fixed x2 upsampling (UpSampling2D), then a learned 3x3 convolution."""
    x = keras.layers.UpSampling2D(2, interpolation=interpolation, name=f"{name}_upsample")(x)
    return keras.layers.Conv2D(filters, 3, padding="same", name=f"{name}_conv")(x)


def deconv(x, filters, *, kernel_size=4, init="he", name="up"):
    """Learned x2 upsampling: Conv2DTranspose with stride 2 and 'same' padding.

    With 'same' padding Keras fixes the output at exactly 2x the input for any kernel size, so
    the size ambiguity of transposed convolutions cannot reach the skip connections.
    """
    inits = {"he": "he_normal", "bilinear": BilinearUpsampleInit()}
    if init not in inits:
        raise ValueError(f"decoder.init={init!r}: use one of {sorted(inits)}")
    return keras.layers.Conv2DTranspose(filters, kernel_size, strides=2, padding="same",
                                        kernel_initializer=inits[init], name=f"{name}_deconv")(x)


DECODERS = {"upsample": upsample, "deconv": deconv}


def build_unet(*, num_classes: int, in_channels: int, depth: int = 3, base_filters: int = 16,
               norm: str = "batch", dropout: float = 0.0, activation: str = "relu",
               out_channels: int | None = None, head_activation: str | None = None,
               decoder: str = "upsample", interpolation: str = "nearest", kernel_size: int = 4,
               init: str = "he", input_size: int | None = None) -> keras.Model:
    """Build a U-Net whose up-sampling step is chosen by name.

    Args:
        num_classes: classes in the masks (background included).
        in_channels: image channels (1 or 3).
        depth: number of 2x down-samplings; base_filters: filters at level 0, doubled per level.
        norm: batch | group | layer | none. dropout: rate at the bottleneck.
        activation: Keras activation name for the convolution blocks.
        out_channels: output channels; None means num_classes. 1 is a binary sigmoid-style head.
        head_activation: None (logits, recommended), "sigmoid" or "softmax".
        decoder: "upsample" or "deconv"; interpolation is used by upsample, kernel_size and init
            by deconv.
        input_size: fixed square input size, or None for any size.

    Returns:
        A functional keras.Model mapping float images [B, H, W, in_channels] to
        [B, H, W, out_channels] logits (or probabilities with a head_activation).
    """
    if decoder not in DECODERS:
        raise ValueError(f"decoder.name={decoder!r}: use one of {sorted(DECODERS)}")
    if norm not in NORMS:
        raise ValueError(f"model.norm={norm!r}: use one of {sorted(NORMS)}")
    out_channels = out_channels or num_classes
    if out_channels == 1 and num_classes != 2:
        raise ValueError(f"model.out_channels=1 needs a binary task, not num_classes={num_classes}")
    up_kwargs = ({"interpolation": interpolation} if decoder == "upsample"
                 else {"kernel_size": kernel_size, "init": init})

    inputs = keras.Input((input_size, input_size, in_channels), name="image")
    x = PadToMultiple(2 ** depth, name="pad_to_multiple")(inputs)
    skips = []
    for level in range(depth):
        x = _conv_block(x, base_filters * 2 ** level, norm=norm, activation=activation,
                        name=f"enc{level}")
        skips.append(x)
        x = keras.layers.MaxPooling2D(2, name=f"enc{level}_pool")(x)
    x = _conv_block(x, base_filters * 2 ** depth, norm=norm, activation=activation,
                    name="bottleneck")
    if dropout:
        x = keras.layers.Dropout(dropout, name="bottleneck_dropout")(x)
    for level in reversed(range(depth)):
        filters = base_filters * 2 ** level
        x = DECODERS[decoder](x, filters, name=f"dec{level}_up", **up_kwargs)
        x = keras.layers.Concatenate(name=f"dec{level}_concat")([x, skips[level]])
        x = _conv_block(x, filters, norm=norm, activation=activation, name=f"dec{level}")
    # A small head initialisation makes every class equally likely at the start, so the
    # initial loss is ln(C) and the probe before training can check it.
    x = keras.layers.Conv2D(out_channels, 1, dtype="float32", name="head",
                            kernel_initializer=keras.initializers.RandomNormal(stddev=0.01))(x)
    if head_activation:
        x = keras.layers.Activation(head_activation, dtype="float32", name=f"head_{head_activation}")(x)
    outputs = CropLike(dtype="float32", name="crop_to_input")([x, inputs])
    return keras.Model(inputs, outputs, name=f"unet_{decoder}")


def level_sizes(size: int, depth: int) -> dict:
    """The spatial size at every level for an input side of `size` (the shape plan)."""
    padded = -(-size // 2 ** depth) * 2 ** depth
    enc = [padded // 2 ** lv for lv in range(depth + 1)]
    return {"input": size, "padded": padded, "encoder": enc, "decoder": enc[-2::-1],
            "output": size}
