"""The config tree's shape, in one place: every key, its type and what it allows.

The dataclasses below are the schema. The Hydra glue (seg_hydra) stores them in Hydra's
ConfigStore, so composition already refuses an unknown key or a value of the wrong type
(`trainer.epochs=abc`), naming it. `check(cfg)` then applies what types cannot say, on the
plain dict seg.train reads: ranges, choices and the rules between keys, which live in
seg.config_rules (class_weights has one value per class, the crop is at least 2**depth
pixels, ...). Every problem is reported at once, each as `key=value: what is allowed`, before
anything is written.

The values and their comments live in configs/*.yaml; here is only what they may be.
"""

from __future__ import annotations

import dataclasses
import json
import math
import typing
from dataclasses import dataclass, field
from typing import Any, Dict, List, Optional, Union, get_args, get_origin

# the rules between keys live in seg.config_rules; its two tables stay importable from here
from seg.config_rules import CLASS_WEIGHTINGS, PHOTOMETRIC, rules  # noqa: F401
from seg.distribute import STRATEGIES
from seg.losses import NAMES as LOSS_NAMES
from seg.models.decoders import DECODERS
from seg.models.encoders import ENCODERS, NORMS

OPTIMIZERS = ("adam", "adamw", "sgd")
SCHEDULES = ("constant", "cosine", "polynomial")
PRECISIONS = ("float32", "mixed_float16", "mixed_bfloat16")
MAX_BANDS = 64


class ConfigError(ValueError):
    """A config value or key that cannot work; the message names it."""


def key(*, choices=None, min=None, max=None, above=None, below=None, help: str = "",  # noqa: A002
        auto: type | None = None):
    """A required key (its value comes from the YAML) with the values it allows. auto: the
    key's type, whose values it takes besides `auto` (made from the data when a run starts;
    the annotation is Any, so that OmegaConf lets `auto` through)."""
    return field(metadata={"choices": choices, "min": min, "max": max, "above": above,
                           "below": below, "help": help, "auto": auto})


# --- the sections -------------------------------------------------------------------------

@dataclass
class Model:
    encoder: str = key(help=f"one of {', '.join(ENCODERS)}, or hub:<keras-hub preset or "
                       "backbone class>")
    encoder_weights: Optional[str] = key(help="null, imagenet (Keras applications), pretrained "
                                         "(keras-hub presets) or the path of a weights file")
    # Any, checked by seg.config_rules: a keras-hub backbone class's arguments (a mapping)
    # or "small"
    encoder_args: Any = key(help="null, small, or a mapping of the backbone class's arguments")
    freeze_encoder: bool = key()
    depth: Any = key(min=1, auto=int)
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
    # Any, checked by seg.config_rules: null, a name (computed from the training split), or a list
    class_weights: Any = key(help="auto, null, median_frequency, inverse_frequency, their "
                             "sqrt_ forms, or a list of one weight (>= 0) per class")
    focal_gamma: float = key(min=0.0, max=20.0)


@dataclass
class Trainer:
    epochs: int = key(min=1, max=100_000)
    batch_size: Any = key(min=1, max=100_000, auto=int)
    # Any, checked by seg.config_rules: null (one pass), auto, or a whole number >= 1
    steps_per_epoch: Any = key(help="auto (one pass over the training split, at least 50 "
                               "steps), null (one pass), or a whole number of steps")
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
    initial_weights: Optional[str] = key(help="null, or a .weights.h5 file of this very model "
                                         "to start from (scripts/plan.py's pilot winner)")
    # Any, checked by seg.config_rules: null, auto, or a whole number >= 1
    validation_images: Any = key(help="auto (the whole split while it costs under a third of "
                                 "an epoch, else a fixed subset), null (the whole split), or "
                                 "how many validation images (the first, a fixed subset) "
                                 "score each epoch; best.keras is scored on the whole split at "
                                 "the end")


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
    image_size: Any = key(min=8, max=8192, auto=int)
    channels: int = key(min=1, max=MAX_BANDS, help="image bands: 1 grey, 3 RGB, any other "
                        "count for multi-band TIFF or .npy stacks")
    ignore_index: int = key(min=0, max=65535)
    augment: bool = key()
    scale_range: List[float] = key(help="[low, high] with 0 < low <= high")
    elastic_sigma: float = key(min=0.0)
    transpose: bool = key()
    rare_class_crops: float = key(min=0.0, max=1.0, help="the share of training crops centred "
                                  "on a pixel of a rare class")
    # checked by seg.config_rules: brightness, contrast, saturation, hue (>= 0) and blur (pixels)
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
    # Any, checked by seg.config_rules: OmegaConf 2.3 cannot merge a mapping into a null
    # Optional[Dict]
    label_map: Any = key(help="raw mask value -> class index, e.g. {255: 1}")
    colour_table: Optional[List[List[int]]] = key(help="one [r, g, b] per class index")
    class_names: Optional[List[str]] = key()
    on_bad_sample: str = key(choices=("error", "skip"))
    max_pixels: int = key(min=1, max=2 ** 40)
    # Any, checked by seg.config_rules: "auto" or [[mean per band], [std per band]]
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
    if tp in (bool, int, float, str):
        return _scalar_problem(tp, value)
    if origin in (list, List):
        return _list_problem(args, value)
    if origin in (dict, Dict):
        return _dict_problem(args, value)
    return None


