"""The rules between config keys, judged once every value has passed its own check."""

from __future__ import annotations

import math
import os

from seg.data.balance import WEIGHTINGS as CLASS_WEIGHTINGS
from seg.models import levels_of
from seg.models.encoders import ENCODERS


def rules(cfg: dict) -> list[str]:
    """The rules between keys, as `key=value: what is allowed` (run only on a tree whose every
    value passed alone)."""
    data, model, loss = cfg["data"], cfg["model"], cfg["loss"]
    n = data["num_classes"]
    out = (_class_weight_rules(loss["class_weights"], n) + _head_rules(data, model, n)
           + _class_list_rules(data, n) + _label_map_rules(data, n) + _photometric_rules(data))
    if data["name"] == "shapes" and data["image_size"] == "auto":
        out.append("data.image_size=auto: the built-in shapes are generated at data.image_size; "
                   "give a number (e.g. 64)")
    if data["name"] == "shapes" and n > 4:
        out.append(f"data.num_classes={n}: the built-in shapes have 2, 3 or 4 classes")
    return out + _model_rules(cfg) + _training_rules(cfg) + _machine_rules(cfg)


def _class_weight_rules(weights, n: int) -> list[str]:
    """loss.class_weights: null, a weighting's name, or one number >= 0 per class."""
    if weights is None or weights == "auto" or weights in CLASS_WEIGHTINGS:
        return []
    if not isinstance(weights, list) or not all(
            isinstance(w, (int, float)) and not isinstance(w, bool) and math.isfinite(w)
            and w >= 0 for w in weights):
        return [f"loss.class_weights={weights!r}: use auto, null, {', '.join(CLASS_WEIGHTINGS)}, "
                "or a list of numbers >= 0, one per class"]
    if len(weights) != n:
        return [f"loss.class_weights={weights!r}: {len(weights)} value(s) for "
                f"data.num_classes={n}: give one weight per class"]
    return []


def _head_rules(data: dict, model: dict, n: int) -> list[str]:
    """The ignore index is no class; the head has one channel per class, or one for two."""
    out = []
    if 0 <= data["ignore_index"] < n:
        out.append(f"data.ignore_index={data['ignore_index']}: it is a class index "
                   f"(data.num_classes={n}); use a value >= {n}, e.g. 255")
    if model["out_channels"] not in (None, 1, n):
        out.append(f"model.out_channels={model['out_channels']}: use null (one logit per "
                   f"class, {n} here) or 1 (binary tasks)")
    if model["out_channels"] == 1 and n != 2:
        out.append(f"model.out_channels=1 needs a binary task, not data.num_classes={n}: use "
                   "model.out_channels=null")
    return out


def _class_list_rules(data: dict, n: int) -> list[str]:
    """data.scale_range is [low, high]; class names and colours come one per class."""
    out = []
    low_high = data["scale_range"]
    if len(low_high) != 2 or not 0 < low_high[0] <= low_high[1]:
        out.append(f"data.scale_range={low_high}: use [low, high] with 0 < low <= high")
    for name in ("class_names", "colour_table"):
        given = data.get(name)
        if given is not None and len(given) != n:
            out.append(f"data.{name} has {len(given)} entries for data.num_classes={n}: give "
                       "one per class")
    for i, rgb in enumerate(data.get("colour_table") or []):
        if len(rgb) != 3 or not all(0 <= c <= 255 for c in rgb):
            out.append(f"data.colour_table[{i}]={rgb}: use [r, g, b] with values 0..255")
    return out


