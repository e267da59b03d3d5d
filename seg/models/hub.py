"""keras-hub backbones as U-Net encoders: model.encoder=hub:<preset or BackboneClass>.

Any keras-hub FeaturePyramidBackbone (ResNet, EfficientNet, CSPNet, MiT, DenseNet, MobileNet,
VGG, ...) gives the decoder its skips: `pyramid_outputs` holds features at strides 2 .. 32 (or
4 .. 32); each becomes the skip of the level of its stride, measured, not read off its name
(MiT's "P1" is at stride 4). A preset brings its own preprocessing (the scale and offset of its
ImageConverter) into the model.

keras-hub is an optional extra (`pip install -e ".[hub]"`): it pulls tensorflow-text,
sentencepiece, tokenizers and kagglehub, and its import costs seconds, so seg imports it only
when a hub encoder is asked for. Downloads happen only for a preset (its config, and its weights
with model.encoder_weights=pretrained); a backbone class with model.encoder_args, or a local
preset folder, works offline.
"""

from __future__ import annotations

import difflib
import inspect
import math
from dataclasses import dataclass
from pathlib import Path

import keras
import numpy as np

PREFIX = "hub:"
INSTALL = 'pip install -e ".[hub]"  (keras-hub; Python 3.11 or newer)'

# Small architectures of four families (random weights, built offline): what the tests and the
# encoder table use, and what `model.encoder_args=small` gives. Real work uses a preset.
SMALL = {
    "ResNetBackbone": dict(input_conv_filters=[64], input_conv_kernel_sizes=[7],
                           stackwise_num_filters=[64, 64, 96, 128],
                           stackwise_num_blocks=[1, 1, 1, 1], stackwise_num_strides=[1, 2, 2, 2],
                           block_type="basic_block"),
    "EfficientNetBackbone": dict(
        stackwise_width_coefficients=[1.0] * 5, stackwise_depth_coefficients=[1.0] * 5,
        stackwise_kernel_sizes=[3] * 5, stackwise_num_repeats=[1] * 5,
        stackwise_input_filters=[16, 16, 24, 40, 64], stackwise_output_filters=[16, 24, 40, 64, 96],
        stackwise_expansion_ratios=[1, 4, 4, 4, 4], stackwise_squeeze_and_excite_ratios=[0.25] * 5,
        stackwise_strides=[1, 2, 2, 2, 2], stackwise_block_types=["v1"] * 5, num_features=96),
    "CSPNetBackbone": dict(stem_filters=16, stem_kernel_size=3, stem_strides=2,
                           stackwise_depth=[1, 1, 1, 1], stackwise_strides=2,
                           stackwise_num_filters=[32, 48, 64, 96], block_type="bottleneck_block",
                           stage_type="csp", bottle_ratio=[0.5], block_ratio=[1.0],
                           expand_ratio=[2.0]),
    "MiTBackbone": dict(layerwise_depths=[1, 1, 1, 1], num_layers=4,
                        layerwise_num_heads=[1, 1, 2, 2], layerwise_sr_ratios=[8, 4, 2, 1],
                        max_drop_path_rate=0.0, layerwise_patch_sizes=[7, 3, 3, 3],
                        layerwise_strides=[4, 2, 2, 2], hidden_dims=[16, 32, 48, 64]),
}
SHAPE_KEYS = ("image_shape", "input_shape")  # the constructor argument of the input's shape


class HubError(ValueError):
    """A hub encoder that cannot be built as asked; the message says what to do."""


def keras_hub():
    """The keras_hub module, or a refusal with the install command."""
    try:
        import keras_hub as kh  # noqa: PLC0415 (optional and slow to import: only when asked)
    except ImportError:
        raise HubError(f"model.encoder=hub:...: keras-hub is not installed: {INSTALL}") from None
    return kh


def is_hub(encoder: str) -> bool:
    return isinstance(encoder, str) and encoder.startswith(PREFIX)


def pyramid_classes(kh=None) -> dict[str, type]:
    """keras-hub's backbone classes with pyramid outputs, by name."""
    kh = kh or keras_hub()
    return {n: c for n, c in vars(kh.models).items()
            if isinstance(c, type) and n.endswith("Backbone") and n != "FeaturePyramidBackbone"
            and issubclass(c, kh.models.FeaturePyramidBackbone)}