def _scalar_problem(tp: type, value) -> str | None:
    """Why a value that is not null is not a bool, a whole number, a finite number or a text."""
    if tp is bool:
        return None if isinstance(value, bool) else "use true or false"
    if tp is int:
        return None if isinstance(value, int) and not isinstance(value, bool) else \
            "use a whole number"
    if tp is float:
        ok = (isinstance(value, (int, float)) and not isinstance(value, bool)
              and math.isfinite(value))
        return None if ok else "use a finite number"
    return None if isinstance(value, str) else "use a text value"


def _list_problem(args: tuple, value) -> str | None:
    if not isinstance(value, list):
        return "use a list"
    inner = [_type_problem(args[0], v) for v in value] if args else []
    return next((f"item {i}: {p}" for i, p in enumerate(inner) if p), None)


def _dict_problem(args: tuple, value) -> str | None:
    if not isinstance(value, dict):
        return "use a mapping, e.g. {255: 1}"
    inner = [_type_problem(args[0], k) or _type_problem(args[1], v) for k, v in value.items()]
    return next((f"entry {k}: {p}" for k, p in zip(value, inner, strict=False) if p), None)


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
        elif not (value == "auto" and f.metadata.get("auto")):
            why = (_type_problem(f.metadata.get("auto") or hints[name], value)
                   or _range_problem(f.metadata, value))
            if why:
                problems.append(f"{path}={value!r}: {why}"
                                + (" (or auto: from the data)" if f.metadata.get("auto") else ""))
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
    return out or rules(cfg)


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
        autos = {f.name: f.metadata["auto"] for f in dataclasses.fields(schema)
                 if f.metadata.get("auto")}
        for key_, v in value.items():
            if key_ in section_hints and v != "???" and not (v == "auto" and key_ in autos):
                why = _type_problem(autos.get(key_) or section_hints[key_], v)
                if why:
                    out.append(f"{name}.{key_}={v!r:.60}: {why}")
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


def check(cfg: dict):
    """Raise ConfigError listing every problem of the config tree (nothing when it is sound)."""
    found = problems(cfg)
    if found:
        raise ConfigError(("the config has %d problem(s):\n  " % len(found) if len(found) > 1
                           else "") + "\n  ".join(found))


def value_at(cfg: dict, path: str):
    """The value at a key path such as data.photometric.hue (None where there is none)."""
    node = cfg
    for part in path.split("."):
        node = node.get(part) if isinstance(node, dict) else None
    return node


def applied(cfg: dict, changes: dict) -> dict:
    """A copy of the config tree with `changes` ({"section.key": value}) set."""
    out = {k: dict(v) if isinstance(v, dict) else v for k, v in cfg.items()}
    for key_, value in changes.items():
        section, _, name = key_.partition(".")
        out[section][name] = value
    return out


def flatten(tree: dict, prefix: str = "") -> dict:
    """{"a": {"b": 1}} -> {"a.b": 1}; lists become their JSON text."""
    out = {}
    for key_, value in tree.items():
        if isinstance(value, dict):
            out.update(flatten(value, f"{prefix}{key_}."))
        else:
            out[f"{prefix}{key_}"] = json.dumps(value) if isinstance(value, list) else value
    return out
