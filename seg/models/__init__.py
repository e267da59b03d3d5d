"""Encoder-decoder segmentation models: any encoder with any decoder, for any input size.

The network pads its input up to a multiple of its total stride (PadToMultiple) and crops its
logits back to the input's size (CropLike), so every skip connection meets a tensor of exactly
its own size and the output always matches the input.
"""

from __future__ import annotations

import keras
import numpy as np

from seg.models.decoders import DECODERS, decoder_kwargs
from seg.models.encoders import (BACKBONES, ENCODERS, NORMS, backbone_encoder, conv_block,
                                 unet_encoder)
from seg.models.hub import hub_encoder, is_hub
from seg.models.layers import (ICNR, ArgMax, BackbonePreprocess, BilinearUpsampleInit,
                               ClassProbabilities, CropLike, DepthToSpace, PadToMultiple)


def build_model(*, num_classes: int, in_channels: int, encoder: str = "unet",
                encoder_weights: str | None = None, freeze_encoder: bool = False,
                depth: int = 3, base_filters: int = 16, norm: str = "batch",
                dropout: float = 0.0, activation: str = "relu", out_channels: int | None = None,
                head_activation: str | None = None, decoder: str = "upsample",
                interpolation: str = "nearest", kernel_size: int = 4, init: str = "he",
                input_size: int | None = None, encoder_args=None, band_stats=None,
                fixed_size: int | None = None) -> keras.Model:
    """Build an encoder-decoder segmentation network with skip connections.

    Args:
        num_classes: classes in the masks (background included). in_channels: image bands
            (any number; a pretrained first layer is adapted, see encoders.adapt_kernel).
        encoder: "unet" (the U-Net's own contracting path, `depth` levels), a Keras
            application (mobilenet_v2, resnet50, efficientnet_b0: 5 levels, stride 32) or
            "hub:<keras-hub preset or backbone class>" (seg/models/hub.py).
        encoder_weights: for a backbone: None, "imagenet" (Keras applications), "pretrained"
            (a keras-hub preset's), or a weights file path (or a local keras-hub preset folder).
        encoder_args: a keras-hub backbone class's arguments (a dict, or "small").
        band_stats: (means, stds) per band: the model standardises its raw input with them
            (16-bit and float images); None: images come in [0, 1].
        fixed_size: the input side for an encoder that needs a fixed square input (MiT).
        freeze_encoder: train the decoder only (a backbone's batch norms stay in inference mode).
        depth, base_filters: U-Net levels and filters at level 0 (doubled per level); the
            decoder uses base_filters * 2**level at every level for every encoder.
        norm: batch | sync_batch | group | layer | none. dropout: at the bottleneck.
        activation: Keras name.
        out_channels: None means num_classes; 1 is a binary sigmoid-style head.
        head_activation: None (logits, recommended), "sigmoid" or "softmax".
        decoder: upsample | deconv | pixelshuffle; interpolation (upsample), kernel_size and
            init (deconv) configure it.
        input_size: a fixed square input size, or None for any size.

    Returns:
        A functional keras.Model from float images [B, H, W, in_channels] in [0, 1] to
        [B, H, W, out_channels] logits (or probabilities with a head_activation).
    """
    _check_choices(encoder, norm, head_activation, out_channels or num_classes, num_classes)
    up_kwargs = decoder_kwargs(decoder, interpolation=interpolation, kernel_size=kernel_size,
                               init=init)
    out_channels = out_channels or num_classes

    inputs, x, skips, levels, notes = _encoder_path(
        encoder, weights=encoder_weights, args=encoder_args, freeze=freeze_encoder,
        in_channels=in_channels, input_size=input_size, fixed_size=fixed_size,
        band_stats=band_stats, depth=depth, base_filters=base_filters, norm=norm,
        activation=activation, dropout=dropout)
    x = _decode(x, skips, levels=levels, decoder=decoder, up_kwargs=up_kwargs,
                base_filters=base_filters, norm=norm, activation=activation)
    x = _head(x, out_channels, head_activation)
    outputs = CropLike(dtype="float32", name="crop_to_input")([x, inputs])
    model = keras.Model(inputs, outputs, name=f"{_model_name(encoder)}_{decoder}")
    model.seg_notes = notes  # what the encoder is and what was adapted (the preflight says it)
    return model


