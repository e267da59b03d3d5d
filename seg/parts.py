"""What a config builds before training: the data source and its pipelines, the model, its loss
and metrics (prepare()), each setting checked and a refusal naming its key."""

from __future__ import annotations

import contextlib
import re
from pathlib import Path
from dataclasses import dataclass, field
from typing import Callable

import keras
import numpy as np
import tensorflow as tf

from seg import config, distribute, geometry, recipe
from seg.config import PIPELINE_KEYS, PRECISIONS, ConfigError
from seg.data import AUDITS, SOURCES, DataError, Source, pipeline
from seg.data import balance as class_balance
from seg.fingerprint import object_stats
from seg.losses import SegmentationLoss
from seg.metrics import make_metrics
from seg.models import build_model
from seg.models.hub import HubError


def _call(fn, section: str, kwargs: dict):
    """Call fn(**kwargs), turning an unknown keyword into a ConfigError naming the key."""
    try:
        return fn(**kwargs)
    except TypeError as e:
        if "unexpected keyword argument" in str(e) or "missing" in str(e):
            raise ConfigError(f"{section}: {e}") from e
        raise
    except ValueError as e:  # the builders' refusals name their key: model.x=...
        if isinstance(e, HubError) or str(e).startswith(tuple(f"{s}." for s in config.SECTIONS)):
            raise ConfigError(str(e)) from None
        raise


def check_precision(precision: str) -> str:
    if precision not in PRECISIONS:
        raise ConfigError(f"trainer.precision={precision!r}: use one of {list(PRECISIONS)}")
    return precision


def set_precision(precision: str):
    """Keras' global dtype policy: layers compute in float16/bfloat16 and keep float32 weights.

    The model's head (logits, activation) is float32 whatever the policy, so the loss and the
    metrics see float32; mixed_float16 also gets Keras' loss scaling at compile.
    """
    keras.mixed_precision.set_global_policy(check_precision(precision))


def compile_options(trainer: dict) -> dict:
    """model.compile's jit_compile (XLA) and steps_per_execution, checked."""
    jit, spe = trainer["jit_compile"], trainer["steps_per_execution"]
    if jit not in ("auto", True, False):
        raise ConfigError(f"trainer.jit_compile={jit!r}: use auto (XLA on a GPU), true or false")
    if not isinstance(spe, int) or isinstance(spe, bool) or spe < 1:
        raise ConfigError(f"trainer.steps_per_execution={spe!r}: use a whole number >= 1")
    return {"jit_compile": jit, "steps_per_execution": spe}


def say(text: str):
    """A line on the console, at once."""
    print(text, flush=True)


def check_sections(cfg: dict):
    """Refuse a config tree that breaks the schema (seg/config.py), naming every bad key."""
    config.check(cfg)


def _data_kwargs(data_cfg: dict) -> tuple[str, dict, dict]:
    """(source name, source keyword arguments, pipeline settings) from the data section."""
    data_cfg = dict(data_cfg)
    pipe = {k: data_cfg.pop(k) for k in PIPELINE_KEYS if k in data_cfg}
    name = pipe.get("name")
    if name not in SOURCES:
        raise ConfigError(f"data.name={name!r}: use one of {sorted(SOURCES)}")
    if name == "shapes":
        data_cfg["image_size"] = pipe["image_size"]
    else:  # the file audit needs to know which value marks void pixels
        data_cfg["ignore_index"] = pipe["ignore_index"]
    return name, data_cfg, pipe


def open_data(data_cfg: dict):
    """The data source and the pipeline settings from the data section."""
    name, kwargs, pipe = _data_kwargs(data_cfg)
    return _call(SOURCES[name], "data", kwargs), pipe