def presets(kh=None) -> dict[str, tuple[str, int | None]]:
    """Preset name -> (backbone class, parameters) for every pyramid backbone's presets
    (keras-hub's own metadata, offline)."""
    out = {}
    for cls_name, cls in pyramid_classes(kh).items():
        for name, info in getattr(cls, "presets", {}).items():
            out[name] = (cls_name, (info.get("metadata") or {}).get("params"))
    return out


def _shape_key(config: dict) -> str:
    key = next((k for k in SHAPE_KEYS if k in config), None)
    if key is None:
        raise HubError(f"keras-hub backbone {config.get('name')!r} has no image_shape argument: "
                       "it cannot be given images of another size or band count")
    return key


def _source_backbone(name: str, weights, args, kh, size: int | None = None, bands: int = 3):
    """(backbone as its class or preset defines it, ImageConverter or None, described).

    A class is built for any size, or for `size` where it needs a fixed input; for `bands`
    bands when it gets no weights (else for 3, adapted after loading them)."""
    classes = pyramid_classes(kh)
    if name in classes:
        backbone = _class_backbone(name, classes[name], weights, args, size,
                                   bands if weights is None else 3)
        return backbone, None, f"keras-hub {name} (random weights)"
    local = weights not in (None, "pretrained") and Path(str(weights)).is_dir()
    known = presets(kh)
    if name not in known and not local:
        near = difflib.get_close_matches(name, list(known), n=5, cutoff=0.6)
        raise HubError(
            f"model.encoder=hub:{name}: not a keras-hub preset nor a backbone class with "
            f"pyramid outputs" + (f" (similar presets: {', '.join(near)})" if near else "")
            + "; python scripts/encoders.py lists them")
    source = str(weights) if local else name
    try:  # a weights file is loaded afterwards: the preset's own weights only when asked
        backbone = kh.models.Backbone.from_preset(source,
                                                  load_weights=weights == "pretrained" or local)
    except Exception as e:  # noqa: BLE001 (a download or a file keras-hub cannot read)
        first = (str(e).strip().splitlines() or [type(e).__name__])[0][:300]
        raise HubError(
            f"model.encoder=hub:{name}: cannot load the preset ({type(e).__name__}: {first}); "
            "a preset's config (and, with model.encoder_weights=pretrained, its weights) is "
            "downloaded from Kaggle: check the network, or give a local preset folder as "
            "model.encoder_weights=DIR") from None
    try:
        converter = kh.layers.ImageConverter.from_preset(source)
    except Exception:  # noqa: BLE001 (a preset without an image converter: no preprocessing)
        converter = None
    how = "pretrained" if weights is not None else "random weights"
    return backbone, converter, (f"keras-hub preset {name} ({how}, "
                                 f"{backbone.count_params():,} parameters)")


def _class_backbone(name: str, cls: type, weights, args, size: int | None, bands: int):
    """A backbone class built from model.encoder_args (a mapping, or "small")."""
    if weights == "pretrained":
        raise HubError(f"model.encoder=hub:{name}: a backbone class has no pretrained "
                       f"weights; name a preset (python scripts/encoders.py lists them)")
    if args is None:
        raise HubError(
            f"model.encoder=hub:{name}: give the class's arguments as model.encoder_args "
            f"(a dict), or model.encoder_args=small for seg's small {name} (random weights),"
            " or name a preset (python scripts/encoders.py lists them)")
    if args == "small" and name not in SMALL:
        raise HubError(f"model.encoder_args=small: seg has small configs of "
                       f"{sorted(SMALL)} only, not {name}; give the arguments as a dict")
    kwargs = dict(SMALL[name]) if args == "small" else dict(args)
    signature = inspect.signature(cls)
    key = next(k for k in SHAPE_KEYS if k in signature.parameters)
    try:
        signature.bind(**{key: None, **kwargs})
    except TypeError as e:  # a missing or unknown argument
        raise HubError(f"model.encoder_args for {name}: {e}") from None
    try:
        try:
            backbone = cls(**{key: (None, None, bands), **kwargs})
        except TypeError:  # a backbone that computes with its static size (MiT)
            if size is None:
                raise HubError(f"keras-hub {name} needs a fixed square input: give the "
                               "model an input size (data.image_size)") from None
            backbone = cls(**{key: (size, size, bands), **kwargs})
    except (TypeError, ValueError) as e:
        if isinstance(e, HubError):
            raise
        raise HubError(f"model.encoder_args for {name}: {e}") from None
    backbone._seg_arguments = {k: v for k, v in kwargs.items() if k not in backbone.get_config()}
    return backbone