def _encoder_path(encoder: str, *, weights, args, freeze: bool, in_channels: int, input_size,
                  fixed_size, band_stats, depth: int, base_filters: int, norm: str,
                  activation: str, dropout: float):
    """The input, its standardisation (band_stats) and padding, and the encoder.

    Returns:
        (inputs, the bottleneck's features, the skips per level, levels, notes): notes say
        what the encoder is and what was adapted.
    """
    hub_enc = hub_encoder(encoder, weights=weights, args=args, freeze=freeze,
                          in_channels=in_channels,
                          size=input_size or fixed_size) if is_hub(encoder) else None
    if hub_enc is not None and hub_enc.fixed_size:
        input_size = input_size or fixed_size
    levels = hub_enc.levels if hub_enc is not None else levels_of(encoder, depth)
    inputs = keras.Input((input_size, input_size, in_channels), name="image")
    notes = list(hub_enc.notes) if hub_enc is not None else []
    x = inputs
    if band_stats is not None:
        x = band_normalization(band_stats)(x)
        notes.append(f"{in_channels} band(s) standardised with the training split's statistics")
    x = PadToMultiple(2 ** levels, name="pad_to_multiple")(x)
    if hub_enc is not None:
        x, skips = hub_enc(x)
    else:
        x, skips = _encode(x, encoder, levels=levels, input_size=input_size, notes=notes,
                           weights=weights, freeze=freeze, in_channels=in_channels,
                           depth=depth, base_filters=base_filters, norm=norm,
                           activation=activation, dropout=dropout)
    return inputs, x, skips, levels, notes


def _decode(x, skips: list, *, levels: int, decoder: str, up_kwargs: dict, base_filters: int,
            norm: str, activation: str):
    """Up from the bottleneck, level by level: up-sample, concatenate the skip, convolve."""
    for level in reversed(range(levels)):
        filters = base_filters * 2 ** level
        x = DECODERS[decoder](x, filters, name=f"dec{level}_up", **up_kwargs)
        if skips[level] is not None:
            x = keras.layers.Concatenate(name=f"dec{level}_concat")([x, skips[level]])
        x = conv_block(x, filters, norm=norm, activation=activation, name=f"dec{level}")
    return x


def _head(x, out_channels: int, head_activation: str | None):
    """A 1x1 convolution to out_channels logits, in float32, and the activation if any."""
    # A small head initialisation makes every class equally likely at the start, so the
    # initial cross-entropy is ln(C) and the probe before training can check it.
    x = keras.layers.Conv2D(out_channels, 1, dtype="float32", name="head",
                            kernel_initializer=keras.initializers.RandomNormal(stddev=0.01))(x)
    if head_activation:
        x = keras.layers.Activation(head_activation, dtype="float32",
                                    name=f"head_{head_activation}")(x)
    return x


def _check_choices(encoder, norm, head_activation, out_channels, num_classes):
    if encoder not in ENCODERS and not is_hub(encoder):
        raise ValueError(f"model.encoder={encoder!r}: use one of {list(ENCODERS)} or "
                         "hub:<keras-hub preset or backbone class>")
    if norm not in NORMS:
        raise ValueError(f"model.norm={norm!r}: use one of {sorted(NORMS)}")
    if head_activation not in (None, "sigmoid", "softmax"):
        raise ValueError(f"model.head_activation={head_activation!r}: use null, sigmoid or softmax")
    if out_channels == 1 and num_classes != 2:
        raise ValueError(f"model.out_channels=1 needs a binary task, not num_classes={num_classes}")


