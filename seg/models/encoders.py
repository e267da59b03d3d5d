"""Encoders, chosen by name (`model.encoder`): the U-Net's own, or a Keras application backbone.

An encoder maps the (padded) image to (deepest features, skips), the skips ordered from the
shallowest (stride 1 for the U-Net, stride 2 for a backbone) to the deepest.
"""

from __future__ import annotations

from pathlib import Path

import keras
import numpy as np

from seg.models.layers import BackbonePreprocess

# Keras application, the layers whose outputs are the features at strides 2, 4, 8, 16 and 32,
# and the input preprocessing the application's weights were trained with.
BACKBONES = {
    "mobilenet_v2": ("MobileNetV2", ["block_1_expand_relu", "block_3_expand_relu",
                                     "block_6_expand_relu", "block_13_expand_relu",
                                     "block_16_project"], "tf"),
    "resnet50": ("ResNet50", ["conv1_relu", "conv2_block3_out", "conv3_block4_out",
                              "conv4_block6_out", "conv5_block3_out"], "caffe"),
    "efficientnet_b0": ("EfficientNetB0", ["block2a_expand_activation",
                                           "block3a_expand_activation",
                                           "block4a_expand_activation",
                                           "block6a_expand_activation", "top_activation"],
                        "raw255"),
}
ENCODERS = ("unet", *BACKBONES)

NORMS = {
    # momentum 0.9 (PyTorch's default) rather than Keras' 0.99: the moving statistics used at
    # inference then follow the weights within tens of steps, so short runs and early epochs
    # do not validate (and look collapsed) with stale statistics.
    "batch": lambda name: keras.layers.BatchNormalization(momentum=0.9, name=name),
    # batch statistics over the global batch, all-reduced between replicas (what a
    # distributed run uses for "batch": every replica then keeps the same moving statistics)
    "sync_batch": lambda name: keras.layers.BatchNormalization(momentum=0.9, synchronized=True,
                                                               name=name),
    "group": lambda name: keras.layers.GroupNormalization(groups=8, name=name),
    "layer": lambda name: keras.layers.LayerNormalization(name=name),
    "none": None,
}


def conv_block(x, filters, *, norm, activation, name):
    """Two 3x3 convolutions, each followed by the normalisation and the activation."""
    for i in (1, 2):
        x = keras.layers.Conv2D(filters, 3, padding="same", use_bias=NORMS[norm] is None,
                                name=f"{name}_conv{i}")(x)
        if NORMS[norm] is not None:
            x = NORMS[norm](f"{name}_norm{i}")(x)
        x = keras.layers.Activation(activation, name=f"{name}_act{i}")(x)
    return x


def unet_encoder(x, *, depth, base_filters, norm, activation, dropout):
    """The U-Net's contracting path: skips at strides 1 .. 2**(depth-1), bottleneck at 2**depth."""
    skips = []
    for level in range(depth):
        x = conv_block(x, base_filters * 2 ** level, norm=norm, activation=activation,
                       name=f"enc{level}")
        skips.append(x)
        x = keras.layers.MaxPooling2D(2, name=f"enc{level}_pool")(x)
    x = conv_block(x, base_filters * 2 ** depth, norm=norm, activation=activation,
                   name="bottleneck")
    if dropout:
        x = keras.layers.Dropout(dropout, name="bottleneck_dropout")(x)
    return x, skips


def adapt_kernel(kernel: np.ndarray, bands: int) -> np.ndarray:
    """A first-layer kernel [..., 3, out] for `bands` input bands [..., bands, out], as SMP does.

    Fewer than 3 bands: every band gets the RGB filters' sum divided by the band count, so a
    grey image given as `bands` copies gives exactly the output of the grey image as RGB. More
    than 3: the RGB filters repeat (R, G, B, R, ...) scaled by 3 / bands, so bands that repeat
    the RGB image give exactly the RGB output. The same for a per-band vector (a
    normalisation's mean or variance): its RGB mean for every band.
    """
    kernel = np.asarray(kernel)
    if kernel.ndim == 1:
        return np.full((bands,), kernel.mean(), kernel.dtype)
    if bands < 3:
        summed = kernel.sum(axis=-2, keepdims=True) / bands
        return np.repeat(summed, bands, axis=-2).astype(kernel.dtype)
    index = np.arange(bands) % 3
    return (np.take(kernel, index, axis=-2) * (3.0 / bands)).astype(kernel.dtype)