def _rebuilt(backbone, in_channels: int, size: int | None):
    """The backbone's architecture for `in_channels` bands (and a fixed size where it needs
    one), with its weights carried over, the first layer adapted; (backbone, adapted notes)."""
    from seg.models.encoders import transfer_weights  # noqa: PLC0415

    config = {**backbone.get_config(), **_known_arguments(backbone)}
    key = _shape_key(config)
    shape = tuple(config[key] or (None, None, 3))
    dynamic = shape[0] is None
    want = (None, None, in_channels) if dynamic else (size, size, in_channels)
    if not dynamic and size is None:
        raise HubError(f"keras-hub {type(backbone).__name__} needs a fixed square input: "
                       "give the model an input size")
    if want == shape:
        return backbone, []
    config[key] = want
    new = type(backbone).from_config(config)
    new._seg_arguments = _known_arguments(backbone)
    try:
        return new, transfer_weights(backbone, new)
    except ValueError as e:  # a config that does not rebuild the same architecture
        raise HubError(f"keras-hub {type(backbone).__name__} rebuilt for {in_channels} band(s) "
                       f"is not the same architecture ({e}): use 3-band images with it") from None


def _strides(features: keras.Model, in_channels: int, fixed: int | None) -> list[int]:
    """Each pyramid output's stride, measured on a blank image."""
    side = fixed or 64
    outs = features(np.zeros((1, side, side, in_channels), np.float32))
    return [side // int(o.shape[1]) for o in outs]


@keras.saving.register_keras_serializable(package="seg")
class HubFeatures(keras.layers.Layer):
    """A keras-hub backbone as one layer: image -> its pyramid maps at ascending strides.

    Saved as the backbone's class and constructor config (keras-hub's own serialisation), not
    layer by layer: some keras-hub layers (MiT's) cannot be rebuilt from their own configs.
    """

    def __init__(self, backbone_class: str, backbone_config: dict, outputs: list[str],
                 backbone=None, **kwargs):
        super().__init__(**kwargs)
        self.backbone_class, self.outputs = backbone_class, list(outputs)
        self.backbone_config = dict(backbone_config)
        if backbone is None:
            kh = keras_hub()
            backbone = getattr(kh.models, backbone_class).from_config(self.backbone_config)
        self.backbone = backbone
        pyramid = [backbone.pyramid_outputs[k] for k in self.outputs]
        # the same layers and variables (tracked through self.backbone) with every map out
        object.__setattr__(self, "_features", keras.Model(backbone.input, pyramid))

    def call(self, x):
        return self._features(x)

    def compute_output_spec(self, x):
        return self._features.compute_output_spec(x)

    def get_config(self):
        return {**super().get_config(), "backbone_class": self.backbone_class,
                "backbone_config": self.backbone_config, "outputs": self.outputs}


@dataclass
class HubEncoder:
    """A keras-hub backbone made ready for the decoder (what build_model needs of it)."""

    features: keras.Model  # image -> the pyramid's feature maps, deepest last
    strides: list[int]  # of each feature map, ascending
    preprocess: keras.layers.Layer | None  # the preset's scale and offset
    fixed_size: int | None  # the square input side a fixed-size backbone (MiT) was built for
    notes: list[str]  # what it is, and what was adapted (the preflight reports them)

    @property
    def levels(self) -> int:
        return int(math.log2(max(self.strides)))

    def __call__(self, x):
        """(deepest features, skips by level: the map at stride 2**level, or None)."""
        if self.preprocess is not None:
            x = self.preprocess(x)
        outs = self.features(x)
        outs = outs if isinstance(outs, (list, tuple)) else [outs]
        skips: list = [None] * self.levels
        for stride, out in zip(self.strides[:-1], outs[:-1], strict=False):
            skips[int(math.log2(stride))] = out
        return outs[-1], skips


def hub_encoder(encoder: str, *, weights=None, args=None, freeze: bool = False,
                in_channels: int = 3, size: int | None = None,
                preprocess: bool = True) -> HubEncoder:
    """Build model.encoder=hub:<preset or class> for `in_channels` bands.

    `size` is the square input side for backbones that need a fixed input (MiT): it is padded
    up to a multiple of 32. `preprocess` puts the preset's scale and offset into the model (off
    for standardised bands).
    """
    from seg.models.layers import ScaleOffset  # noqa: PLC0415

    kh = keras_hub()
    name = encoder[len(PREFIX):]
    size = None if size is None else -(-size // 32) * 32
    backbone, converter, described = _source_backbone(name, weights, args, kh, size,
                                                      in_channels)
    if weights not in (None, "pretrained") and Path(str(weights)).is_file():
        try:
            backbone.load_weights(str(weights))
        except Exception as e:  # noqa: BLE001
            raise HubError(f"model.encoder_weights={weights!r}: cannot load into {name} "
                           f"({type(e).__name__}: {str(e)[:200]})") from None
    backbone, adapted = _rebuilt(backbone, in_channels, size)
    fixed = backbone.get_config()[_shape_key(backbone.get_config())][0]
    pyramid = list(backbone.pyramid_outputs.values())
    strides = _strides(keras.Model(backbone.input, pyramid), in_channels, fixed)
    if any(s < 2 or s & (s - 1) for s in strides):
        raise HubError(f"model.encoder=hub:{name}: pyramid strides {strides} are not powers of 2")
    order = sorted(range(len(strides)), key=strides.__getitem__)
    keys = list(backbone.pyramid_outputs)
    config = {**backbone.get_config(), **_known_arguments(backbone)}
    features = HubFeatures(type(backbone).__name__, config, [keys[i] for i in order],
                           backbone=backbone, name=f"{_short(name)}_encoder")
    for layer in backbone._flatten_layers():
        if isinstance(layer, keras.layers.BatchNormalization):
            layer.momentum = 0.9  # as seg's own blocks: inference statistics follow training
    features.trainable = not freeze
    notes = [f"{described}, features at strides {sorted(strides)}"] + adapted
    layer = None
    if preprocess and converter is not None:
        scale, offset = _scale_offset(converter, in_channels)
        layer = ScaleOffset(scale, offset, name=f"{_short(name)}_preprocess")
        notes.append("the preset's image preprocessing (scale and offset) inside the model")
    return HubEncoder(features, sorted(strides), layer, fixed, notes)


def _known_arguments(backbone) -> dict:
    """Constructor arguments a backbone's get_config leaves out (EfficientNet's num_features in
    keras-hub 0.32), recorded when seg built it, so that the saved config rebuilds it."""
    return dict(getattr(backbone, "_seg_arguments", {}))


def _scale_offset(converter, in_channels: int):
    """The converter's x * scale + offset for pixels in 0..255, as applied to [0, 1] images,
    averaged over RGB for another band count."""
    def per_band(v, default):
        v = np.broadcast_to(np.asarray(default if v is None else v, np.float64).ravel(), (3,)) \
            if np.size(default if v is None else v) in (1, 3) else np.asarray(v, np.float64)
        return [float(x) for x in (v if in_channels == 3 else [v.mean()] * in_channels)]
    scale = per_band(getattr(converter, "scale", None), 1.0 / 255.0)
    offset = per_band(getattr(converter, "offset", None), 0.0)
    return [s * 255.0 for s in scale], offset


def _short(name: str) -> str:
    return name.removesuffix("Backbone").lower().replace("-", "_")


def describe(encoder: str, args=None, size: int = 64) -> dict:
    """Family, parameters and strides of a hub encoder (built with random weights)."""
    kh = keras_hub()
    name = encoder[len(PREFIX):]
    backbone, _, _ = _source_backbone(name, None, args, kh, size)
    config = backbone.get_config()
    fixed = config[_shape_key(config)][0]
    features = keras.Model(backbone.input, list(backbone.pyramid_outputs.values()))
    return {"family": type(backbone).__name__, "parameters": backbone.count_params(),
            "strides": _strides(features, config[_shape_key(config)][-1] or 3, fixed),
            "fixed_size": fixed}