def _whole(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _label_map_rules(data: dict, n: int) -> list[str]:
    """data.label_map: whole numbers, raw mask value -> a class index or the ignore index."""
    label_map = data.get("label_map")
    if label_map is not None and (not isinstance(label_map, dict) or not all(
            _whole(v) for pair in label_map.items() for v in pair)):
        return [f"data.label_map={label_map!r}: use null or a mapping of whole numbers, "
                "raw mask value -> class index, e.g. {255: 1}"]
    return [f"data.label_map: {raw} -> {index} is not a class index (0..{n - 1}) "
            f"or data.ignore_index={data['ignore_index']}"
            for raw, index in (label_map or {}).items()
            if not (0 <= index < n or index == data["ignore_index"])]


PHOTOMETRIC = {"brightness": 1.0, "contrast": 1.0, "saturation": 1.0, "hue": 0.5, "blur": 16.0}


def _photometric_rules(data: dict) -> list[str]:
    """data.photometric: known names, values within their ranges, colour only on RGB."""
    out = []
    for name, value in (data.get("photometric") or {}).items():
        if name not in PHOTOMETRIC:
            out.append(f"data.photometric.{name}: unknown; use {', '.join(PHOTOMETRIC)}")
        elif not 0 <= value <= PHOTOMETRIC[name]:
            out.append(f"data.photometric.{name}={value:g}: use a value from 0 (off) to "
                       f"{PHOTOMETRIC[name]:g}")
        elif name == "blur" and _whole(data["image_size"]) and 3 * value >= data["image_size"] / 2:
            out.append(f"data.photometric.blur={value:g}: a Gaussian of that sigma spans more "
                       f"than the {data['image_size']}-pixel crop; use less than "
                       f"{data['image_size'] / 6:g}")
        elif name in ("saturation", "hue") and value and data["channels"] != 3:
            out.append(f"data.photometric.{name}={value:g} needs RGB images (data.channels=3, "
                       f"not {data['channels']}); use 0")
    return out


def _band_stats_ok(stats, bands: int) -> bool:
    ok = lambda v: isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)  # noqa: E731
    return (isinstance(stats, (list, tuple)) and len(stats) == 2
            and all(isinstance(r, (list, tuple)) and len(r) == bands and all(map(ok, r))
                    for r in stats) and all(v > 0 for v in stats[1]))


def _model_rules(cfg: dict) -> list[str]:
    data, model, out = cfg["data"], cfg["model"], []
    if not _is_activation(model["activation"]):
        out.append(f"model.activation={model['activation']!r}: not a Keras activation; use "
                   "relu, gelu, silu, elu, leaky_relu, ... (keras.activations)")
    encoder, weights_file = model["encoder"], model["encoder_weights"]
    hub = isinstance(encoder, str) and encoder.startswith("hub:")
    if encoder not in ENCODERS and not (hub and len(encoder) > 4):
        out.append(f"model.encoder={encoder!r}: use one of {', '.join(ENCODERS)}, or "
                   "hub:<keras-hub preset or backbone class> (python scripts/encoders.py "
                   "lists them)")
    named = ("pretrained",) if hub else ("imagenet",)
    local = weights_file not in (None, *named) and (
        os.path.isfile(os.path.expanduser(weights_file))
        or hub and os.path.isdir(os.path.expanduser(weights_file)))
    if weights_file not in (None, *named) and not local:
        other = "imagenet" if hub else "pretrained"
        out.append(f"model.encoder_weights={weights_file!r}: " + (
            f"{other} is for {'Keras applications' if hub else 'keras-hub presets'}; use "
            if weights_file == other else "no such file; use ") + f"null (random), {named[0]}, "
            "or the path of a weights file" + (" or a local preset folder" if hub else ""))
    args = model.get("encoder_args")  # used by hub:<BackboneClass> (ignored by other encoders,
    if args is not None and not (args == "small" or isinstance(args, dict)):  # so sweeps mix them)
        out.append(f"model.encoder_args={args!r}: use null, small, or a mapping of the keras-hub "
                   "backbone class's arguments")
    stats = data.get("band_stats", "auto")
    if stats != "auto" and not _band_stats_ok(stats, data["channels"]):
        out.append(f"data.band_stats={stats!r}: use auto, or [[mean per band], [std per band]] "
                   f"with {data['channels']} numbers each (std > 0)")
    size, depth = data["image_size"], model["depth"]
    if depth == "auto" and model["encoder"] == "unet" or size == "auto":  # sized to fit
        return out
    levels = levels_of(model["encoder"], depth)
    if size < 2 ** levels:
        most = max(int(math.log2(size)), 1)
        out.append(f"data.image_size={size} is smaller than 2**{levels}={2 ** levels}, the "
                   f"encoder's total down-sampling: every crop would be padded to "
                   f"{2 ** levels}x{2 ** levels} ({(2 ** levels / size) ** 2:.0f}x the pixels). "
                   + (f"Use model.depth<={most} or " if model["encoder"] == "unet" else "Use ")
                   + f"data.image_size>={2 ** levels}")
    return out


