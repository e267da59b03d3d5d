"""Keras callbacks that show and watch what the network predicts during training."""

from __future__ import annotations

import io
import math
import time
from pathlib import Path

import keras
import numpy as np
import tensorflow as tf
from PIL import Image

from seg import viz

MONITOR_KEYS = ("constant_share", "constant_spread", "vanished_share", "stop_on_collapse",
                "monitor", "grace_epochs")


def probabilities(y_pred: np.ndarray, from_logits: bool) -> np.ndarray:
    """[B, H, W, K] class probabilities from a model output; a 1-channel head gives K = 2."""
    y_pred = y_pred.astype(np.float64)
    if y_pred.shape[-1] == 1:
        p1 = 1 / (1 + np.exp(-y_pred[..., 0])) if from_logits else y_pred[..., 0]
        return np.stack([1 - p1, p1], axis=-1)
    if from_logits:
        e = np.exp(y_pred - y_pred.max(axis=-1, keepdims=True))
        return e / e.sum(axis=-1, keepdims=True)
    return y_pred


def compiled_forward(model: keras.Model):
    """model(x, training=False) as a TensorFlow graph, traced once per input shape.

    Called eagerly, a U-Net dispatches op by op: 2-6x slower than the traced graph on a small
    batch (scripts/benchmark.py prices the callbacks that call it every epoch).
    """
    return tf.function(lambda x: model(x, training=False), reduce_retracing=True)


def write_png_summary(name: str, png: bytes, width: int, height: int, step: int):
    """An already encoded PNG to TensorBoard's image tab (tf.summary.image would encode it
    again)."""
    from tensorboard.plugins.image import metadata

    tf.summary.write(name, tf.constant([str(width), str(height), png]), step=step,
                     metadata=metadata.create_summary_metadata(display_name=None,
                                                               description=None))


def output_stats(probs: np.ndarray, truth: np.ndarray, *, num_classes: int,
                 ignore_index: int) -> dict:
    """What the network predicts on labelled pixels: shares, spread and entropy.

    Returns majority_share (pixels in the most-predicted class), pred_share and true_share
    per class, spread (largest std over pixels of any class probability: ~0 for a flat output)
    and entropy (mean per-pixel entropy divided by ln K: 1 means no preference).
    """
    valid = (truth != ignore_index) & (truth >= 0) & (truth < num_classes)
    p = probs[valid]  # [N, K]
    if not len(p) or not np.isfinite(p).all():
        return {"finite": bool(np.isfinite(p).all()), "majority_share": float("nan"),
                "pred_share": [float("nan")] * num_classes,
                "true_share": [float("nan")] * num_classes, "spread": float("nan"),
                "entropy": float("nan")}
    pred = p.argmax(axis=-1)
    pred_share = np.bincount(pred, minlength=num_classes)[:num_classes] / len(pred)
    true_share = np.bincount(truth[valid], minlength=num_classes)[:num_classes] / len(pred)
    k = p.shape[-1]
    entropy = -(p * np.log(np.clip(p, 1e-12, 1))).sum(-1).mean() / math.log(k)
    return {"finite": True, "majority_share": float(pred_share.max()),
            "pred_share": pred_share.tolist(), "true_share": true_share.tolist(),
            "spread": float(p.std(axis=0).max()), "entropy": float(entropy)}


def alarms_for(stats: dict, *, class_names: list[str], constant_share: float,
               constant_spread: float, vanished_share: float, final: bool = True,
               seen: set[int] | frozenset = frozenset()) -> list[str]:
    """Alarm messages for collapsed outputs: non-finite, constant output, class vanished.

    A class counts as vanished when it is predicted on under `vanished_share` of its true share
    and either it was predicted before (in `seen`: the network lost it) or training is over
    (`final`: it never learned it). A class not learned yet in the middle of training is not
    a collapse.
    """
    if not stats["finite"]:
        return ["non-finite output: the network predicts NaN/Inf (diverged; lower the learning "
                "rate)"]
    out = []
    if stats["majority_share"] >= constant_share or stats["spread"] < constant_spread:
        major = int(np.argmax(stats["pred_share"]))
        out.append(f"constant output: {100 * stats['majority_share']:.1f}% of pixels predicted "
                   f"as {class_names[major]}, probabilities vary by {stats['spread']:.3f} "
                   "across the image (the 'yellow image')")
    for k, name in enumerate(class_names):
        true, pred = stats["true_share"][k], stats["pred_share"][k]
        if true > 0.005 and pred < vanished_share * true and (final or k in seen):
            out.append(f"class vanished: {name} is {100 * true:.1f}% of true pixels but "
                       f"{100 * pred:.2f}% of predicted ones"
                       + (" (it was predicted before)" if k in seen else ""))
    return out