def sized(cfg: dict, source: Source | None = None, log=None) -> tuple[dict, dict]:
    """cfg with its `auto` crop, depth and batch made numbers from the data (seg.geometry),
    and what each became ({} when none was auto). One line says what and why; the data is
    opened here when no source is given (its refusals name the file or key)."""
    wanted = geometry.auto_keys(cfg)
    if not wanted:
        return cfg, {}
    masks = []
    if geometry.reads_objects(cfg):
        if source is None:
            with data_errors_named():
                source, _ = open_data(cfg["data"])
        masks = [m for _, m in source.sample_masks(geometry.SAMPLE)]
    side = int(np.median([min(m.shape[:2]) for m in masks])) if masks else None  # the plan's
    objects = object_stats(masks, cfg["data"]["num_classes"])
    decided = geometry.decide(cfg, objects, side, len(masks))
    (log or say)("seg: " + ", ".join(f"{k}=auto: {v}" for k, v in decided.values.items())
                 + f"; {decided.reason} (set a key to choose)")
    return config.applied(cfg, decided.values), decided.values


def pipeline_kwargs(data: dict, computed: dict | None = None) -> dict:
    """pipeline.training's crop and augmentation arguments from the data section (or
    open_data's pipeline settings) and balance()'s rare classes: what run trains on, and what
    seg.plan and scripts/benchmark.py time."""
    return dict(image_size=data["image_size"], augment_data=data["augment"],
                scale_range=tuple(data["scale_range"]), ignore_index=data["ignore_index"],
                elastic_sigma=data.get("elastic_sigma", 0.0),
                transpose=data.get("transpose", False),
                rare_classes=(computed or {}).get("data.rare_classes", ()),
                rare_class_crops=data.get("rare_class_crops", 0.0),
                photometric_args=data.get("photometric"))


def check_data(cfg: dict, progress: bool = True):
    """The full data audit for a config's dataset (every file), or None for generated data."""
    check_sections(cfg)
    name, kwargs, _ = _data_kwargs(cfg["data"])
    return _call(AUDITS[name], "data", {**kwargs, "progress": progress}) if name in AUDITS else None


def balance(cfg: dict, source: Source) -> dict:
    """What the training split's class histogram decides, by key path: the weights of
    loss.class_weights=median_frequency|inverse_frequency, and the rare classes that
    data.rare_class_crops centres crops on. Printed; recorded in config.json and metrics.json.
    """
    data, weighting = cfg["data"], cfg["loss"]["class_weights"]
    wanted_weights = isinstance(weighting, str)
    if not wanted_weights and not data["rare_class_crops"]:
        return {}
    sample = AUTO_MASKS if weighting == "auto" and not data["rare_class_crops"] else \
        BALANCE_MASKS
    masks = source.sample_masks(min(source.num_train, sample))
    hist = class_balance.histogram((m for _, m in masks), data["num_classes"])
    if not hist.pixels.sum() and weighting == "auto" and not data["rare_class_crops"]:
        # nothing to weigh: the preflight's label audit names the problem ("all void")
        return {"auto": {"loss.class_weights": None}, "loss.class_weights": None}
    if not hist.pixels.sum():
        raise DataError(f"the {hist.masks} training masks read hold no labelled pixel, so no "
                        "class balance can be computed; check data.label_map and "
                        "data.ignore_index (python scripts/check_data.py)")
    names, shares = source.class_names, hist.shares
    out = {}
    if weighting == "auto":
        weighting = recipe.weighting_for(hist)
        out["auto"] = {"loss.class_weights": weighting}
        rarest = min(np.flatnonzero(hist.pixels), key=lambda k: shares[k])
        rare, share = 100 * recipe.RARE_SHARE, f"{100 * shares[rarest]:.2f}%"
        say(f"seg: loss.class_weights=auto: "
            + (f"{weighting}: {names[rarest]} is {share} of the labelled pixels (under "
               f"{rare:g}%)" if weighting else f"null: no class under {rare:g}% of the "
               f"labelled pixels (the rarest, {names[rarest]}, {share})")
            + f" in {hist.masks} training masks; set loss.class_weights to choose")
        wanted_weights = weighting is not None
        if not wanted_weights:
            out["loss.class_weights"] = None
    if wanted_weights:
        weights = class_balance.class_weights(weighting, hist)
        out["loss.class_weights"] = weights
        say(f"seg: loss.class_weights={weighting} from {hist.masks} training masks: "
             + ", ".join(f"{n} {w:g} ({100 * p:.2f}%)"
                         for n, w, p in zip(names, weights, shares, strict=False)))
    if data["rare_class_crops"]:
        rare = class_balance.rare_classes(hist)
        out["data.rare_classes"] = rare
        say(f"seg: data.rare_class_crops={data['rare_class_crops']:g}: "
             + (f"that share of the crops is centred on {', '.join(names[k] for k in rare)}"
                if rare else "no class is rare in the training split (under 2% of the pixels or "
                "half of an even share), so every crop is placed at random"))
    return out


