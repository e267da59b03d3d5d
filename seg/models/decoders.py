"""Up-sampling steps of the decoder, chosen by name (config group `decoder`).

Every block doubles height and width exactly, whatever its kernel: the size ambiguity of
transposed convolutions, (in - 1) * stride + kernel - 2 * pad + output_padding, cannot reach
the skip connections because Keras' 'same' padding fixes the output at in * stride.
"""

from __future__ import annotations

import keras

from seg.models.layers import ICNR, BilinearUpsampleInit, BilinearUpsampling, DepthToSpace


def upsample(x, filters, *, interpolation="nearest", name="up"):
    """Fixed x2 upsampling (UpSampling2D), then a learned 3x3 convolution. No checkerboard."""
    if interpolation not in ("nearest", "bilinear"):
        raise ValueError(f"decoder.interpolation={interpolation!r}: use nearest or bilinear")
    if interpolation == "bilinear":  # Keras' bilinear UpSampling2D fails on unknown sizes
        x = BilinearUpsampling(name=f"{name}_upsample")(x)
    else:
        x = keras.layers.UpSampling2D(2, interpolation=interpolation, name=f"{name}_upsample")(x)
    return keras.layers.Conv2D(filters, 3, padding="same", name=f"{name}_conv")(x)


def deconv(x, filters, *, kernel_size=4, init="he", name="up"):
    """Learned x2 upsampling: Conv2DTranspose, stride 2, 'same' padding.

    init="bilinear" starts it as bilinear upsampling (FCN); kernel_size not divisible by 2
    overlaps unevenly and prints checkerboard artefacts (the preflight check warns).
    """
    inits = {"he": "he_normal", "bilinear": BilinearUpsampleInit()}
    if init not in inits:
        raise ValueError(f"decoder.init={init!r}: use one of {sorted(inits)}")
    return keras.layers.Conv2DTranspose(filters, kernel_size, strides=2, padding="same",
                                        kernel_initializer=inits[init], name=f"{name}_deconv")(x)


def pixelshuffle(x, filters, *, kernel_size=3, name="up"):
    """Sub-pixel convolution (Shi et al. 2016): a convolution to filters * 4 channels, then a
    pixel shuffle to x2 size. ICNR initialisation makes it start without checkerboard."""
    x = keras.layers.Conv2D(filters * 4, kernel_size, padding="same", kernel_initializer=ICNR(2),
                            name=f"{name}_subpixel_conv")(x)
    return DepthToSpace(2, name=f"{name}_shuffle")(x)


DECODERS = {"upsample": upsample, "deconv": deconv, "pixelshuffle": pixelshuffle}


def decoder_kwargs(decoder: str, *, interpolation: str, kernel_size: int, init: str) -> dict:
    """The keywords each decoder takes from the decoder config section."""
    if decoder not in DECODERS:
        raise ValueError(f"decoder.name={decoder!r}: use one of {sorted(DECODERS)}")
    return {"upsample": {"interpolation": interpolation},
            "deconv": {"kernel_size": kernel_size, "init": init},
            "pixelshuffle": {"kernel_size": 3}}[decoder]
