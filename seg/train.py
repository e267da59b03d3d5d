"""run(cfg, output_dir): the one function that reads the config tree and trains a model.

Everything below this module takes plain keyword arguments; scripts/ turns Hydra's DictConfig
into the plain dict this module reads.
"""

from __future__ import annotations

import contextlib
import json
import math
import re
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import keras
import numpy as np
import tensorflow as tf

from seg import callbacks as seg_callbacks
from seg import (checkpoints, config, console, diagnostics, distribute, hparams, introspect,
                 recipe, resources, runfolder)
from seg.config import PIPELINE_KEYS, PRECISIONS, ConfigError
from seg.data import AUDITS, SOURCES, DataError, Source, pipeline
from seg.data import balance as class_balance
from seg.fixes import ConfigFixes
from seg.losses import SegmentationLoss
from seg.metrics import make_metrics
from seg.models import build_model, encoder_of, levels_of
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


def make_schedule(schedule: str, learning_rate: float, total_steps: int):
    """constant | cosine | polynomial (power 0.9, the 'poly' policy of DeepLab)."""
    schedules = {
        "constant": lambda: learning_rate,
        "cosine": lambda: keras.optimizers.schedules.CosineDecay(
            learning_rate, decay_steps=total_steps, alpha=0.01),
        "polynomial": lambda: keras.optimizers.schedules.PolynomialDecay(
            learning_rate, decay_steps=total_steps, end_learning_rate=learning_rate * 0.01,
            power=0.9),
    }
    if schedule not in schedules:
        raise ConfigError(f"trainer.schedule={schedule!r}: use one of {sorted(schedules)}")
    return schedules[schedule]()


def make_optimizer(optimizer: str, learning_rate, weight_decay: float, momentum: float):
    """adam | adamw | sgd, by name."""
    optimizers = {
        "adam": lambda: keras.optimizers.Adam(learning_rate),
        "adamw": lambda: keras.optimizers.AdamW(learning_rate, weight_decay=weight_decay),
        "sgd": lambda: keras.optimizers.SGD(learning_rate, momentum=momentum),
    }
    if optimizer not in optimizers:
        raise ConfigError(f"trainer.optimizer={optimizer!r}: use one of {sorted(optimizers)}")
    return optimizers[optimizer]()


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


def compile_for_training(model, loss, metrics, trainer: dict, schedule, done_steps: int = 0):
    """model.compile with the configured optimizer on a learning-rate schedule (continuing
    after done_steps), XLA and steps per execution."""
    optimizer = make_optimizer(trainer["optimizer"], schedule, trainer["weight_decay"],
                               trainer["momentum"])
    optimizer.iterations.assign(done_steps)  # the schedule continues where it was
    model.compile(optimizer=optimizer, loss=loss, metrics=metrics, **compile_options(trainer))


def _say(text: str):
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


def balance(cfg: dict, source: Source) -> dict:
    """What the training split's class histogram decides, by key path: the weights of
    loss.class_weights=median_frequency|inverse_frequency, and the rare classes that
    data.rare_class_crops centres crops on. Printed; recorded in config.json and metrics.json.
    """
    data, weighting = cfg["data"], cfg["loss"]["class_weights"]
    wanted_weights = isinstance(weighting, str)
    if not wanted_weights and not data["rare_class_crops"]:
        return {}
    masks = source.sample_masks(min(source.num_train, BALANCE_MASKS))
    hist = class_balance.histogram((m for _, m in masks), data["num_classes"])
    if not hist.pixels.sum():
        raise DataError(f"the {hist.masks} training masks read hold no labelled pixel, so no "
                        "class balance can be computed; check data.label_map and "
                        "data.ignore_index (python scripts/check_data.py)")
    names, shares = source.class_names, hist.shares
    out = {}
    if wanted_weights:
        weights = class_balance.class_weights(weighting, hist)
        out["loss.class_weights"] = weights
        _say(f"seg: loss.class_weights={weighting} from {hist.masks} training masks: "
             + ", ".join(f"{n} {w:g} ({100 * p:.2f}%)" for n, w, p in zip(names, weights, shares)))
    if data["rare_class_crops"]:
        rare = class_balance.rare_classes(hist)
        out["data.rare_classes"] = rare
        _say(f"seg: data.rare_class_crops={data['rare_class_crops']:g}: "
             + (f"that share of the crops is centred on {', '.join(names[k] for k in rare)}"
                if rare else "no class is rare in the training split (under 2% of the pixels or "
                "half of an even share), so every crop is placed at random"))
    return out


BALANCE_MASKS = 4096  # training masks read for the class histogram (an even sample beyond)


def build(cfg: dict, source, computed: dict | None = None) -> tuple:
    """Model, loss and metrics for a config and its data source (`computed`: balance()'s
    class weights, when the config names a weighting)."""
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