BALANCE_MASKS = 4096  # training masks read for the class histogram (an even sample beyond)
AUTO_MASKS = 1024     # for loss.class_weights=auto alone (every run with the defaults reads them)


def build(cfg: dict, source, computed: dict | None = None) -> tuple:
    """Model, loss and metrics for a config and its data source (`computed`: balance()'s
    class weights, when the config names a weighting or auto; read here when not given)."""
    cfg, _ = sized(cfg, source)  # a crop, depth or batch still auto (prepare sized it)
    if computed is None and isinstance(cfg["loss"]["class_weights"], str):
        computed = balance(cfg, source)
    data, dec = cfg["data"], cfg["decoder"]
    model = _call(build_model, "model", dict(
        num_classes=data["num_classes"], in_channels=source.channels, **cfg["model"],
        decoder=dec["name"], interpolation=dec["interpolation"], kernel_size=dec["kernel_size"],
        init=dec["init"], band_stats=source.band_stats, fixed_size=data["image_size"]))
    loss_cfg = cfg["loss"]
    loss = SegmentationLoss(loss_cfg["name"], num_classes=data["num_classes"],
                            ignore_index=data["ignore_index"], from_logits=loss_cfg["from_logits"],
                            class_weights=(computed or {}).get("loss.class_weights",
                                                               loss_cfg["class_weights"]),
                            focal_gamma=loss_cfg["focal_gamma"])
    metrics = make_metrics(data["num_classes"], data["ignore_index"], loss_cfg["from_logits"])
    return model, loss, metrics


@dataclass
class Parts:
    """What prepare() makes of a config: the data pipelines, the model, its loss and metrics."""

    source: Source
    image_size: int
    train_ds: tf.data.Dataset
    train_stream: Callable[[int], tf.data.Dataset]  # start batch -> the stream from there
    batch_size: int  # global: trainer.batch_size x replicas
    val_ds: tf.data.Dataset
    model: keras.Model
    loss: object
    metrics: list
    steps: int  # per epoch
    computed: dict = field(default_factory=dict)  # balance(): settings made from the data
    fit_val_ds: tf.data.Dataset | None = None  # what scores each epoch: val_ds, or the first
    # trainer.validation_images of it; val_ds (the whole split) scores best.keras at the end

    def resolved(self, cfg: dict) -> dict:
        """A copy of cfg with what each `auto` value became for this data (computed["auto"])."""
        return config.applied(cfg, self.computed.get("auto", {}))