def _encode(x, encoder: str, *, levels: int, input_size, notes: list, weights, freeze: bool,
            in_channels: int, **unet):
    """The U-Net's own encoder or a Keras application: (deepest features, skips by level)."""
    if encoder == "unet":
        return unet_encoder(x, **unet)
    padded = None if input_size is None else -(-input_size // 2 ** levels) * 2 ** levels
    x, skips, adapted = backbone_encoder(x, encoder, weights=weights, freeze=freeze,
                                         input_size=padded, in_channels=in_channels)
    notes += adapted
    return x, [None] + skips  # no features at stride 1: the last level has no skip


# Standardised bands are mapped to ImageNet's grey mean and spread, what a pretrained first
# layer saw in training (and a [0, 1]-like range for every other layer).
IMAGENET_GREY = (0.449, 0.226)


def band_normalization(band_stats) -> keras.layers.Normalization:
    """The input layer of a model of raw bands: (x - mean) / std per band, then x 0.226 +
    0.449, as one keras Normalization (its statistics are saved with the model)."""
    means, stds = (np.asarray(v, np.float64) for v in band_stats)
    mean, std = IMAGENET_GREY
    stds = np.maximum(stds, 1e-6)
    return keras.layers.Normalization(mean=(means - mean * stds / std).tolist(),
                                      variance=((stds / std) ** 2).tolist(),
                                      name="band_normalization")


def _model_name(encoder: str) -> str:
    return encoder.replace(":", "_").replace("/", "_")


# Parameters of the Keras applications' encoders (include_top=False), and their features'
# channels at strides 2, 4, 8, 16 and 32 (what the decoder's skips concatenate).
BACKBONE_SIZES = {"mobilenet_v2": (1_841_984, (96, 144, 192, 576, 320)),
                  "resnet50": (23_587_712, (64, 256, 512, 1024, 2048)),
                  "efficientnet_b0": (4_049_571, (96, 144, 240, 672, 1280))}
_NORM_PARAMS = {"batch": 4, "sync_batch": 4, "group": 2, "layer": 2, "none": 1}  # per channel


def estimate_parameters(*, num_classes: int, in_channels: int, encoder: str = "unet",
                        depth: int = 3, base_filters: int = 16, norm: str = "batch",
                        out_channels: int | None = None, decoder: str = "upsample",
                        kernel_size: int = 4, **_) -> int:
    """build_model's parameter count, without building it (exact for the U-Net encoder).

    What the resource check weighs before anything is allocated: model.depth=9 would build
    2.2 billion parameters.
    """
    levels, b, per_norm = levels_of(encoder, depth), base_filters, _NORM_PARAMS[norm]

    def block(c_in, f):  # two 3x3 convolutions, each with its norm (or bias)
        return 9 * c_in * f + 9 * f * f + 2 * per_norm * f

    if encoder == "unet":
        total, c = 0, in_channels
        for level in range(depth + 1):  # the levels, then the bottleneck
            total += block(c, b * 2 ** level)
            c = b * 2 ** level
        skips = [b * 2 ** level for level in range(depth)]
    elif encoder in BACKBONE_SIZES:
        total, channels = BACKBONE_SIZES[encoder]
        c, skips = channels[-1], [0] + list(channels[:-1])
    else:  # a keras-hub backbone: its preset's parameters where known, a ResNet-50's features
        total, (c, skips) = _hub_parameters(encoder), (2048, [0, 64, 256, 512, 1024])
    for level in reversed(range(levels)):
        f = b * 2 ** level
        k2, up = (kernel_size ** 2, f) if decoder == "deconv" else (9, 4 * f if decoder ==
                                                                     "pixelshuffle" else f)
        total += k2 * c * up + up
        total += block(f + skips[level], f)
        c = f
    out = out_channels or num_classes
    return int(total + c * out + out)


def _hub_parameters(encoder: str) -> int:
    """A keras-hub preset's parameters from its metadata (offline), or 0 when unknown."""
    try:
        from seg.models.hub import presets  # noqa: PLC0415
        return int(presets().get(encoder[len("hub:"):], (None, None))[1] or 0)
    except Exception:  # noqa: BLE001 (keras-hub missing: the build refuses it, named)
        return 0


def levels_of(encoder: str, depth: int, model: keras.Model | None = None) -> int:
    """Down-sampling levels: `depth` for the U-Net encoder, 5 (stride 32) for a backbone (a
    built model's own padding multiple where given: a keras-hub backbone's deepest stride)."""
    if model is not None and encoder != "unet":
        try:
            return int(np.log2(model.get_layer("pad_to_multiple").multiple))
        except ValueError:
            pass
    return depth if encoder == "unet" else 5


def build_unet(**kwargs) -> keras.Model:
    """build_model with the U-Net encoder (the default)."""
    return build_model(encoder="unet", **kwargs)


def encoder_of(model: keras.Model) -> keras.Model | None:
    """The nested backbone encoder of a model, or None for the U-Net encoder."""
    return next((layer for layer in model.layers if layer.name.endswith("_encoder")), None)


def level_sizes(size: int, depth: int) -> dict:
    """The spatial size at every level for an input side of `size` (the shape plan)."""
    padded = -(-size // 2 ** depth) * 2 ** depth
    enc = [padded // 2 ** lv for lv in range(depth + 1)]
    return {"input": size, "padded": padded, "encoder": enc, "decoder": enc[-2::-1],
            "output": size}


def count_flops(model: keras.Model) -> int:
    """Multiply-add FLOPs (x2) of one forward pass, counted from the convolution and dense
    layers (nested models included). The model needs a fixed input size."""
    total = 0
    for layer in _all_layers(model):
        if isinstance(layer, keras.layers.Conv2DTranspose):
            h, w, c_in = layer.input.shape[1:]
            total += 2 * h * w * c_in * layer.filters * layer.kernel_size[0] * layer.kernel_size[1]
        elif isinstance(layer, keras.layers.DepthwiseConv2D):
            h, w, c = layer.output.shape[1:]
            total += 2 * h * w * c * layer.kernel_size[0] * layer.kernel_size[1]
        elif isinstance(layer, keras.layers.Conv2D):
            h, w, c_out = layer.output.shape[1:]
            c_in = layer.input.shape[-1]
            total += (2 * h * w * c_out * c_in * layer.kernel_size[0] * layer.kernel_size[1]
                      // layer.groups)
        elif isinstance(layer, keras.layers.Dense):
            total += 2 * layer.input.shape[-1] * layer.units
    return int(total)


def _all_layers(model):
    for layer in model.layers:
        if isinstance(layer, keras.Model):
            yield from _all_layers(layer)
        else:
            yield layer


__all__ = ["BACKBONES", "estimate_parameters", "DECODERS", "ENCODERS", "ICNR", "ArgMax",
           "BackbonePreprocess",
           "ClassProbabilities",
           "BilinearUpsampleInit", "CropLike", "DepthToSpace", "PadToMultiple", "build_model",
           "build_unet", "encoder_of", "levels_of", "count_flops", "level_sizes"]