def _is_count(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _auto_count_rules(trainer: dict) -> list[str]:
    """trainer.steps_per_epoch and trainer.validation_images: auto, null, or a whole number
    >= 1."""
    out = []
    for name, null in (("steps_per_epoch", "one pass over the training split"),
                       ("validation_images", "the whole split")):
        value = trainer[name]
        if value is None or value == "auto" or (_is_count(value) and 1 <= value <= 10_000_000):
            continue
        out.append(f"trainer.{name}={value!r}: use auto (the default), null ({null}) or a "
                   "whole number from 1 to 10000000")
    return out


def _training_rules(cfg: dict) -> list[str]:
    data, model, trainer, out = cfg["data"], cfg["model"], cfg["trainer"], []
    if trainer["unfreeze_encoder_after"] is not None and not model["freeze_encoder"]:
        out.append(f"trainer.unfreeze_encoder_after={trainer['unfreeze_encoder_after']} has no "
                   "effect: the encoder is not frozen; set model.freeze_encoder=true (train the "
                   "decoder first), or trainer.unfreeze_encoder_after=null")
    if trainer["time_budget_minutes"] is not None and trainer["strategy"] == "multi_worker":
        out.append(f"trainer.time_budget_minutes={trainer['time_budget_minutes']:g} with "
                   "trainer.strategy=multi_worker: each worker's clock would stop it at a "
                   "different step; plan the steps instead (trainer.epochs, "
                   "trainer.steps_per_epoch) and use trainer.time_budget_minutes=null")
    out += _auto_count_rules(trainer)
    steps = trainer["steps_per_epoch"]
    if _is_count(steps) and trainer["steps_per_execution"] > steps:
        out.append(f"trainer.steps_per_execution={trainer['steps_per_execution']} is more than "
                   f"the {steps} steps of an epoch (trainer.steps_per_epoch): use at most {steps}")
    if _whole(data["image_size"]) and data["elastic_sigma"] > data["image_size"] / 4:
        out.append(f"data.elastic_sigma={data['elastic_sigma']:g}: displacements over a quarter "
                   f"of the {data['image_size']}-pixel crop turn it into noise; use at most "
                   f"{data['image_size'] / 4:g} (the U-Net paper used 10 for 572 pixels)")
    if data["name"] == "folder" and not str(data["root"]).strip():
        out.append("data.root='' is empty: set data.root=DIR (the folder holding images/ and "
                   "masks/)")
    return out


def _is_activation(name: str) -> bool:
    import keras

    try:
        keras.activations.get(name)
    except (ValueError, TypeError):
        return False
    return True


def _machine_rules(cfg: dict) -> list[str]:
    """What this machine cannot do: more logical CPU devices than it has cores."""
    cores, wanted = os.cpu_count() or 1, cfg["trainer"]["cpu_devices"]
    if wanted is not None and wanted > cores:
        return [f"trainer.cpu_devices={wanted}: this machine has {cores} CPU core(s); use at "
                f"most {cores} (one replica per core; more only wait on each other)"]
    return []
