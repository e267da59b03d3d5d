"""The config tree's shape, in one place: every key, its type and what it allows.

The dataclasses below are the schema. The Hydra glue (seg_hydra) stores them in Hydra's
ConfigStore, so composition already refuses an unknown key or a value of the wrong type
(`trainer.epochs=abc`), naming it. `check(cfg)` then applies what types cannot say, on the
plain dict seg.train reads: ranges, choices and the rules between keys (class_weights has one
value per class, the crop is at least 2**depth pixels, ...). Every problem is reported at
once, each as `key=value: what is allowed`, before anything is written.

The values and their comments live in configs/*.yaml; here is only what they may be.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import typing
from dataclasses import dataclass, field
from typing import Any, Dict, List, Optional, Union, get_args, get_origin

from seg.distribute import STRATEGIES
from seg.losses import NAMES as LOSS_NAMES
from seg.models.decoders import DECODERS
from seg.models import levels_of
from seg.models.encoders import ENCODERS, NORMS

OPTIMIZERS = ("adam", "adamw", "sgd")
CLASS_WEIGHTINGS = ("median_frequency", "inverse_frequency")
SCHEDULES = ("constant", "cosine", "polynomial")
PRECISIONS = ("float32", "mixed_float16", "mixed_bfloat16")
MAX_BANDS = 64


class ConfigError(ValueError):
    """A config value or key that cannot work; the message names it."""


def key(*, choices=None, min=None, max=None, above=None, below=None, help: str = ""):  # noqa: A002
    """A required key (its value comes from the YAML) with the values it allows."""
    return field(metadata={"choices": choices, "min": min, "max": max, "above": above,
                           "below": below, "help": help})


# --- the sections -------------------------------------------------------------------------

@dataclass
class Model:
    encoder: str = key(help=f"one of {', '.join(ENCODERS)}, or hub:<keras-hub preset or "
                       "backbone class>")
    encoder_weights: Optional[str] = key(help="null, imagenet (Keras applications), pretrained "
                                         "(keras-hub presets) or the path of a weights file")
    # Any, checked by _rules: a keras-hub backbone class's arguments (a mapping) or "small"
    encoder_args: Any = key(help="null, small, or a mapping of the backbone class's arguments")
    freeze_encoder: bool = key()
    depth: int = key(min=1)
    base_filters: int = key(min=1, max=1024)
    norm: str = key(choices=tuple(NORMS))
    dropout: float = key(min=0.0, below=1.0)
    activation: str = key(help="a Keras activation name")
    out_channels: Optional[int] = key(min=1)
    head_activation: Optional[str] = key(choices=(None, "sigmoid", "softmax"))


@dataclass
class Decoder:
    name: str = key(choices=tuple(DECODERS))
    interpolation: str = key(choices=("nearest", "bilinear"))
    kernel_size: int = key(min=1, max=15)
    init: str = key(choices=("he", "bilinear"))


@dataclass
class Loss:
    name: str = key(choices=LOSS_NAMES)
    from_logits: bool = key()
    # Any, checked by _rules: null, a name (computed from the training split), or a list
    class_weights: Any = key(help="null, median_frequency, inverse_frequency, or a list of one "
                             "weight (>= 0) per class")
    focal_gamma: float = key(min=0.0, max=20.0)


@dataclass
class Trainer:
    epochs: int = key(min=1, max=100_000)
    batch_size: int = key(min=1, max=100_000)
    steps_per_epoch: Optional[int] = key(min=1, max=10_000_000)
    optimizer: str = key(choices=OPTIMIZERS)
    learning_rate: float = key(above=0.0)
    weight_decay: float = key(min=0.0)
    momentum: float = key(min=0.0, below=1.0)
    schedule: str = key(choices=SCHEDULES)
    unfreeze_encoder_after: Optional[int] = key(min=1, max=100_000)
    early_stopping_patience: Optional[int] = key(min=1, max=100_000)
    verbose: Any = key(choices=("auto", 0, 1, 2))
    resume: bool = key()
    deterministic: bool = key()
    precision: str = key(choices=PRECISIONS)
    jit_compile: Any = key(choices=("auto", True, False))
    steps_per_execution: int = key(min=1, max=100_000)
    strategy: str = key(choices=STRATEGIES)
    cpu_devices: Optional[int] = key(min=1, max=4096)
    lr_scaling: str = key(choices=("linear", "none"))
    time_budget_minutes: Optional[float] = key(above=0.0, help="null, or the minutes of "
                                               "training after which the run stops at a step")
    validate_every: int = key(min=1, max=100_000, help="epochs between validations (the last "
                              "epoch always validates)")


@dataclass
class Diagnostics:
    preflight: str = key(choices=("error", "warn", "off"))
    label_audit_samples: int = key(min=1, max=100_000)
    probes: bool = key()
    overfit_steps: int = key(min=0, max=100_000)
    monitor: bool = key()
    stop_on_collapse: bool = key()
    constant_share: float = key(above=0.0, max=1.0)
    constant_spread: float = key(min=0.0)
    vanished_share: float = key(min=0.0, max=1.0)
    grace_epochs: int = key(min=0, max=100_000)


@dataclass
class Logging:
    panels_every: int = key(min=0, max=100_000)
    num_panels: int = key(min=1, max=64)


@dataclass
class Pipeline:
    """What every data source shares: the training crops and their augmentation."""

    name: str = key(choices=("shapes", "folder"))
    num_classes: int = key(min=2, max=256, help="the number of classes, background included")
    image_size: int = key(min=8, max=8192)
    channels: int = key(min=1, max=MAX_BANDS, help="image bands: 1 grey, 3 RGB, any other "
                        "count for multi-band TIFF or .npy stacks")
    ignore_index: int = key(min=0, max=65535)
    augment: bool = key()
    scale_range: List[float] = key(help="[low, high] with 0 < low <= high")
    elastic_sigma: float = key(min=0.0)
    transpose: bool = key()
    rare_class_crops: float = key(min=0.0, max=1.0, help="the share of training crops centred "
                                  "on a pixel of a rare class")
    # checked by _rules: brightness, contrast, saturation, hue (>= 0) and blur (pixels)
    photometric: Dict[str, float] = key(help="image-only augmentation strengths: brightness, "
                                        "contrast, saturation, hue, blur")
    cache: bool = key()


@dataclass
class ShapesData(Pipeline):
    num_train: int = key(min=1, max=1_000_000)
    num_val: int = key(min=1, max=1_000_000)
    seed: int = key(min=0, max=2 ** 32 - 1)


@dataclass
class FolderData(Pipeline):
    root: str = key(help="the dataset's folder: data.root=DIR (it holds images/ and masks/)")
    images_dir: str = key()
    masks_dir: str = key()
    train_list: Optional[str] = key()
    val_list: Optional[str] = key()
    split: str = key(choices=("random", "contiguous"))
    val_fraction: float = key(above=0.0, below=1.0)
    split_seed: int = key(min=0, max=2 ** 32 - 1)
    # Any, checked by _rules: OmegaConf 2.3 cannot merge a mapping into a null Optional[Dict]
    label_map: Any = key(help="raw mask value -> class index, e.g. {255: 1}")
    colour_table: Optional[List[List[int]]] = key(help="one [r, g, b] per class index")
    class_names: Optional[List[str]] = key()
    on_bad_sample: str = key(choices=("error", "skip"))
    max_pixels: int = key(min=1, max=2 ** 40)
    # Any, checked by _rules: "auto" or [[mean per band], [std per band]]
    band_stats: Any = key(help="auto (computed from the training split for images of over 8 "
                          "bits), or [[mean per band], [std per band]]")


DATA = {"shapes": ShapesData, "folder": FolderData}


@dataclass
class Config:
    seed: int = key(min=0, max=2 ** 32 - 1)
    data: Any = key()  # one of DATA, by data.name
    model: Model = key()
    decoder: Decoder = key()
    loss: Loss = key()
    trainer: Trainer = key()
    diagnostics: Diagnostics = key()
    logging: Logging = key()


SECTIONS = tuple(f.name for f in dataclasses.fields(Config))

# Key paths of this tree that other modules act on; a path names a key or a whole section.
# What may not change between a run and its resumption: what makes the weights and the
# optimizer state, and what fixes the position in the data stream (batch, steps per epoch).
ARCHITECTURE_KEYS = ("model", "decoder", "data.num_classes", "data.channels", "trainer.optimizer",
                     "trainer.unfreeze_encoder_after", "trainer.batch_size",
                     "trainer.steps_per_epoch", "trainer.precision")
# Always in TensorBoard's HPARAMS table: what decides a segmentation run (with the keys the
# command line overrode).
HPARAM_KEYS = ("decoder.name", "model.encoder", "model.depth", "model.base_filters", "model.norm",
               "model.out_channels", "loss.name", "trainer.optimizer", "trainer.learning_rate",
               "trainer.schedule", "trainer.batch_size", "trainer.epochs", "data.name",
               "data.image_size", "seed")
SEED_KEYS = ("seed",)  # differences in these make repeats of a config, not another config
# The data keys of the tf.data pipeline (crops, augmentation, cache); the rest open the source.
PIPELINE_KEYS = tuple(f.name for f in dataclasses.fields(Pipeline)
                      if f.name not in ("num_classes", "channels"))

# --- checking a plain dict ------------------------------------------------------------------

def _type_problem(tp, value) -> str | None:
    """Why value is not of the annotated type tp (None when it is)."""
    origin, args = get_origin(tp), get_args(tp)
    if tp is Any:
        return None
    if origin is Union:  # Optional[X]
        if value is None:
            return None
        return _type_problem(next(a for a in args if a is not type(None)), value)
    if value is None:
        return "is null"
    if tp is bool:
        return None if isinstance(value, bool) else "use true or false"
    if tp is int:
        return None if isinstance(value, int) and not isinstance(value, bool) else \
            "use a whole number"
    if tp is float:
        ok = (isinstance(value, (int, float)) and not isinstance(value, bool)
              and math.isfinite(value))
        return None if ok else "use a finite number"
    if tp is str:
        return None if isinstance(value, str) else "use a text value"
    if origin in (list, List):
        if not isinstance(value, list):
            return "use a list"
        inner = [_type_problem(args[0], v) for v in value] if args else []
        return next((f"item {i}: {p}" for i, p in enumerate(inner) if p), None)
    if origin in (dict, Dict):
        if not isinstance(value, dict):
            return "use a mapping, e.g. {255: 1}"
        inner = [_type_problem(args[0], k) or _type_problem(args[1], v) for k, v in value.items()]
        return next((f"entry {k}: {p}" for k, p in zip(value, inner, strict=False) if p), None)
    return None


def _range_problem(meta: dict, value) -> str | None:
    choices = meta["choices"]
    if choices is not None:
        hit = any(value == c and type(value) is type(c) for c in choices)
        if hit:
            return None
        quoted = [c for c in choices if not isinstance(c, str) and isinstance(value, str)
                  and value.strip().lower() == _text(c)]
        if quoted:  # trainer.verbose="1": the quotes made a text of the number
            return (f"{value!r} is a text (it was quoted), not {_text(quoted[0])}: write "
                    f"{_text(quoted[0])} without quotes (allowed: "
                    + ", ".join(_text(c) for c in choices) + ")")
        return "use one of " + ", ".join(_text(c) for c in choices)
    if value is None or not isinstance(value, (int, float)):
        return None
    limits = [("min", lambda v, x: v >= x, ">="), ("above", lambda v, x: v > x, ">"),
              ("max", lambda v, x: v <= x, "<="), ("below", lambda v, x: v < x, "<")]
    wanted = [f"{sign} {_number(meta[name])}" for name, ok, sign in limits
              if meta[name] is not None]
    fails = any(meta[name] is not None and not ok(value, meta[name]) for name, ok, _ in limits)
    return f"use a value {' and '.join(wanted)}" if fails else None


def _number(x) -> str:
    return str(int(x)) if float(x).is_integer() else f"{x:g}"


def _text(value) -> str:
    return "null" if value is None else json.dumps(value) if isinstance(value, bool) else \
        str(value)


def _section_problems(schema, values: dict, prefix: str) -> list[str]:
    fields = {f.name: f for f in dataclasses.fields(schema)}
    hints = typing.get_type_hints(schema)
    problems = []
    unknown = sorted(set(values) - set(fields))
    if unknown:
        problems.append(f"{prefix or 'config'}: unknown key(s) {unknown}; known: "
                        f"{sorted(fields)}")
    for name, f in fields.items():
        path = f"{prefix}.{name}" if prefix else name
        value = values.get(name, "???")
        if value == "???":
            hint = f.metadata.get("help")
            problems.append(f"{path} is missing" + (f": set {path}=... ({hint})" if hint else ""))
        elif schema is Config and name in SECTIONS[1:]:
            if not isinstance(value, dict):
                problems.append(f"{path}: a section of keys, not {value!r}")
        else:
            why = _type_problem(hints[name], value) or _range_problem(f.metadata, value)
            if why:
                problems.append(f"{path}={value!r}: {why}")
    return problems


def problems(cfg: dict) -> list[str]:
    """Every problem of a config tree (plain dicts), as `key=value: what is allowed`."""
    if not isinstance(cfg, dict):
        return [f"the config is a {type(cfg).__name__}, not a mapping of sections"]
    out = _section_problems(Config, cfg, "")
    if out:
        return out
    schema = DATA.get(cfg["data"].get("name"))
    if schema is None:
        return [f"data.name={cfg['data'].get('name')!r}: use one of {', '.join(DATA)}"]
    out = _section_problems(schema, cfg["data"], "data")
    for section, schema in SCHEMAS.items():
        out += _section_problems(schema, cfg[section], section)
    return out or _rules(cfg)


SCHEMAS = {"model": Model, "decoder": Decoder, "loss": Loss, "trainer": Trainer,
           "diagnostics": Diagnostics, "logging": Logging}


def type_problems(tree: dict) -> list[str]:
    """Values of a config read back (a run's config.json) whose type is not the schema's, and
    sections that are not mappings. Keys the schema lacks, or that the tree lacks, are left
    alone: a run of an older or newer seg stays readable. Ranges are not judged here."""
    out = []
    hints = typing.get_type_hints(Config)
    for name in SECTIONS:
        value = tree.get(name)
        if name not in tree:
            continue
        if name == "seed":
            why = _type_problem(hints[name], value)
            out += [f"seed={value!r}: {why}"] if why else []
            continue
        if not isinstance(value, dict):
            out.append(f"{name}: a section of keys, not {value!r:.60}")
            continue
        schema = DATA.get(value.get("name")) if name == "data" else SCHEMAS[name]
        if schema is None:
            out.append(f"data.name={value.get('name')!r}: not one of {', '.join(DATA)}")
            continue
        section_hints = typing.get_type_hints(schema)
        for key_, v in value.items():
            if key_ in section_hints and v != "???":
                why = _type_problem(section_hints[key_], v)
                if why:
                    out.append(f"{name}.{key_}={v!r:.60}: {why}")
    return out


def _rules(cfg: dict) -> list[str]:
    """The rules between keys (run only on a tree whose every value passed alone)."""
    data, model, loss = cfg["data"], cfg["model"], cfg["loss"]
    n, out = data["num_classes"], []
    weights = loss["class_weights"]
    if weights is not None and weights not in CLASS_WEIGHTINGS:
        if not isinstance(weights, list) or not all(
                isinstance(w, (int, float)) and not isinstance(w, bool) and math.isfinite(w)
                and w >= 0 for w in weights):
            out.append(f"loss.class_weights={weights!r}: use null, median_frequency, "
                       "inverse_frequency, or a list of numbers >= 0, one per class")
        elif len(weights) != n:
            out.append(f"loss.class_weights={weights!r}: {len(weights)} value(s) for "
                       f"data.num_classes={n}: give one weight per class")
    if 0 <= data["ignore_index"] < n:
        out.append(f"data.ignore_index={data['ignore_index']}: it is a class index "
                   f"(data.num_classes={n}); use a value >= {n}, e.g. 255")
    if model["out_channels"] not in (None, 1, n):
        out.append(f"model.out_channels={model['out_channels']}: use null (one logit per "
                   f"class, {n} here) or 1 (binary tasks)")
    if model["out_channels"] == 1 and n != 2:
        out.append(f"model.out_channels=1 needs a binary task, not data.num_classes={n}: use "
                   "model.out_channels=null")
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
    label_map = data.get("label_map")
    if label_map is not None and (not isinstance(label_map, dict) or any(
            _type_problem(int, v) for pair in label_map.items() for v in pair)):
        out.append(f"data.label_map={label_map!r}: use null or a mapping of whole numbers, "
                   "raw mask value -> class index, e.g. {255: 1}")
        label_map = None
    for raw, index in (label_map or {}).items():
        if not (0 <= index < n or index == data["ignore_index"]):
            out.append(f"data.label_map: {raw} -> {index} is not a class index (0..{n - 1}) "
                       f"or data.ignore_index={data['ignore_index']}")
    out += _photometric_rules(data)
    if data["name"] == "shapes" and n > 4:
        out.append(f"data.num_classes={n}: the built-in shapes have 2, 3 or 4 classes")
    return out + _model_rules(cfg) + _training_rules(cfg) + _machine_rules(cfg)


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
        elif name == "blur" and 3 * value >= data["image_size"] / 2:
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
    levels = levels_of(model["encoder"], model["depth"])
    size = data["image_size"]
    if size < 2 ** levels:
        most = max(int(math.log2(size)), 1)
        out.append(f"data.image_size={size} is smaller than 2**{levels}={2 ** levels}, the "
                   f"encoder's total down-sampling: every crop would be padded to "
                   f"{2 ** levels}x{2 ** levels} ({(2 ** levels / size) ** 2:.0f}x the pixels). "
                   + (f"Use model.depth<={most} or " if model["encoder"] == "unet" else "Use ")
                   + f"data.image_size>={2 ** levels}")
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
    steps = trainer["steps_per_epoch"]
    if steps is not None and trainer["steps_per_execution"] > steps:
        out.append(f"trainer.steps_per_execution={trainer['steps_per_execution']} is more than "
                   f"the {steps} steps of an epoch (trainer.steps_per_epoch): use at most {steps}")
    if data["elastic_sigma"] > data["image_size"] / 4:
        out.append(f"data.elastic_sigma={data['elastic_sigma']:g}: displacements over a quarter "
                   f"of the {data['image_size']}-pixel crop turn it into noise; use at most "
                   f"{data['image_size'] / 4:g} (the U-Net paper used 10 for 572 pixels)")
    if data["name"] == "folder" and not str(data["root"]).strip():
        out.append("data.root='' is empty: set data.root=DIR (the folder holding images/ and "
                   "masks/)")
    return out


def help_for(path: str) -> str:
    """The schema's words on a key path such as data.root ('' when it has none)."""
    section, _, name = path.partition(".")
    for schema in ([SCHEMAS[section]] if section in SCHEMAS else DATA.values()
                   if section == "data" else []):
        for f in dataclasses.fields(schema):
            if f.name == name and f.metadata.get("help"):
                return f.metadata["help"]
    return ""


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


def check(cfg: dict):
    """Raise ConfigError listing every problem of the config tree (nothing when it is sound)."""
    found = problems(cfg)
    if found:
        raise ConfigError(("the config has %d problem(s):\n  " % len(found) if len(found) > 1
                           else "") + "\n  ".join(found))


def flatten(tree: dict, prefix: str = "") -> dict:
    """{"a": {"b": 1}} -> {"a.b": 1}; lists become their JSON text."""
    out = {}
    for key_, value in tree.items():
        if isinstance(value, dict):
            out.update(flatten(value, f"{prefix}{key_}."))
        else:
            out[f"{prefix}{key_}"] = json.dumps(value) if isinstance(value, list) else value
    return out