def prepare(cfg: dict, plan: distribute.Plan | None = None) -> Parts:
    """Data pipelines, model, loss and metrics for a config (no training).

    With a distribution plan, the batches are global (trainer.batch_size per replica) and the
    model's variables belong to the plan's strategy.
    """
    check_sections(cfg)
    keras.utils.set_random_seed(cfg["seed"])
    trainer, data = cfg["trainer"], cfg["data"]
    set_precision(trainer["precision"])
    compile_options(trainer)
    replicas = plan.replicas if plan else 1
    batch_size = trainer["batch_size"] * replicas
    shard = distribute.shard_by_data if plan and plan.workers > 1 else (lambda ds: ds)
    source, pipe = open_data(data)
    with data_errors_named():
        computed = balance(cfg, source)

    def train_stream(start_batch: int = 0):
        return shard(pipeline.training(
            source.train, num_examples=source.num_train, batch_size=batch_size,
            image_size=pipe["image_size"], augment_data=pipe["augment"],
            scale_range=tuple(pipe["scale_range"]), ignore_index=pipe["ignore_index"],
            seed=cfg["seed"], cache=pipe["cache"], start_batch=start_batch,
            elastic_sigma=pipe.get("elastic_sigma", 0.0),
            transpose=pipe.get("transpose", False),
            rare_classes=computed.get("data.rare_classes", ()),
            rare_class_crops=pipe.get("rare_class_crops", 0.0),
            photometric_args=pipe.get("photometric")))

    train_ds = train_stream()
    val_ds = shard(pipeline.validation(source.val, batch_size=batch_size,
                                       ignore_index=pipe["ignore_index"], cache=pipe["cache"]))
    # Batches of same-size images: their number is known only after one pass (which also fills
    # the cache). Told to Keras, it stops warning that validation "ran out of data".
    # the preflight's audit words label problems better than the pipeline's check does
    unchecked = cfg["diagnostics"]["preflight"] != "off"
    with data_errors_named(), (pipeline.labels_unchecked() if unchecked
                               else contextlib.nullcontext()):
        val_batches = int(val_ds.reduce(0, lambda n, _: n + 1))
    val_ds = val_ds.apply(tf.data.experimental.assert_cardinality(val_batches))
    if plan and plan.replicas > 1:
        distribute.check_compile(plan, trainer["jit_compile"], trainer["steps_per_execution"])
        if cfg["model"]["norm"] == "batch":  # one set of batch statistics for all replicas
            cfg = {**cfg, "model": {**cfg["model"], "norm": "sync_batch"}}
    with (plan.strategy.scope() if plan else contextlib.nullcontext()):
        model, loss, metrics = build(cfg, source, computed)
    fixed = model.input_shape[1]
    if fixed:  # a fixed-size encoder (MiT) scores the centre fixed x fixed crop of each image
        val_ds = shard(pipeline.validation(
            source.val.map(lambda x, y: pipeline.augment(
                x, y, tf.zeros([2], tf.int64), size=fixed, random=False,
                ignore_index=pipe["ignore_index"])), batch_size=batch_size,
            ignore_index=pipe["ignore_index"], cache=pipe["cache"]))
        val_ds = val_ds.apply(tf.data.experimental.assert_cardinality(
            -(-source.num_val // batch_size)))
        model.seg_notes.append(f"a fixed {fixed}x{fixed} input: validation scores the centre "
                               f"{fixed}x{fixed} of each image (predict.py tiles whole images)")
    steps = trainer["steps_per_epoch"] or max(source.num_train // batch_size, 1)
    per_call = trainer["steps_per_execution"]
    if per_call > steps:
        raise ConfigError(f"trainer.steps_per_execution={per_call} is more than the {steps} "
                          f"steps of an epoch ({source.num_train} training images, "
                          f"batch {batch_size}): use at most {steps}")
    if steps % per_call:  # Keras runs whole executions: an epoch would overrun into the next
        rounded = max(steps // per_call, 1) * per_call
        print(f"seg: {steps} steps per epoch is not a multiple of trainer.steps_per_execution="
              f"{per_call}; training {rounded} steps per epoch", flush=True)
        steps = rounded
    return Parts(source, pipe["image_size"], train_ds, train_stream, batch_size, val_ds, model,
                 loss, metrics, steps, computed)


def diagnose(cfg: dict, parts: Parts | None = None) -> diagnostics.Report:
    """Every check before training and the probes on one batch, for a config.

    The checks are seg.diagnose's, on the model and loss this config builds (the same path as
    for any Keras model), with the fixes in config keys, plus what only the config knows: the
    shape plan of the padding, a frozen random encoder and the file audit of the data.
    """
    # the model's first run: TensorFlow's notices about the CPU's kernels kept off the console
    with pipeline.labels_unchecked(), console.filtered_stderr():
        return _diagnose(cfg, parts or prepare(cfg))


def _diagnose(cfg: dict, parts: Parts) -> diagnostics.Report:
    source, diag = parts.source, cfg["diagnostics"]
    samples = source.sample_masks(diag["label_audit_samples"])
    sizes = [(parts.image_size, parts.image_size)] + sorted({m.shape for _, m in samples})
    model_cfg, data = cfg["model"], cfg["data"]
    with data_errors_named():
        images, masks = next(iter(parts.train_ds))
    report = diagnostics.diagnose(
        parts.model, np.asarray(images), np.asarray(masks), loss=parts.loss,
        num_classes=data["num_classes"], ignore_index=data["ignore_index"],
        class_names=source.class_names, probes=diag["probes"],
        overfit_steps=diag["overfit_steps"], learning_rate=float(cfg["trainer"]["learning_rate"]),
        label_samples=samples, fixes=ConfigFixes(cfg))
    report.title = "seg preflight checks"
    depth = levels_of(model_cfg["encoder"], model_cfg["depth"], parts.model)
    plan_findings, plan = diagnostics.shape_plan(sizes, depth=depth, decoder=cfg["decoder"]["name"])
    report.findings += plan_findings
    report.tables["shape plan"] = plan
    report.findings += recipe.recipe_findings(
        cfg, [m for _, m in samples], depth=depth, steps=parts.steps,
        batch=parts.batch_size, num_val=source.num_val)
    report.findings += diagnostics.check_encoder(
        encoder=model_cfg["encoder"], encoder_weights=model_cfg["encoder_weights"],
        freeze_encoder=model_cfg["freeze_encoder"],
        unfreeze_after=cfg["trainer"]["unfreeze_encoder_after"],
        notes=getattr(parts.model, "seg_notes", ()))
    if source.audit is not None:  # the file audit of scripts/check_data.py, on a sample
        skip = cfg["data"].get("on_bad_sample") == "skip"
        audited = source.audit(diag["label_audit_samples"])
        for problem in audited.problems:
            level = "warning" if skip or problem.level == "warning" else "error"
            report.findings.append(diagnostics.Finding(
                level, f"data: {problem.kind}", problem.detail,
                fix="" if level == "warning" else "fix or remove the file "
                "(python scripts/check_data.py scans every file), or data.on_bad_sample=skip"))
        if not audited.problems:
            report.findings.append(diagnostics.Finding(
                "ok", "data", f"{sum(audited.counts.values())} sampled pairs decode and match"))
    return report


def diagnose_model(cfg: dict, model: keras.Model, loss=None, from_logits: bool | None = None
                   ) -> diagnostics.Report:
    """seg.diagnose for a model seg did not build, on the data of a config (its data section).

    Training crops of the model's input size (or data.image_size) without augmentation, in
    [0, 1]; grayscale data is repeated for a 3-channel model. A one-hot loss gets one-hot
    masks (what a user's pipeline would feed it). `loss`: a Keras loss name, a seg loss name
    (auto, ce, dice, ...) or None for the compiled one; from_logits for a loss given by name.
    """
    check_sections(cfg)
    data, diag = cfg["data"], cfg["diagnostics"]
    source, pipe = open_data(data)
    shape = model.input_shape if hasattr(model, "input_shape") else (None, None, None, None)
    size = shape[1] if shape[1] and shape[1] == shape[2] else pipe["image_size"]
    want = shape[-1]
    if want not in (None, source.channels) and not (want == 3 and source.channels == 1):
        raise ConfigError(f"the model takes {want} input channels, the data has "
                          f"{source.channels}: set data.channels={want} (or use a model for "
                          f"{source.channels} channels)")
    loss = _named_loss(loss, from_logits, data) if isinstance(loss, str) else loss
    ds = pipeline.training(source.train, num_examples=source.num_train, batch_size=8,
                           image_size=size, augment_data=False, ignore_index=pipe["ignore_index"],
                           seed=cfg["seed"]).take(max(diag["label_audit_samples"] // 8, 1))
    if want == 3 and source.channels == 1:
        ds = ds.map(lambda x, y: (tf.repeat(x, 3, axis=-1), y))
    info = introspect.read_loss(loss if loss is not None else introspect.compiled_loss(model))
    out_shape = getattr(model, "output_shape", None)
    channels = out_shape[-1] if isinstance(out_shape, tuple) and len(out_shape) == 4 else None
    if info.targets == "one_hot" and channels and channels > 1:
        ds = ds.map(lambda x, y: (x, tf.one_hot(y, channels)))
    with pipeline.labels_unchecked(), console.filtered_stderr():
        return diagnostics.diagnose(
            model, ds, loss=loss, num_classes=data["num_classes"],
            ignore_index=data["ignore_index"], class_names=source.class_names,
            probes=diag["probes"], overfit_steps=diag["overfit_steps"],
            learning_rate=float(cfg["trainer"]["learning_rate"]),
            label_samples=source.sample_masks(diag["label_audit_samples"]))


def _named_loss(name: str, from_logits: bool | None, data: dict):
    """A loss by name: seg's (auto, ce, dice, ...) as a SegmentationLoss, Keras' by its name."""
    from seg.losses import NAMES, OWN

    if name in ("auto",) + OWN:
        return SegmentationLoss(name, num_classes=data["num_classes"],
                                ignore_index=data["ignore_index"],
                                from_logits=True if from_logits is None else from_logits)
    try:
        fn = keras.losses.get(name)
    except (ValueError, TypeError):
        raise ConfigError(f"--loss {name}: not a Keras or seg loss name (seg's: {list(NAMES)})") \
            from None
    if from_logits is None:
        return name
    cls = "".join(p.capitalize() for p in fn.__name__.split("_"))
    try:
        return keras.losses.get({"class_name": cls, "config": {"from_logits": from_logits}})
    except (ValueError, TypeError):
        raise ConfigError(f"--loss {name}: Keras has no {cls} class taking from_logits") from None


def check_data(cfg: dict, progress: bool = True):
    """The full data audit for a config's dataset (every file), or None for generated data."""
    check_sections(cfg)
    name, kwargs, _ = _data_kwargs(cfg["data"])
    return _call(AUDITS[name], "data", {**kwargs, "progress": progress}) if name in AUDITS else None


class ResumableEarlyStopping(keras.callbacks.EarlyStopping):
    """Keras' EarlyStopping whose patience counter survives fit() calls and resumes."""

    _restored: dict | None = None
    _started = False

    def on_train_begin(self, logs=None):
        if not self._started:  # Keras resets the counter at every fit(); only the first counts
            super().on_train_begin(logs)
            self._started = True
        if self._restored is not None:
            self.wait, self.best = self._restored["wait"], self._restored["best"]
            self.best_epoch = self._restored["best_epoch"]
            self._restored = None

    def on_epoch_end(self, epoch, logs=None):
        if self.monitor in (logs or {}):  # epochs without validation (trainer.validate_every)
            super().on_epoch_end(epoch, logs)

    def get_state(self) -> dict:
        best = None if self.best is None else float(self.best)
        return {"wait": self.wait, "best": best, "best_epoch": self.best_epoch}

    def set_state(self, state: dict):
        self._restored = state


class BudgetStop(keras.callbacks.Callback):
    """trainer.time_budget_minutes: stop at the first step boundary once training has taken
    the budget (the clock counts the time before a resume too).

    The epoch it stops in is validated (it joins `validate_at`, the validation_freq list fit
    reads), so the checkpointer scores it for best.keras and commits a "stopped" state: the
    same command then only re-scores. Its get_state goes into the resume state.
    """

    def __init__(self, minutes: float | None, clock: Clock, validate_at: list[int]):
        super().__init__()
        self.seconds = None if minutes is None else 60.0 * minutes
        self.clock, self.validate_at = clock, validate_at
        self.stopped_at: dict | None = None  # {"epoch", "step_in_epoch", "elapsed_s"}
        self.epoch, self.offset = 0, 0

    def on_epoch_begin(self, epoch, logs=None):
        self.epoch = epoch

    def on_train_batch_end(self, batch, logs=None):
        if self.seconds is None or self.stopped_at or self.clock.elapsed() < self.seconds:
            return
        self.model.stop_training = True
        if self.epoch + 1 not in self.validate_at:
            self.validate_at.append(self.epoch + 1)
        self.stopped_at = {"epoch": self.epoch + 1, "step_in_epoch": self.offset + batch + 1,
                           "elapsed_s": round(self.clock.elapsed(), 1)}
        _say(f"\nseg: time budget of {self.seconds / 60:g} min reached after step "
             f"{self.offset + batch + 1} of epoch {self.epoch + 1}: validating it, saving, "
             "stopping (trainer.time_budget_minutes)")

    def on_epoch_end(self, epoch, logs=None):
        self.offset = 0
        if self.seconds is not None and not self.stopped_at and \
                self.clock.elapsed() >= self.seconds:  # spent during validation
            self.model.stop_training = True
            self.stopped_at = {"epoch": epoch + 1, "step_in_epoch": None,
                               "elapsed_s": round(self.clock.elapsed(), 1)}
            _say(f"seg: time budget of {self.seconds / 60:g} min reached at the end of epoch "
                 f"{epoch + 1}: stopping (trainer.time_budget_minutes)")

    def get_state(self) -> dict:
        return {"stopped_at": self.stopped_at}

    def set_state(self, state: dict):
        self.stopped_at = state.get("stopped_at")


def validation_epochs(epochs: int, every: int) -> list[int]:
    """The epochs (1-based) that validate: every `every`-th, and the last."""
    return sorted(set(range(every, epochs + 1, every)) | {epochs})


def run(cfg: dict, output_dir: str | Path, run_name: str | None = None,
        overrides: list[str] = (), callbacks: list = (), timings: dict | None = None,
        files: dict | None = None, trial: hparams.Trial | None = None) -> dict:
    """Train the configured model and write everything about the run into output_dir.

    A run folder that already holds a resume state (checkpoints/resume/) is continued where
    it stopped: weights, optimizer and schedule, epoch, best value, callbacks' state and the
    position in the data stream (trainer.resume=false moves the old run aside instead).

    Args:
        cfg: the resolved config tree as plain dicts (see configs/train.yaml).
        output_dir: the run folder; receives config.json, tb/, checkpoints/, panels/,
            diagnostics/ and metrics.json.
        run_name: a readable name (the overrides that made the run), recorded in metrics.json.
        overrides: the command-line overrides; the keys they set join the logged hparams.
        callbacks: extra Keras callbacks (after seg's own).
        timings: a dict that receives the seconds spent in each of seg's callbacks, by class
            name (scripts/benchmark.py).
        files: more files for the run folder, {relative path: text}, written with config.json
            once the folder's checks passed (the Hydra glue's .hydra/ record).
        trial: the run's row in TensorBoard's HPARAMS tab (its name, the columns first shown,
            the sweep folder for the experiment config); by default named by the run folder.

    Returns:
        The metrics written to metrics.json.

    Raises:
        ConfigError, DataError, diagnostics.PreflightError: set-ups that cannot work.
        checkpoints.CheckpointError: the run folder cannot be written, or is in use.
        seg.runfolder.NonFiniteLoss: the loss became NaN/Inf (the step is named).
        seg.runfolder.Interrupted: SIGTERM/SIGINT; the same command resumes.
    """
    clock = Clock()
    check_config(cfg)                                   # refused before anything is written
    plan = start_strategy(cfg["trainer"])
    out = Path(output_dir)
    with runfolder.held(out, plan.is_chief), runfolder.Signals().handled() as signals:
        resuming = open_run_folder(cfg, out, plan.is_chief)
        parts = prepare(cfg, plan)  # data and model: a refusal here leaves no config.json
        if plan.is_chief and not resuming:
            write_config(cfg, out, files, parts.computed)
        describe(cfg, parts, plan, out)
        report = preflight(cfg, parts, out, plan.is_chief)
        training = compile_phases(cfg, parts, plan, resuming, out)
        cbs = make_callbacks(cfg, parts, out, plan.is_chief, report, training, clock,
                             list(callbacks), timings)
        signals.guard = cbs.guard
        begin = restore_or_start(cfg, parts, out, plan, resuming, cbs, clock, overrides, files,
                                 trial)
        signals.phase = "training"
        fit_phases(cfg, parts, training, cbs, begin)
        signals.phase = "re-scoring best.keras"
        if not plan.is_chief:
            return worker_result(cfg, parts, plan, begin, clock, run_name)
        return finish(cfg, out, parts, plan, report, training, cbs, begin, clock, run_name,
                      signals)


# --- the stages of run(), in order ----------------------------------------------------------

@dataclass
class Clock:
    """Seconds of training: this process's, plus those before the resumed state."""

    start: float = field(default_factory=time.time)
    before: float = 0.0  # elapsed_s of the restored state

    def elapsed(self) -> float:
        return self.before + time.time() - self.start


def check_config(cfg: dict):
    """Every key and value (the schema, speed settings included), and whether it fits in
    memory."""
    check_sections(cfg)
    resources.check(cfg, log=_say)  # what cannot fit, before anything is built


def start_strategy(trainer: dict) -> distribute.Plan:
    """The distribution strategy (before any TensorFlow op), and a clean Keras session."""
    plan = distribute.make(trainer["strategy"], trainer["cpu_devices"])
    keras.utils.clear_session(free_memory=True)  # release earlier jobs' models (multirun)
    if trainer["deterministic"]:
        tf.config.experimental.enable_op_determinism()
    return plan


def open_run_folder(cfg: dict, out: Path, chief: bool) -> Resuming | None:
    """Whether (and how) the folder's run resumes.

    Only the chief writes; a worker of a multi-worker run reads the chief's state where the
    run folder is shared. config.json is written once the data and model are made (a fresh
    run) or the state is restored (a resumed one).
    """
    if not chief:
        resume = cfg["trainer"]["resume"] and checkpoints.committed(out / "checkpoints" /
                                                                    "resume")
        return Resuming(best_lost=False) if resume else None
    resuming, best_lost = runfolder.open_folder(cfg, out, log=_say)
    return Resuming(best_lost=best_lost) if resuming else None


@dataclass
class Resuming:
    best_lost: bool  # best.keras was unusable (moved aside) or missing


def write_config(cfg: dict, out: Path, files: dict | None, computed: dict | None = None):
    """config.json (atomic), with what was computed from the data under "computed"."""
    written = {**cfg, "computed": computed} if computed else cfg
    runfolder.write_files(out, {"config.json": written, **(files or {})})


def describe(cfg: dict, parts: Parts, plan: distribute.Plan, out: Path):
    """The run's first lines: the distribution, the data, the model and the folder."""
    trainer = cfg["trainer"]
    if plan.distributed:
        rate = learning_rate_of(trainer, plan)
        print(f"seg: {plan.describe(trainer['batch_size'])}; learning rate {rate:g}"
              + (f" (x{plan.replicas}, trainer.lr_scaling=linear)"
                 if rate != float(trainer["learning_rate"]) else ""), flush=True)
    print(f"seg: {parts.source.description}; model {parts.model.name}, "
          f"{parts.model.count_params():,} parameters; run folder {out}", flush=True)


def learning_rate_of(trainer: dict, plan: distribute.Plan) -> float:
    return float(trainer["learning_rate"]) * (plan.replicas if trainer["lr_scaling"] == "linear"
                                              else 1)


def preflight(cfg: dict, parts: Parts, out: Path, chief: bool) -> diagnostics.Report:
    """The checks before training (on every worker: all refuse, or none); the chief saves and
    prints the report. PreflightError refuses a broken set-up with diagnostics.preflight=error."""
    mode = cfg["diagnostics"]["preflight"]
    if mode == "off":
        return diagnostics.Report()
    report = diagnose(cfg, parts)
    refuse = bool(report.errors) and mode == "error"
    if chief:
        if not refuse and not (out / "diagnostics" / "preflight.txt").exists():  # not again
            seg_callbacks.log_report(out / "tb" / "validation", report)        # on resume
        report.save(out / "diagnostics")
        # a refusal's errors come once, in its message; the rest of the report here
        print(report.text(skip_errors=refuse), flush=True)
    if refuse:
        raise diagnostics.PreflightError(
            report.text(errors_only=True) + "\n\nTraining refused before the first step. To "
            "train anyway (for example to watch the collapse), set diagnostics.preflight=warn.")
    if report.errors:
        print(f"seg: training anyway despite {len(report.errors)} preflight error(s) "
              "(diagnostics.preflight=warn); the monitors will watch for a collapse.", flush=True)
    return report


@dataclass
class Training:
    """The compiled model's phases: (first epoch, end epoch) pairs, and how to re-compile."""

    phases: list[tuple[int, int]]
    encoder: keras.Model | None
    learning_rate: float
    compile: Callable[[int], None]  # done_steps -> compile with the schedule continuing there


def compile_phases(cfg: dict, parts: Parts, plan: distribute.Plan, resuming: Resuming | None,
                   out: Path) -> Training:
    """Compile the model for its first phase.

    Fine-tuning: with a frozen encoder and unfreeze_encoder_after=N, train the decoder for N
    epochs, then everything. Keras needs a new compile (and optimizer) to see new trainable
    weights; the callbacks carry over, so checkpoints and TensorBoard continue. A resumed run
    is compiled for the phase its state was saved in.
    """
    trainer, model = cfg["trainer"], parts.model
    epochs, rate = trainer["epochs"], learning_rate_of(trainer, plan)
    schedule = make_schedule(trainer["schedule"], rate, epochs * parts.steps)

    def compile_model(done_steps: int = 0):
        with plan.strategy.scope():
            compile_for_training(model, parts.loss, parts.metrics, trainer, schedule, done_steps)

    after, encoder = trainer["unfreeze_encoder_after"], encoder_of(model)
    unfreeze_at = min(after, epochs) if after and encoder is not None and not encoder.trainable \
        else None
    phases = [(0, unfreeze_at), (unfreeze_at, epochs)] if unfreeze_at else [(0, epochs)]
    if resuming and unfreeze_at is not None:  # restore into the optimizer of the right phase
        states = checkpoints.committed(out / "checkpoints" / "resume")
        try:
            newest = json.loads(states[0].read_text()) if states else {}
        except (OSError, ValueError):
            newest = {}
        if newest.get("encoder_trainable"):
            encoder.trainable = True
    compile_model()
    return Training(phases, encoder, rate, compile_model)


@dataclass
class Callbacks:
    """seg's callbacks for fit(), made with every setting passed to their constructors."""

    monitor: seg_callbacks.CollapseMonitor
    throughput: seg_callbacks.Throughput
    checkpointer: runfolder.Checkpointer
    guard: runfolder.Guard
    budget: BudgetStop
    validate_at: list[int]  # fit()'s validation_freq: the epochs (1-based) that validate
    fit: list  # in the order fit() calls them, the user's last
    progress: dict  # "resumes": where each resumption started (the checkpointer saves it)


def make_callbacks(cfg: dict, parts: Parts, out: Path, chief: bool, report, training: Training,
                   clock: Clock, extra: list, timings: dict | None) -> Callbacks:
    """The monitor (seg.SegmentationMonitor's parts: its figures go into Keras' logs, its
    writes wait until the epoch is committed, so a resumed run never repeats a step), the
    checkpointer, TensorBoard, the panels and the guard."""
    data, trainer, epochs = cfg["data"], cfg["trainer"], cfg["trainer"]["epochs"]
    source = parts.source
    settings = {k: v for k, v in cfg["diagnostics"].items() if k in seg_callbacks.MONITOR_KEYS}
    if any(f.check in seg_callbacks.PROVEN_COLLAPSE for f in report.errors):
        settings["grace_epochs"] = 0  # proven before the first step: flag at once
    monitor = seg_callbacks.CollapseMonitor(
        parts.val_ds, num_classes=data["num_classes"], class_names=source.class_names,
        ignore_index=data["ignore_index"], log_dir=out / "tb" / "validation", into_logs=True,
        defer_writes=True, total_epochs=epochs, **settings)
    throughput = seg_callbacks.Throughput(parts.batch_size)
    validate_at = validation_epochs(epochs, trainer["validate_every"])
    budget = BudgetStop(trainer["time_budget_minutes"], clock, validate_at)
    stateful = {"monitor": monitor, "throughput": throughput, "budget": budget}
    if trainer["early_stopping_patience"]:
        stateful["early_stopping"] = ResumableEarlyStopping(
            monitor="val_mean_iou", mode="max", patience=trainer["early_stopping_patience"])
    progress = {"resumes": []}
    encoder = training.encoder
    checkpointer = runfolder.Checkpointer(
        out / "checkpoints", stateful=stateful, after_commit=[monitor.write_pending],
        extra=lambda: {"resumes": progress["resumes"], "steps_per_epoch": parts.steps,
                       "elapsed_s": clock.elapsed(), "config": cfg},  # compared on resume
        encoder_trainable=lambda: None if encoder is None else bool(encoder.trainable))
    scalars = seg_callbacks.EpochScalars(out / "tb", class_names=source.class_names)
    guard = runfolder.Guard(checkpointer, writes=chief,
                            flush=[monitor.write_pending, scalars.close] if chief else [])
    fit = [monitor, throughput, budget] + ([stateful["early_stopping"]] if "early_stopping" in stateful
                                   else []) + ([checkpointer, scalars] if chief else [])
    if trainer["verbose"] == "auto" and chief:  # seg's short epoch line (1, 2: Keras' own)
        fit.insert(0, seg_callbacks.Progress(epochs, steps_per_epoch=parts.steps))
    if cfg["logging"]["panels_every"] and chief:
        fit.append(seg_callbacks.PredictionPanels(
            source.val.map(lambda x, y: (tf.image.convert_image_dtype(x, tf.float32), y)),
            num_images=cfg["logging"]["num_panels"], every=cfg["logging"]["panels_every"],
            num_classes=data["num_classes"], class_names=source.class_names,
            ignore_index=data["ignore_index"], monitor=monitor, total_epochs=epochs,
            log_dir=out / "tb" / "validation", png_dir=out / "panels",
            proven=seg_callbacks.proven_collapse(report)))
    fit.append(guard)
    if timings is not None:
        fit = [seg_callbacks.Timed(cb, timings) for cb in fit]
    return Callbacks(monitor, throughput, checkpointer, guard, budget, validate_at, fit + extra,
                     progress)


@dataclass
class Begin:
    """Where training starts: epoch and step, and the restored state (None when fresh)."""

    epoch: int
    step: int
    state: dict | None


def restore_or_start(cfg: dict, parts: Parts, out: Path, plan: distribute.Plan,
                     resuming: Resuming | None, cbs: Callbacks, clock: Clock, overrides,
                     files: dict | None, trial: hparams.Trial | None = None) -> Begin:
    """Restore the newest resume state (weights, optimizer, callbacks, data position), or log
    a fresh run's hparams. A resumed run's config.json is written only now that its state
    fits this config."""
    model, steps, chief = parts.model, parts.steps, plan.is_chief
    resume_dir = out / "checkpoints" / "resume"
    state = None
    if resuming:
        model.optimizer.build(model.trainable_variables)
        state = checkpoints.restore_latest(model, resume_dir)
    if state is None:
        if chief:  # the HPARAMS tab names each run by its folder (and its sweep's folder)
            hparams.log_start(out / "tb" / "validation",
                              hparams.hparams_of(cfg, overrides, model.count_params()),
                              trial or hparams.Trial(f"{out.parent.name}/{out.name}"),
                              parts.source.class_names)
        return Begin(0, 0, None)
    if chief:
        write_config(cfg, out, files, parts.computed)
    else:
        print(f"seg: worker {plan.worker}: resuming from {state['checkpoint']}", flush=True)
    if state.get("steps_per_epoch", steps) != steps:
        raise ConfigError(
            f"{out}: the run made {state['steps_per_epoch']} steps per epoch, this config "
            f"makes {steps} (has the training set changed?), so the position in the data "
            "cannot be resumed; start over with trainer.resume=false or use another folder")
    checkpointer = cbs.checkpointer
    checkpointer.resume_from(state)
    print(f"seg: resuming {out} from {state['checkpoint']}: epoch {state['epoch']}, step "
          f"{state['step_in_epoch']} of {steps} in it (global step {state['global_step']})",
          flush=True)
    if resuming.best_lost and checkpointer.best_epoch is not None:
        print(f"seg: best.keras (epoch {checkpointer.best_epoch}) was lost; the best of the "
              "epochs from here on will be kept instead", flush=True)
        checkpointer.best, checkpointer.best_epoch = -math.inf, None
    epoch, step = state["epoch"], state["step_in_epoch"]
    if state.get("stopped"):  # early stopping or a collapse stop had ended it
        print(f"seg: the run had stopped at epoch {epoch}; only re-scoring it", flush=True)
        epoch, step = cfg["trainer"]["epochs"], 0
    cbs.progress["resumes"] = state.get("resumes", []) + [{"epoch": epoch, "step": step}]
    clock.before = state.get("elapsed_s", 0.0)
    return Begin(epoch, step, state)


def fit_phases(cfg: dict, parts: Parts, training: Training, cbs: Callbacks, begin: Begin):
    """model.fit over the phases from where the run begins (the rest of an interrupted epoch
    first); Interrupted when a signal came during the last epoch."""
    model, steps = parts.model, parts.steps
    verbose = cfg["trainer"]["verbose"]
    if verbose == "auto":
        verbose = 0  # seg's Progress callback shows the epochs (make_callbacks)

    def fit(first: int, last: int, skip_steps: int = 0) -> bool:
        """Epochs first..last-1 (the first of them from step skip_steps on)."""
        cbs.guard.offset = cbs.budget.offset = skip_steps
        with data_errors_named():
            model.fit(parts.train_stream(first * steps + skip_steps), validation_data=parts.val_ds,
                      validation_freq=cbs.validate_at, initial_epoch=first, epochs=last,
                      steps_per_epoch=steps - skip_steps if last == first + 1 else steps,
                      callbacks=cbs.fit, verbose=verbose, shuffle=False)
        return not model.stop_training

    for a, b in training.phases:
        first = max(a, begin.epoch)
        if first >= b:
            continue
        encoder = training.encoder
        if a and not encoder.trainable:  # entering the unfrozen phase now
            encoder.trainable = True
            training.compile(a * steps)
            print(f"seg: epoch {a}: encoder unfrozen, {model.count_params():,} parameters now "
                  "train", flush=True)
        go_on = True
        if first == begin.epoch and begin.step:  # the rest of an interrupted epoch
            go_on = fit(first, first + 1, begin.step)
            first += 1
        if go_on and first < b:
            go_on = fit(first, b)
        if not go_on:
            break
    if cbs.guard.signal is not None:  # it came after the last step began: the epoch is saved
        raise runfolder.Interrupted(
            f"signal {cbs.guard.signal}: stopped at the end of training; resume state "
            f"{cbs.checkpointer.last_committed} (the next start only re-scores best.keras)")


def worker_result(cfg: dict, parts: Parts, plan: distribute.Plan, begin: Begin, clock: Clock,
                  run_name: str | None) -> dict:
    """What a worker other than the chief returns (the chief writes metrics.json)."""
    model = parts.model
    last = model.history.history if getattr(model, "history", None) else {}
    return {"run_name": run_name, "decoder": cfg["decoder"]["name"], "worker": plan.worker,
            "val_mean_iou": last.get("val_mean_iou", [float("nan")])[-1],
            "epochs_completed": begin.epoch + len(last.get("loss", [])),
            "wall_time_s": round(clock.elapsed(), 1)}


def finish(cfg: dict, out: Path, parts: Parts, plan: distribute.Plan, report,
           training: Training, cbs: Callbacks, begin: Begin, clock: Clock,
           run_name: str | None, signals: runfolder.Signals) -> dict:
    """Score best.keras on the validation split and write metrics.json (atomically)."""
    history, train_time = cbs.checkpointer.history, clock.elapsed()
    best_path = out / "checkpoints" / "best.keras"
    best = keras.saving.load_model(best_path, safe_mode=True) if best_path.exists() \
        else parts.model
    with data_errors_named():
        final = best.evaluate(parts.val_ds, return_dict=True, verbose=0)
    source, trainer, n = parts.source, cfg["trainer"], cfg["data"]["num_classes"]
    val_miou = history.get("val_mean_iou", [])
    metrics = {
        "run_name": run_name,
        "decoder": cfg["decoder"]["name"],
        "val_mean_iou": final["mean_iou"],
        "val_pixel_accuracy": final["pixel_accuracy"],
        "val_dice": final["dice"],
        "val_loss": final["loss"],
        "val_iou_per_class": [final[f"iou_{k}"] for k in range(n)],
        "class_names": source.class_names,
        "epochs_completed": len(history.get("loss", [])),
        "best_epoch": _best_epoch(val_miou),
        "history": {k: [None if v is None else float(v) for v in vals]
                    for k, vals in history.items()},
        "validated_epochs": [i + 1 for i, v in enumerate(val_miou) if v is not None],
        "stopped_by_budget": cbs.budget.stopped_at is not None,
        "budget_stop": cbs.budget.stopped_at,
        "time_budget_minutes": trainer["time_budget_minutes"],
        "class_weights": parts.computed.get("loss.class_weights", cfg["loss"]["class_weights"]),
        "rare_classes": parts.computed.get("data.rare_classes"),
        "wall_time_s": round(train_time, 1),
        "train_images_per_s": cbs.throughput.images_per_s(),
        "encoder": cfg["model"]["encoder"],
        "parameters": parts.model.count_params(),
        "diagnostics": {**cbs.monitor.summary(), "preflight": report.as_dict()},
        "checkpoint": str(best_path),
        "resumes": cbs.progress["resumes"],
        "strategy": plan.name, "replicas": plan.replicas, "workers": plan.workers,
        "global_batch_size": parts.batch_size, "learning_rate": training.learning_rate,
        "precision": trainer["precision"],
        "rss_mb_per_epoch": cbs.throughput.rss_mb,
        "rss_mb_at_end": seg_callbacks.rss_mb(),  # the process's memory after the run
        "skipped_samples": [{"file": f, "reason": r} for f, r in source.skipped.items()],
        "skipped_count": len(source.skipped),
        "channels": source.channels,
        # 16-bit/float bands: the per-band statistics the model standardises with (in it too)
        "band_stats": ({"mean": source.band_stats[0], "std": source.band_stats[1]}
                       if source.band_stats else None),
        "encoder_notes": list(getattr(parts.model, "seg_notes", [])),
    }
    if source.skipped:
        print(f"seg: {len(source.skipped)} sample(s) skipped (data.on_bad_sample=skip), listed "
              f"in metrics.json: " + ", ".join(list(source.skipped)[:5]), flush=True)
    signals.phase = "writing metrics.json"
    if not (out / "metrics.json").exists():  # not again when a finished run is re-run
        hparams.log_final(out / "tb" / "validation", metrics, step=metrics["epochs_completed"])
    checkpoints.write_json(out / "metrics.json", metrics)
    return metrics


def _best_epoch(val_miou: list) -> int | None:
    """The first epoch (1-based) of the highest validated mIoU; None when none validated."""
    scored = [(v, -i) for i, v in enumerate(val_miou) if v is not None and not math.isnan(v)]
    return -max(scored)[1] + 1 if scored else None


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


__all__ = ["ConfigError", "DataError", "run"]