class CollapseMonitor(keras.callbacks.Callback):
    """Every epoch, watches the prediction on a fixed validation batch for a collapsed output.

    Logs the figures (val_majority_share, val_output_spread, val_output_entropy, and predicted
    and true share per class) to TensorBoard, writes alarms as TensorBoard text, keeps them for
    metrics.json and can stop the run on collapse. Alarms are held back during the first
    grace_epochs epochs (a fresh network is still near-uniform) except at the last epoch.
    """

    def __init__(self, val_ds, *, num_classes: int, class_names: list[str], ignore_index: int,
                 from_logits: bool, log_dir: str | Path, monitor: bool = True,
                 constant_share: float = 0.98, constant_spread: float = 0.02,
                 vanished_share: float = 0.1, stop_on_collapse: bool = False,
                 grace_epochs: int = 1):
        super().__init__()
        self.enabled = monitor
        self.batch = next(iter(val_ds)) if monitor else None
        self.num_classes, self.class_names = num_classes, class_names
        self.ignore_index, self.from_logits = ignore_index, from_logits
        self.thresholds = {"constant_share": constant_share, "constant_spread": constant_spread,
                           "vanished_share": vanished_share}
        self.stop_on_collapse, self.grace_epochs = stop_on_collapse, grace_epochs
        self.log_dir = str(log_dir)
        self.alarms: list[dict] = []
        self.last_stats: dict | None = None
        self.current_alarms: list[str] = []
        self.seen: set[int] = set()  # classes the network has predicted at some epoch
        self._epoch, self._final = 0, False
        self._writer = None
        self.defer_writes = False  # True: TensorBoard/print happen in write_pending() (resume)
        self._pending: list = []
        self._forward = None

    def set_model(self, model):
        super().set_model(model)
        self._forward = compiled_forward(model)

    def get_state(self) -> dict:
        return {"alarms": self.alarms, "seen": sorted(self.seen), "last_stats": self.last_stats,
                "current_alarms": self.current_alarms, "epoch": self._epoch}

    def set_state(self, state: dict):
        self.alarms, self.seen = list(state["alarms"]), set(state["seen"])
        self.last_stats, self.current_alarms = state["last_stats"], list(state["current_alarms"])
        self._epoch = state["epoch"]

    total_epochs: int | None = None  # set by the trainer when training is split in fit() calls

    def on_epoch_end(self, epoch, logs=None):
        if not self.enabled:
            return
        total = self.total_epochs or self.params.get("epochs", epoch + 1)
        self._check(epoch, logs, final=epoch + 1 >= total)

    def on_train_end(self, logs=None):
        # Stopped before the last epoch (early stopping, collapse): judge the last state as final.
        # The end of a fit() that training goes on after (a fine-tune phase, the rest of an
        # interrupted epoch) is not the end of training.
        more = self.total_epochs and self._epoch + 1 < self.total_epochs
        if more and not self.model.stop_training:
            return
        if self.enabled and not self._final and self.last_stats is not None:
            self.current_alarms = alarms_for(self.last_stats, class_names=self.class_names,
                                             final=True, seen=self.seen, **self.thresholds)
            logged = {a["alarm"] for a in self.alarms if a["epoch"] == self._epoch + 1}
            for message in self.current_alarms:
                if message not in logged:
                    self.alarms.append({"epoch": self._epoch + 1, "alarm": message})
                    print(f"\n[seg monitor] end of training: {message}", flush=True)

    def _check(self, epoch, logs, final: bool):
        self._epoch, self._final = epoch, final
        x, y = self.batch
        probs = probabilities(np.asarray(self._forward(x)), self.from_logits)
        stats = output_stats(probs, np.asarray(y), num_classes=self.num_classes,
                             ignore_index=self.ignore_index)
        self.last_stats = stats
        found = alarms_for(stats, class_names=self.class_names, final=final, seen=self.seen,
                           **self.thresholds)
        if stats["finite"]:
            self.seen |= {k for k, (t, p) in enumerate(zip(stats["true_share"], stats["pred_share"]))
                          if t > 0.005 and p >= 0.5 * t}
        self.current_alarms = found if (epoch >= self.grace_epochs or final) else []
        for message in self.current_alarms:
            self.alarms.append({"epoch": epoch + 1, "alarm": message})
        if logs is not None:  # into the logs, so the TensorBoard callback and History keep them
            logs["val_majority_share"] = stats["majority_share"]
            logs["val_output_spread"] = stats["spread"]
            logs["val_output_entropy"] = stats["entropy"]
            logs["val_alarms"] = float(len(self.current_alarms))
        self._pending.append((epoch, stats, list(self.current_alarms)))
        if not self.defer_writes:
            self.write_pending()
        if self.stop_on_collapse and not final and any(
                a.startswith(("constant", "non-finite")) for a in self.current_alarms):
            print("[seg monitor] stopping: diagnostics.stop_on_collapse=true", flush=True)
            self.model.stop_training = True

    def write_pending(self):
        """Write the checked epochs' figures and alarms to TensorBoard and the log."""
        for epoch, stats, alarms in self._pending:
            if self._writer is None:
                self._writer = tf.summary.create_file_writer(self.log_dir)
            with self._writer.as_default(step=epoch):
                for k, name in enumerate(self.class_names):
                    tf.summary.scalar(f"diagnostics/pred_share/{name}", stats["pred_share"][k])
                    tf.summary.scalar(f"diagnostics/true_share/{name}", stats["true_share"][k])
                text = "\n".join(f"* {a}" for a in alarms) or "no alarm"
                tf.summary.text("diagnostics/alarms", text)
            self._writer.flush()
            for message in alarms:
                print(f"\n[seg monitor] epoch {epoch + 1}: {message}", flush=True)
        self._pending = []

    def summary(self) -> dict:
        """The 'diagnostics' entry of metrics.json."""
        final = self.current_alarms
        return {"constant_output": any(a.startswith(("constant", "non-finite")) for a in final),
                "class_vanished": any(a.startswith("class vanished") for a in final),
                "alarms": self.alarms, "final_output_stats": self.last_stats}


