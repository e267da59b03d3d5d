"""run(cfg, output_dir): the one function that reads the config tree and trains a model, in
named stages.

Everything below this module takes plain keyword arguments; scripts/ turns Hydra's DictConfig
into the plain dict this module reads. What a config builds is seg.parts, the checks before
training seg.preflight, the stopping callbacks seg.stopping.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import keras
import tensorflow as tf

from seg import callbacks as seg_callbacks
from seg import checkpoints, distribute, hparams, resources, runfolder
from seg.config import ConfigError
from seg.data import DataError
from seg.models import encoder_of
from seg.monitor import MONITOR_KEYS, CollapseMonitor, SegmentationMonitor
from seg.parts import (  # noqa: F401
    BALANCE_MASKS,
    Parts,
    balance,
    build,
    check_data,
    check_precision,
    check_sections,
    compile_options,
    data_errors_named,
    open_data,
    pipeline_kwargs,
    prepare,
    sized,
    say,
    set_precision,
)
from seg.preflight import diagnose, diagnose_model, preflight  # noqa: F401
from seg.stopping import BudgetStop, Clock, ResumableEarlyStopping


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


def compile_for_training(model, loss, metrics, trainer: dict, schedule, done_steps: int = 0):
    """model.compile with the configured optimizer on a learning-rate schedule (continuing
    after done_steps), XLA and steps per execution."""
    optimizer = make_optimizer(trainer["optimizer"], schedule, trainer["weight_decay"],
                               trainer["momentum"])
    optimizer.iterations.assign(done_steps)  # the schedule continues where it was
    model.compile(optimizer=optimizer, loss=loss, metrics=metrics, **compile_options(trainer))


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
    check_sections(cfg)                                 # refused before anything is written
    plan = start_strategy(cfg["trainer"])               # before TensorFlow reads the data
    cfg, sizes = check_config(cfg)                      # the auto sizes; what cannot fit
    out = Path(output_dir)
    with runfolder.held(out, plan.is_chief), runfolder.Signals().handled() as signals:
        resuming = open_run_folder(cfg, out, plan.is_chief)
        parts = prepare(cfg, plan, checked=True)  # a refusal here leaves no config.json
        if sizes:  # config.json holds the numbers; computed.auto says they were auto
            parts.computed["auto"] = {**sizes, **parts.computed.get("auto", {})}
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

def check_config(cfg: dict) -> tuple[dict, dict]:
    """Every key and value (the schema, speed settings included), and whether it fits in
    memory: the config with its `auto` crop, depth and batch made numbers from the data
    (parts.sized), and what they became."""
    check_sections(cfg)
    cfg, sizes = sized(cfg)
    if sizes:
        check_sections(cfg)  # the rules between the sizes, now numbers
    resources.check(cfg, log=say)  # what cannot fit, before anything is built
    return cfg, sizes


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
    resuming, best_lost = runfolder.open_folder(cfg, out, log=say)
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
    subset = parts.resolved(cfg)["trainer"].get("validation_images")
    if parts.fit_val_ds is not None and parts.fit_val_ds is not parts.val_ds:
        print(f"seg: each validation scores the first {subset} of the "
              f"{parts.source.num_val} validation images (trainer.validation_images); "
              "best.keras is scored on all of them at the end", flush=True)


def learning_rate_of(trainer: dict, plan: distribute.Plan) -> float:
    return float(trainer["learning_rate"]) * (plan.replicas if trainer["lr_scaling"] == "linear"
                                              else 1)


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

    monitor: CollapseMonitor
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
    settings = {k: v for k, v in cfg["diagnostics"].items() if k in MONITOR_KEYS}
    logging = cfg["logging"]
    watch = SegmentationMonitor(  # the collapse monitor and the panels, as for any model.fit
        parts.val_ds, log_dir=out / "tb" / "validation", report=report, announce=False,
        num_classes=data["num_classes"], class_names=source.class_names,
        ignore_index=data["ignore_index"], into_logs=True, defer_writes=True,
        total_epochs=epochs, every=logging["panels_every"] if chief else 0,
        num_images=max(logging["num_panels"], 1), png_dir=out / "panels",
        panel_data=source.val.map(lambda x, y: (tf.image.convert_image_dtype(x, tf.float32), y)),
        **settings)
    monitor = watch.collapse
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
        out / "checkpoints", stateful=stateful, after_commit=[watch.write_pending],
        extra=lambda: {"resumes": progress["resumes"], "steps_per_epoch": parts.steps,
                       "elapsed_s": clock.elapsed(), "config": cfg},  # compared on resume
        encoder_trainable=lambda: None if encoder is None else bool(encoder.trainable))
    scalars = seg_callbacks.EpochScalars(out / "tb", class_names=source.class_names)
    guard = runfolder.Guard(checkpointer, writes=chief,
                            flush=[watch.write_pending, scalars.close] if chief else [])
    fit = [watch, throughput, budget] + (
        [stateful["early_stopping"]] if "early_stopping" in stateful else []) + (
        [checkpointer, scalars] if chief else [])
    if trainer["verbose"] == "auto" and chief:  # seg's short epoch line (1, 2: Keras' own)
        fit.insert(0, seg_callbacks.Progress(epochs, steps_per_epoch=parts.steps))
    fit.append(guard)
    if timings is not None:  # each part priced on its own (scripts/benchmark.py)
        watch.parts = [seg_callbacks.Timed(part, timings) for part in watch.parts]
        fit = [cb if cb is watch else seg_callbacks.Timed(cb, timings) for cb in fit]
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
                              hparams.hparams_of(parts.resolved(cfg), overrides,
                                                model.count_params()),
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
            model.fit(parts.train_stream(first * steps + skip_steps),
                      validation_data=parts.fit_val_ds or parts.val_ds,
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
        "auto": parts.computed.get("auto", {}),  # what each `auto` setting became
        "steps_per_epoch": parts.steps,
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


__all__ = ["ConfigError", "DataError", "run"]