def _bands_differ(a: tuple, b: tuple) -> bool:
    """Shapes that differ only in their input-band axis, from 3 (a kernel or a vector)."""
    if len(a) == len(b) == 1:
        return a[0] == 3
    return len(a) == len(b) == 4 and a[2] == 3 and a[:2] == b[:2] and a[3] == b[3]


def transfer_weights(source: keras.Model, target: keras.Model) -> list[str]:
    """Copy the weights of `source` into `target`, the same architecture built for another
    number of input bands: weights whose band axis differs are adapted (adapt_kernel).

    Returns what was adapted, one line each (what the preflight reports).
    """
    src, dst = source.weights, target.weights
    if len(src) != len(dst):
        raise ValueError(f"{target.name}: {len(dst)} weights, the pretrained one has "
                         f"{len(src)}: not the same architecture")
    adapted = []
    for a, b in zip(src, dst, strict=False):
        value = keras.ops.convert_to_numpy(a)
        if tuple(a.shape) != tuple(b.shape):
            if not _bands_differ(tuple(a.shape), tuple(b.shape)):
                raise ValueError(f"{b.path}: shape {tuple(b.shape)}, the pretrained one is "
                                 f"{tuple(a.shape)}")
            bands = b.shape[0] if len(b.shape) == 1 else b.shape[2]
            value = adapt_kernel(value, bands)
            how = ("RGB filters summed" if bands < 3 else "RGB filters repeated, x 3/N") \
                if value.ndim == 4 else "RGB statistics averaged"
            adapted.append(f"{b.path} {tuple(a.shape)} -> {tuple(b.shape)}: {how} for {bands} "
                           "band(s)")
        b.assign(value)
    return adapted


def backbone_encoder(x, name: str, *, weights=None, freeze: bool = False,
                     input_size: int | None = None, in_channels: int = 3,
                     preprocess: bool = True):
    """A Keras application as encoder: skips at strides 2, 4, 8, 16 and features at 32.

    Args:
        weights: None (random), "imagenet" (downloaded by Keras, only when asked), or the path
            of a weights file (works offline).
        freeze: make the encoder untrainable (its batch norms then run in inference mode).
        in_channels: input bands; 1 is repeated to RGB; other counts than 1 and 3 get an
            encoder built for them, pretrained weights adapted (adapt_kernel).

    Returns:
        (features at stride 32, skips at strides 2..16, notes on what was adapted)
    """
    app, layers, mode = BACKBONES[name]
    if weights not in (None, "imagenet") and not Path(str(weights)).is_file():
        raise ValueError(f"model.encoder_weights={weights!r}: no such weights file "
                         "(use null, imagenet or the path of a weights file)")
    bands = 3 if in_channels in (1, 3) else in_channels
    if preprocess or in_channels == 1:
        x = BackbonePreprocess(mode if preprocess else "unit", name=f"{name}_preprocess")(x)
    try:
        base = getattr(keras.applications, app)(include_top=False, weights=weights,
                                                input_shape=(input_size, input_size, 3))
    except Exception as e:  # noqa: BLE001 (a download or a file Keras cannot read: say which)
        if weights is None:
            raise
        first = (str(e).strip().splitlines() or [type(e).__name__])[0][:300]
        raise ValueError(
            f"model.encoder_weights={weights!r}: cannot load the {name} weights "
            f"({type(e).__name__}: {first}); " + (
                "the imagenet weights are downloaded by Keras: check the network, or give the "
                "path of a local weights file" if weights == "imagenet" else
                f"give a Keras weights file of {app} (include_top=False)")) from None
    notes = []
    if bands != 3:
        banded = getattr(keras.applications, app)(include_top=False, weights=None,
                                                  input_shape=(input_size, input_size, bands))
        notes = transfer_weights(base, banded) if weights is not None else []
        base = banded
    for layer in base.layers:
        if isinstance(layer, keras.layers.BatchNormalization):
            # Keras' applications use momentum 0.99-0.999; like our own blocks (see NORMS),
            # 0.9 lets the inference statistics follow training within tens of steps.
            layer.momentum = 0.9
    encoder = keras.Model(base.input, [base.get_layer(n).output for n in layers],
                          name=f"{name}_encoder")
    encoder.trainable = not freeze
    *skips, x = encoder(x)
    return x, skips, notes