def prepare(cfg: dict, plan: distribute.Plan | None = None, *, checked: bool = False) -> Parts:
    """Data pipelines, model, loss and metrics for a config (no training).

    With a distribution plan, the batches are global (trainer.batch_size per replica) and the
    model's variables belong to the plan's strategy. checked: the caller has checked the
    config already (train.run does, where it enters), so it is not checked again.
    """
    if not checked:
        check_sections(cfg)
    keras.utils.set_random_seed(cfg["seed"])
    source, pipe = open_data(cfg["data"])
    cfg, sizes = sized(cfg, source)  # train.run passes cfg sized already
    pipe["image_size"] = cfg["data"]["image_size"]
    trainer, data = cfg["trainer"], cfg["data"]
    set_precision(trainer["precision"])
    compile_options(trainer)
    replicas = plan.replicas if plan else 1
    batch_size = trainer["batch_size"] * replicas
    shard = distribute.shard_by_data if plan and plan.workers > 1 else (lambda ds: ds)
    with data_errors_named():
        computed = balance(cfg, source)
    if sizes:
        computed["auto"] = {**sizes, **computed.get("auto", {})}

    def train_stream(start_batch: int = 0):
        return shard(pipeline.training(
            source.train, num_examples=source.num_train, batch_size=batch_size,
            seed=cfg["seed"], cache=pipe["cache"], start_batch=start_batch,
            **pipeline_kwargs(pipe, computed)))

    train_ds = train_stream()
    val_ds = shard(pipeline.validation(source.val, batch_size=batch_size,
                                       ignore_index=pipe["ignore_index"], cache=pipe["cache"]))
    val_ds = _counted(val_ds, preflight=cfg["diagnostics"]["preflight"])
    if plan and plan.replicas > 1:
        distribute.check_compile(plan, trainer["jit_compile"], trainer["steps_per_execution"])
        if cfg["model"]["norm"] == "batch":  # one set of batch statistics for all replicas
            cfg = {**cfg, "model": {**cfg["model"], "norm": "sync_batch"}}
    with (plan.strategy.scope() if plan else contextlib.nullcontext()):
        model, loss, metrics = build(cfg, source, computed)
        if trainer.get("initial_weights"):
            load_initial(model, trainer["initial_weights"])
    fixed = model.input_shape[1]
    if fixed:  # a fixed-size encoder (MiT) scores the centre fixed x fixed crop of each image
        val_ds = _centre_validation(source, pipe, size=fixed, batch_size=batch_size,
                                    shard=shard)
        model.seg_notes.append(f"a fixed {fixed}x{fixed} input: validation scores the centre "
                               f"{fixed}x{fixed} of each image (predict.py tiles whole images)")
    steps = _steps_per_epoch(trainer, num_train=source.num_train, batch_size=batch_size,
                             auto=computed)
    fit_val_ds = val_ds
    subset = trainer.get("validation_images")
    if subset == "auto":
        subset = _validation_subset(source, steps * batch_size * pipe["image_size"] ** 2,
                                    computed)
    if subset and subset < source.num_val and not fixed:
        fit_val_ds = shard(pipeline.validation(source.val.take(subset), batch_size=batch_size,
                                               ignore_index=pipe["ignore_index"],
                                               cache=pipe["cache"]))
        fit_val_ds = _counted(fit_val_ds, preflight=cfg["diagnostics"]["preflight"])
    return Parts(source, pipe["image_size"], train_ds, train_stream, batch_size, val_ds, model,
                 loss, metrics, steps, computed, fit_val_ds)


def load_initial(model: keras.Model, path: str):
    """trainer.initial_weights into the model; a missing file, or one of another model, is
    refused naming it."""
    where = Path(str(path)).expanduser()
    if not where.is_file():
        raise ConfigError(f"trainer.initial_weights={path}: no such file; give a .weights.h5 "
                          "written for this model (scripts/plan.py writes one), or null")
    try:
        model.load_weights(where)
    except (ValueError, OSError, KeyError) as e:
        first = str(e).strip().splitlines()[0][:200] if str(e).strip() else type(e).__name__
        raise ConfigError(f"trainer.initial_weights={path}: does not fit this model ({first}); "
                          "the weights must come from the same encoder, depth, width and "
                          "classes: re-plan, or set trainer.initial_weights=null") from None
    say(f"seg: the model starts from {where} (trainer.initial_weights)")


def _counted(val_ds: tf.data.Dataset, *, preflight: str) -> tf.data.Dataset:
    """val_ds with its number of batches, counted in one pass."""
    # Batches of same-size images: their number is known only after one pass (which also fills
    # the cache). Told to Keras, it stops warning that validation "ran out of data".
    # the preflight's audit words label problems better than the pipeline's check does
    unchecked = preflight != "off"
    with data_errors_named(), (pipeline.labels_unchecked() if unchecked
                               else contextlib.nullcontext()):
        val_batches = int(val_ds.reduce(0, lambda n, _: n + 1))
    return val_ds.apply(tf.data.experimental.assert_cardinality(val_batches))