def rss_mb() -> float | None:
    """The process's resident memory now, in MB (Linux), or None where unknown."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return round(int(line.split()[1]) / 1024, 1)
    except OSError:
        pass
    return None


class Throughput(keras.callbacks.Callback):
    """Training images per second of every epoch (validation and callbacks excluded), and the
    process's memory at every epoch's end (flat, unless something leaks)."""

    def __init__(self, batch_size: int):
        super().__init__()
        self.batch_size, self.rates = batch_size, []
        self.rss_mb: list[float | None] = []  # the process's memory at every epoch's end
        self._start, self._steps = 0.0, 0

    def on_epoch_begin(self, epoch, logs=None):
        self._start, self._steps = time.perf_counter(), 0

    def on_train_batch_end(self, batch, logs=None):
        self._steps = batch + 1  # batch: the last step done (several with steps_per_execution)
        self._end = time.perf_counter()

    def on_epoch_end(self, epoch, logs=None):
        if self._steps:
            self.rates.append(self._steps * self.batch_size / max(self._end - self._start, 1e-9))
        self.rss_mb.append(rss_mb())

    def get_state(self) -> dict:
        return {"rates": self.rates, "rss_mb": self.rss_mb}

    def set_state(self, state: dict):
        self.rates, self.rss_mb = list(state["rates"]), list(state.get("rss_mb", []))

    def images_per_s(self) -> float | None:
        """Median over the epochs after the first (which includes tracing and compilation)."""
        rates = self.rates[1:] or self.rates
        return round(float(np.median(rates)), 1) if rates else None


class PredictionPanels(keras.callbacks.Callback):
    """Side-by-side panels of fixed validation images, to TensorBoard and PNG every N epochs."""

    def __init__(self, val_source, *, num_images: int, every: int, num_classes: int,
                 class_names: list[str], ignore_index: int, from_logits: bool,
                 log_dir: str | Path, png_dir: str | Path, monitor: CollapseMonitor | None = None):
        super().__init__()
        self.samples = [(tf.image.convert_image_dtype(x, tf.float32).numpy(), y.numpy())
                        for x, y in val_source.take(num_images)]
        self.every, self.num_classes, self.class_names = every, num_classes, class_names
        self.ignore_index, self.from_logits = ignore_index, from_logits
        self.log_dir, self.png_dir, self.monitor = str(log_dir), Path(png_dir), monitor
        self._writer = self._forward = None

    def set_model(self, model):
        super().set_model(model)
        self._forward = compiled_forward(model)

    def render(self, epoch: int) -> np.ndarray:
        preds, confs = [], []
        for x, _ in self.samples:
            probs = probabilities(np.asarray(self._forward(x[None]))[0], self.from_logits)
            preds.append(probs.argmax(-1))
            confs.append(probs.max(-1))
        alarms = self.monitor.current_alarms if self.monitor else []
        banner = next((a for a in alarms if a.startswith(("constant", "non-finite"))), "")
        return viz.panel([x for x, _ in self.samples], [y for _, y in self.samples], preds, confs,
                         class_names=self.class_names, ignore_index=self.ignore_index,
                         title=f"epoch {epoch + 1}", banner=banner.split(" (the")[0])

    total_epochs: int | None = None

    def on_epoch_end(self, epoch, logs=None):
        last = epoch + 1 >= (self.total_epochs or self.params.get("epochs", epoch + 1))
        if (epoch + 1) % self.every and not last and not self.model.stop_training:
            return
        picture = self.render(epoch)
        self.png_dir.mkdir(parents=True, exist_ok=True)
        buffer = io.BytesIO()  # encoded once, for the file and for TensorBoard
        Image.fromarray(picture).save(buffer, format="PNG", compress_level=3)
        (self.png_dir / f"epoch_{epoch + 1:03d}.png").write_bytes(buffer.getvalue())
        if self._writer is None:
            self._writer = tf.summary.create_file_writer(self.log_dir)
        with self._writer.as_default():
            write_png_summary("predictions", buffer.getvalue(), picture.shape[1],
                              picture.shape[0], step=epoch)
        self._writer.flush()


class Interrupted(BaseException):
    """SIGTERM or SIGINT: a checkpoint was written; the same command resumes the run.

    A BaseException, like KeyboardInterrupt, so that a sweep stops instead of going on.
    """

    exit_code = 75  # EX_TEMPFAIL: try again (the same command resumes)


class NonFiniteLoss(RuntimeError):
    """The training loss became NaN or Inf; the message names the step."""


class Checkpointer(keras.callbacks.Callback):
    """At every epoch end: best.keras (by val mIoU), last.keras and the resume state, atomically.

    Keeps the history and best value itself, and the state of the `stateful` callbacks
    (get_state/set_state), so a resumed run carries on exactly where the committed state was.
    Non-finite weights are never saved (seg.checkpoints raises NonFiniteWeights).
    """

    def __init__(self, folder: str | Path, *, monitor: str = "val_mean_iou",
                 stateful: dict | None = None, after_commit=()):
        super().__init__()
        self.folder = Path(folder)
        self.monitor, self.stateful = monitor, dict(stateful or {})
        self.after_commit = list(after_commit)  # called after each commit (deferred writes)
        self.history: dict[str, list] = {}
        self.best, self.best_epoch = -math.inf, None
        self.last_committed: Path | None = None
        self.position: tuple[int, int] | None = None  # (epoch, step in it) last committed
        self.extra = lambda: {}  # more JSON state from the trainer (resumes, elapsed time)
        self.encoder_trainable = lambda: None  # the fine-tuning phase the optimizer belongs to

    def state(self, epoch: int, step_in_epoch: int) -> dict:
        return {"epoch": epoch, "step_in_epoch": step_in_epoch,
                "global_step": int(self.model.optimizer.iterations.numpy()),
                "stopped": bool(self.model.stop_training) and step_in_epoch == 0,
                "encoder_trainable": self.encoder_trainable(),
                "history": self.history, "best": self.best, "best_epoch": self.best_epoch,
                "callbacks": {name: cb.get_state() for name, cb in self.stateful.items()},
                **self.extra()}

    def restore(self, state: dict):
        self.history = {k: list(v) for k, v in state["history"].items()}
        self.best = float(state["best"]) if state["best"] is not None else -math.inf
        self.best_epoch = state["best_epoch"]
        for name, cb_state in state["callbacks"].items():
            if name in self.stateful:
                self.stateful[name].set_state(cb_state)

    def commit(self, epoch: int, step_in_epoch: int = 0, *, check_finite: bool = True) -> Path:
        from seg import checkpoints

        self.last_committed = checkpoints.save_state(self.model, self.folder / "resume",
                                                     self.state(epoch, step_in_epoch),
                                                     check_finite=check_finite)
        self.position = (epoch, step_in_epoch)
        return self.last_committed

    def on_epoch_end(self, epoch, logs=None):
        from seg import checkpoints

        if not checkpoints.finite(self.model):  # the last step's loss was still finite
            raise NonFiniteLoss(
                f"the weights became NaN/Inf by step {int(self.model.optimizer.iterations.numpy())}"
                f" (end of epoch {epoch + 1}); nothing was saved after it. Last good state: "
                f"{self.last_committed or 'none yet'}. Lower trainer.learning_rate, or check the "
                "data for NaN/Inf values")
        logs = logs or {}
        for key, value in logs.items():
            self.history.setdefault(key, []).append(float(value))
        value = float(logs.get(self.monitor, float("nan")))
        if math.isfinite(value) and value > self.best:  # weights checked above: no re-scan
            checkpoints.save_keras(self.model, self.folder / "best.keras", check_finite=False)
            self.best, self.best_epoch = value, epoch + 1
        checkpoints.save_keras(self.model, self.folder / "last.keras", check_finite=False)
        self.commit(epoch + 1, check_finite=False)
        for fn in self.after_commit:
            fn()


class Guard(keras.callbacks.Callback):
    """Stops on a NaN/Inf loss (naming the step) and on SIGTERM/SIGINT (after a checkpoint).

    Signals are only noted by the handler; the current step finishes, the resume state is
    written at that step, TensorBoard is flushed, and Interrupted is raised. A second SIGINT
    stops at once (KeyboardInterrupt).
    """

    def __init__(self, checkpointer: Checkpointer, flush=()):
        super().__init__()
        self.checkpointer, self.flush = checkpointer, list(flush)
        self.signal: int | None = None
        self.epoch, self.offset = 0, 0  # offset: steps of this epoch done before this fit
        self.writes = True  # False on the workers of a multi-worker run other than the chief

    def on_epoch_begin(self, epoch, logs=None):
        self.epoch = epoch

    def on_epoch_end(self, epoch, logs=None):
        self.offset = 0

    def on_train_batch_begin(self, batch, logs=None):
        if self.signal is None:
            return
        position = (self.epoch, self.offset + batch)  # the steps done so far
        path = self.checkpointer.last_committed
        if self.writes and position != self.checkpointer.position and position != (0, 0):
            path = self.checkpointer.commit(*position)
        for fn in self.flush:
            fn()
        raise Interrupted(f"signal {self.signal}: stopped after step "
                          f"{int(self.model.optimizer.iterations.numpy())}; resume state {path}")

    def on_train_batch_end(self, batch, logs=None):
        loss = float((logs or {}).get("loss", 0.0))
        if not math.isfinite(loss):
            step = int(self.model.optimizer.iterations.numpy())
            last = self.checkpointer.last_committed
            raise NonFiniteLoss(
                f"the training loss became {loss} at step {step} (epoch {self.epoch + 1}, batch "
                f"{self.offset + batch + 1}); nothing was saved after it. Last good state: "
                f"{last or 'none yet'}. Lower trainer.learning_rate, or check the data for "
                "NaN/Inf values")


class Timed(keras.callbacks.Callback):
    """Runs a callback and adds the seconds each of its hooks takes to seconds[its class name].

    What scripts/benchmark.py uses to put a price on monitors, image logging and checkpoints.
    """

    HOOKS = ("on_train_begin", "on_train_end", "on_epoch_begin", "on_epoch_end",
             "on_train_batch_begin", "on_train_batch_end", "on_test_begin", "on_test_end",
             "on_test_batch_begin", "on_test_batch_end")

    def __init__(self, callback: keras.callbacks.Callback, seconds: dict):
        super().__init__()
        self.callback, self.seconds = callback, seconds
        name = type(callback).__name__
        seconds.setdefault(name, 0.0)
        for hook in self.HOOKS:
            setattr(self, hook, self._timed(name, getattr(callback, hook)))

    def _timed(self, name, fn):
        def hook(*args, **kwargs):
            start = time.perf_counter()
            try:
                return fn(*args, **kwargs)
            finally:
                self.seconds[name] += time.perf_counter() - start
        return hook

    def set_model(self, model):
        super().set_model(model)
        self.callback.set_model(model)

    def set_params(self, params):
        super().set_params(params)
        self.callback.set_params(params)