def _centre_validation(source: Source, pipe: dict, *, size: int, batch_size: int,
                       shard: Callable) -> tf.data.Dataset:
    """The validation batches of the centre size x size crop of each image."""
    val_ds = shard(pipeline.validation(
        source.val.map(lambda x, y: pipeline.augment(
            x, y, tf.zeros([2], tf.int64), size=size, random=False,
            ignore_index=pipe["ignore_index"])), batch_size=batch_size,
        ignore_index=pipe["ignore_index"], cache=pipe["cache"]))
    return val_ds.apply(tf.data.experimental.assert_cardinality(
        -(-source.num_val // batch_size)))


def _validation_subset(source: Source, train_pixels: int, computed: dict) -> int | None:
    """trainer.validation_images=auto: recipe.validation_subset, from the size of the first
    validation image; recorded in computed["auto"] and printed."""
    first = next(iter(source.val.take(1)), None)
    if first is None:
        return None
    pixels = float(np.prod(first[1].shape[:2]))
    subset = recipe.validation_subset(source.num_val, pixels, train_pixels)
    computed.setdefault("auto", {})["trainer.validation_images"] = subset
    share = recipe.validation_share(source.num_val, pixels, train_pixels)
    if subset:
        say(f"seg: trainer.validation_images=auto: {subset}: validating all {source.num_val} "
            f"images would take about {100 * share:.0f}% of each epoch, so each validation "
            f"scores the first {subset} (a fixed subset); best.keras is scored on the whole "
            "split at the end (set trainer.validation_images=null to score all each epoch)")
    return subset


def _steps_per_epoch(trainer: dict, *, num_train: int, batch_size: int,
                     auto: dict | None = None) -> int:
    """trainer.steps_per_epoch (or one pass over the training images; auto: one pass, at
    least recipe.MIN_EPOCH_STEPS, recorded in `auto`), rounded down to whole executions of
    trainer.steps_per_execution steps."""
    given, one_pass = trainer["steps_per_epoch"], max(num_train // batch_size, 1)
    steps = given if isinstance(given, int) else one_pass
    if given == "auto":
        steps = max(one_pass, recipe.MIN_EPOCH_STEPS)
        if steps > one_pass:
            say(f"seg: trainer.steps_per_epoch=auto: {steps}: one pass over {num_train} "
                f"training images is {one_pass} step(s) of {batch_size}; an epoch makes at "
                f"least {recipe.MIN_EPOCH_STEPS} (the crops are drawn at random, so the "
                "images repeat)")
    per_call = trainer["steps_per_execution"]
    if per_call > steps:
        raise ConfigError(f"trainer.steps_per_execution={per_call} is more than the {steps} "
                          f"steps of an epoch ({num_train} training images, "
                          f"batch {batch_size}): use at most {steps}")
    if steps % per_call:  # Keras runs whole executions: an epoch would overrun into the next
        rounded = max(steps // per_call, 1) * per_call
        print(f"seg: {steps} steps per epoch is not a multiple of trainer.steps_per_execution="
              f"{per_call}; training {rounded} steps per epoch", flush=True)
        steps = rounded
    if given == "auto" and auto is not None:
        auto.setdefault("auto", {})["trainer.steps_per_epoch"] = steps
    return steps


@contextlib.contextmanager
def data_errors_named():
    """A file that fails to decode inside tf.data (data.preflight=off, or a file changed since
    the audit) stops with seg's DataError naming it, not TensorFlow's InvalidArgumentError."""
    try:
        yield
    except tf.errors.OpError as e:
        found = re.search(r"DataError: (.+)", e.message or "")
        if not found:
            raise
        raise DataError(f"{found.group(1).strip()}\nFound while reading the data (a committed "
                        "checkpoint, if any, is kept). Fix or remove the file (python "
                        "scripts/check_data.py scans every file), or set data.on_bad_sample=skip, "
                        "then run the same command again.") from None
