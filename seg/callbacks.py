"""Keras callbacks that show and watch what the network predicts during training."""

from __future__ import annotations

import io
import sys
import time
from pathlib import Path

import keras
import numpy as np
import tensorflow as tf
from PIL import Image

from seg import viz
from seg.diagnostics import diagnose, first_output
from seg.monitor import Alarm, alarms_for, collapse_of, constant_loss, output_stats
from seg.diagnostics.reading import Head, as_image, class_indices, probabilities, read_head
from seg.tags import class_tags, epoch_tag

MONITOR_KEYS = ("constant_share", "constant_spread", "vanished_share", "stop_on_collapse",
                "monitor", "grace_epochs")


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


MONITOR_BATCH = 16  # validation images the collapse monitor predicts every epoch
ZERO_LOSS = 1e-6  # a training loss below this in every epoch from the first is a constant loss


def first_batch(validation_data, limit: int = MONITOR_BATCH) -> tuple[np.ndarray, np.ndarray]:
    """(images, masks) of the first validation batch, from arrays or a dataset of batches."""
    if isinstance(validation_data, tf.data.Dataset):
        x, y = next(iter(validation_data))[:2]
        x, y = np.asarray(x), np.asarray(y)
        return (x[None], y[None]) if x.ndim == 3 else (x[:limit], y[:limit])
    if isinstance(validation_data, keras.utils.PyDataset):
        validation_data = _batch_of(validation_data)
    x, y = validation_data[:2]
    return np.asarray(x[:limit]), np.asarray(y[:limit])


def take_images(validation_data, n: int) -> list[tuple[np.ndarray, np.ndarray]]:
    """The first n (image, mask) pairs, one by one, from arrays or a dataset (batched or not)."""
    if isinstance(validation_data, keras.utils.PyDataset):
        validation_data = _batch_of(validation_data)
    if not isinstance(validation_data, tf.data.Dataset):
        x, y = validation_data[:2]
        return [(np.asarray(x[i]), np.asarray(y[i])) for i in range(min(n, len(x)))]
    out = []
    for element in validation_data:
        x, y = np.asarray(element[0]), np.asarray(element[1])
        pairs = [(x, y)] if x.ndim == 3 else list(zip(x, y))
        out += pairs[:n - len(out)]
        if len(out) >= n:
            break
    return out


def full_names(names, num_classes: int) -> list[str]:
    """Exactly num_classes names: the given ones, then class_K for the rest."""
    names = list(names or [])[:num_classes]
    return names + [f"class_{k}" for k in range(len(names), num_classes)]


def _batch_of(data):
    """The first (images, masks) batch of a keras.utils.PyDataset, a generator's first item."""
    return next(iter(data)) if not hasattr(data, "__getitem__") else data[0]


def read_output(model, x: np.ndarray, num_classes: int | None = None
                ) -> tuple[bool, int, Head]:
    """(from_logits, number of classes, the Head) of a model, read as seg.diagnose reads
    them; the Head folds a [B, H*W, C] output back into images (diagnostics.reading.as_image)."""
    head = read_head(model, np.asarray(first_output(model(x[:1], training=False))),
                     tuple(np.shape(x)[1:3]))
    classes = num_classes or (head.channels if head.channels and head.channels > 1 else 2)
    return not head.probabilities, classes, head


def training_mode_output(model, x: np.ndarray) -> np.ndarray:
    """The model's output on x with training=True (BatchNormalization on the batch's own
    statistics); the moving statistics and every other non-trainable state are restored."""
    saved = [v.numpy() for v in model.non_trainable_variables]
    try:
        return np.asarray(first_output(model(x, training=True)))
    finally:
        for variable, value in zip(model.non_trainable_variables, saved):
            variable.assign(value)


def _has_moving_statistics(model) -> bool:
    from seg.diagnostics.reading import all_layers

    return any(isinstance(layer, keras.layers.BatchNormalization) for layer in all_layers(model))


def collapse_alarm(alarms) -> str:
    """The finding of the first alarm that says the output collapsed (a banner, a last
    line); "" when none does. Alarms read back as records are read by their kind."""
    found = collapse_of([a if isinstance(a, Alarm) else Alarm.from_record(a) for a in alarms])
    return found.finding if found else ""


class CollapseMonitor(keras.callbacks.Callback):
    """Every epoch, watches the prediction on a fixed validation batch for a collapsed output.

    Writes the figures (majority share, output spread and entropy, predicted and true share
    per class) to TensorBoard under log_dir, writes alarms as TensorBoard text, keeps them for
    metrics.json and can stop the run on collapse. Alarms are held back during the first
    grace_epochs epochs (a fresh network is still near-uniform) except at the last epoch.

    Args:
        validation_data: (images, masks) arrays or a dataset of (image, mask) batches; the
            first batch is the one watched.
        num_classes, from_logits: read from the model (as seg.diagnose does) when None.
        into_logs: put the figures into Keras' epoch logs (History, a TensorBoard callback)
            as val_majority_share, val_output_spread, val_output_entropy and val_alarms,
            instead of writing them here.
        defer_writes: TensorBoard and console writes wait for write_pending() (called once
            the epoch is committed, so a resumed run never repeats a step).
        total_epochs: the end of training when it is split into several fit() calls.
    """

    def __init__(self, validation_data, *, log_dir: str | Path, num_classes: int | None = None,
                 class_names: list[str] | None = None, ignore_index: int | None = None,
                 from_logits: bool | None = None, monitor: bool = True,
                 constant_share: float = 0.98, constant_spread: float = 0.02,
                 vanished_share: float = 0.1, stop_on_collapse: bool = False,
                 grace_epochs: int = 1, into_logs: bool = False, defer_writes: bool = False,
                 total_epochs: int | None = None):
        super().__init__()
        self.enabled = monitor
        self.batch = first_batch(validation_data) if monitor else None
        self.num_classes, self.class_names = num_classes, class_names
        self.ignore_index, self.from_logits = ignore_index, from_logits
        self.thresholds = {"constant_share": constant_share, "constant_spread": constant_spread,
                           "vanished_share": vanished_share}
        self.stop_on_collapse, self.grace_epochs = stop_on_collapse, grace_epochs
        self.into_logs, self.defer_writes = into_logs, defer_writes
        self.total_epochs = total_epochs
        self.log_dir = str(log_dir)
        self.alarms: list[dict] = []  # Alarm.record()s, for metrics.json
        self.last_stats: dict | None = None
        self.current_alarms: list[Alarm] = []
        self.cause = None  # the diagnosis's error that explains a collapse (its fix is given)
        self.seen: set[int] = set()  # classes the network has predicted at some epoch
        self.losses: list[float] = []  # the training loss at every epoch's end
        self.spreads: list[float] = []  # the output's spread at every epoch's end
        self._epoch, self._final = 0, False
        self._writer = None
        self._pending: list = []
        self._forward = None
        self.head: Head | None = None
        self.notes: list[dict] = []  # what looked like a collapse and was not (a BN lag)

    def set_model(self, model):
        super().set_model(model)
        self._forward = compiled_forward(model)

    def resolve(self):
        """Read from_logits, the classes and the output's layout from the model where they
        were not given."""
        if self.head is None:
            from_logits, classes, self.head = read_output(self.model, self.batch[0],
                                                          self.num_classes)
            self.from_logits = from_logits if self.from_logits is None else self.from_logits
            self.num_classes = self.num_classes or classes
        self.class_names = full_names(self.class_names, self.num_classes)

    def _stats(self, output: np.ndarray) -> dict:
        x, y = self.batch
        probs = probabilities(as_image(output, self.head), self.from_logits)
        return output_stats(probs, class_indices(as_image(y, self.head), self.ignore_index),
                            num_classes=self.num_classes, ignore_index=self.ignore_index)

    def get_state(self) -> dict:
        return {"alarms": self.alarms, "seen": sorted(self.seen), "last_stats": self.last_stats,
                "current_alarms": [a.record() for a in self.current_alarms],
                "epoch": self._epoch,
                "losses": self.losses, "notes": self.notes, "spreads": self.spreads}

    def set_state(self, state: dict):
        self.alarms, self.seen = list(state["alarms"]), set(state["seen"])
        self.last_stats = state["last_stats"]
        self.current_alarms = [Alarm.from_record(a) for a in state["current_alarms"]]
        self._epoch, self.losses = state["epoch"], list(state.get("losses", []))
        self.notes = list(state.get("notes", []))
        self.spreads = list(state.get("spreads", []))

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
            self.current_alarms = self._still_learning(self._epoch, self._without_lag(
                self._epoch, self._judge(self.last_stats, final=True), True))
            logged = {a["alarm"] for a in self.alarms if a["epoch"] == self._epoch + 1}
            for alarm in self.current_alarms:
                if alarm not in logged:
                    self.alarms.append(alarm.record())
                    print(f"\n[seg monitor] end of training: {alarm}", flush=True)

    def _check(self, epoch, logs, final: bool):
        self.resolve()
        self._epoch, self._final = epoch, final
        x, _ = self.batch
        stats = self._stats(np.asarray(first_output(self._forward(x))))
        self.last_stats = stats
        if logs and "loss" in logs:
            self.losses.append(float(logs["loss"]))
        self.spreads.append(float(stats["spread"]) if stats["finite"] else float("nan"))
        found = self._still_learning(epoch, self._without_lag(epoch, self._judge(stats, final),
                                                              final))
        if stats["finite"]:
            self.seen |= {k for k, (t, p) in enumerate(zip(stats["true_share"], stats["pred_share"]))
                          if t > 0.005 and p >= 0.5 * t}
        self.current_alarms = found if (epoch >= self.grace_epochs or final) else []
        self.alarms += [alarm.record() for alarm in self.current_alarms]
        figures = {"majority_share": stats["majority_share"], "output_spread": stats["spread"],
                   "output_entropy": stats["entropy"], "alarm_count": float(len(self.current_alarms))}
        if self.into_logs and logs is not None:  # the TensorBoard callback and History keep them
            logs.update({f"val_{k}": v for k, v in figures.items()})
            logs["val_alarms"] = logs.pop("val_alarm_count")
        self._pending.append((epoch, stats, list(self.current_alarms),
                              {} if self.into_logs else figures))
        if not self.defer_writes:
            self.write_pending()
        if self.stop_on_collapse and not final and collapse_alarm(self.current_alarms):
            print("[seg monitor] stopping: the output has collapsed (stop_on_collapse)", flush=True)
            self.model.stop_training = True

    def _still_learning(self, epoch: int, found: list[str]) -> list[str]:
        """The alarms, less a flat or one-class output of a network that is visibly learning:
        its training loss fell by 2% or more in the last epoch, and its output varies (spread
        over 0.001, not halved since the last epoch): a sound network early in training, or
        one trained for few steps. A collapsed one stalls: its loss stops falling (or is 0),
        or its output goes flat."""
        if len(self.losses) < 2 or len(self.spreads) < 2:
            return found
        falling = self.losses[-1] < 0.98 * self.losses[-2]
        growing = self.spreads[-1] > 1e-3 and self.spreads[-1] >= 0.5 * self.spreads[-2]
        flat = [a for a in found if a.kind == "constant_output"]
        if not (falling and growing and flat):
            return found
        note = (f"still learning, not a collapse: {flat[0].finding}, but the loss fell "
                f"from {self.losses[-2]:.3g} to {self.losses[-1]:.3g} in the last epoch and the "
                f"output varies (spread {self.spreads[-1]:.3f}) "
                "(train longer for a picture that follows the masks)")
        self.notes.append({"epoch": epoch + 1, "note": note})
        return [a for a in found if a not in flat]

    def _without_lag(self, epoch: int, found: list[str], final: bool) -> list[str]:
        """The alarms, less those that inference mode alone raises: with few steps per epoch,
        BatchNormalization's moving statistics lag behind the weights, so the inference-mode
        prediction can be one class while the network (training mode) is sound. Such a lag
        is noted as what it is, not raised as a collapse."""
        if not found or not _has_moving_statistics(self.model):
            return found
        trained = self._judge(self._stats(training_mode_output(self.model, self.batch[0])),
                              final)
        kinds = {a.kind for a in trained}
        lagging = [a for a in found if a.kind not in kinds]
        if lagging:
            note = (f"inference-mode lag, not a collapse: {lagging[0].finding} in "
                    "inference mode, but not with the batch's own statistics (training mode): "
                    "BatchNormalization's moving averages lag behind the weights after few "
                    "steps. It fades with more steps per epoch; BatchNormalization(momentum=0.9)"
                    " catches up sooner")
            self.notes.append({"epoch": epoch + 1, "note": note})
            if len(self.notes) == 1:
                print(f"\n[seg monitor] epoch {epoch + 1}: {note}", flush=True)
        return [a for a in found if a.kind in kinds]

    def _judge(self, stats: dict, final: bool) -> list[Alarm]:
        found = alarms_for(stats, class_names=self.class_names, final=final, seen=self.seen,
                           **self.thresholds)
        if self.losses and max(self.losses) < ZERO_LOSS:  # no real training starts at 0
            found.insert(0, constant_loss(self.losses[-1]))
        found = [a.at(self._epoch + 1) for a in found]
        if self.cause is not None:  # the diagnosis named why: its fix is the alarm's
            found = [Alarm(str(a), kind=a.kind, finding=a.finding, fix=self.cause.fix,
                           epoch=a.epoch) if a.kind in ("constant_output", "constant_loss")
                     else a for a in found]
        return found

    def write_pending(self):
        """Write the checked epochs' figures and alarms to TensorBoard and the log."""
        for epoch, stats, alarms, figures in self._pending:
            if self._writer is None:
                self._writer = tf.summary.create_file_writer(self.log_dir)
            with self._writer.as_default(step=epoch + 1):  # the epoch's number, as everywhere
                for name, value in figures.items():
                    tf.summary.scalar(f"diagnostics/{name}", value)
                for k, name in enumerate(class_tags(self.class_names)):
                    tf.summary.scalar(f"diagnostics/pred_share/{name}", stats["pred_share"][k])
                    tf.summary.scalar(f"diagnostics/true_share/{name}", stats["true_share"][k])
                text = "\n".join(f"* {a}" for a in alarms) or "no alarm"
                tf.summary.text("diagnostics/alarms", text)
            self._writer.flush()
            if alarms:  # one block per epoch
                print("\n".join(f"[seg monitor] epoch {epoch + 1}: {message}"
                                for message in alarms), flush=True)
        self._pending = []

    def summary(self) -> dict:
        """The 'diagnostics' entry of metrics.json."""
        final = self.current_alarms
        collapse = collapse_of(final)
        return {"constant_output": collapse is not None,
                "class_vanished": any(a.kind == "class_vanished" for a in final),
                "collapse": collapse.record() if collapse else None,
                "alarms": self.alarms, "open_alarms": [str(a) for a in final],
                "notes": self.notes,
                "final_output_stats": self.last_stats}


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


def display_image(x: np.ndarray) -> np.ndarray:
    """An image as the model sees it -> float [H, W, 1 or 3] in [0, 1] for a picture: uint8 /
    255, floats in [0, 1] as they are, other ranges (standardised inputs) stretched."""
    x = np.asarray(x)
    if x.ndim == 2:
        x = x[..., None]
    if x.shape[-1] not in (1, 3):
        x = x[..., :3] if x.shape[-1] > 3 else x[..., :1]
    if x.dtype == np.uint8:
        return x.astype(np.float32) / 255
    x = np.nan_to_num(x.astype(np.float32))
    if x.min() >= 0 and x.max() <= 1:
        return x
    if x.max() <= 255 and x.min() >= 0:
        return x / 255
    return (x - x.min()) / max(float(x.max() - x.min()), 1e-12)


class PredictionPanels(keras.callbacks.Callback):
    """Side-by-side panels of fixed validation images (input | ground truth | prediction |
    error | confidence), to TensorBoard (and PNG files in png_dir) every `every` epochs.

    validation_data: (images, masks) arrays or a dataset of (image, mask) pairs, batched or
    not; its first num_images images are shown. A collapse `monitor` puts its banner on them.
    """

    def __init__(self, validation_data, *, num_images: int, every: int, log_dir: str | Path,
                 png_dir: str | Path | None = None, num_classes: int | None = None,
                 class_names: list[str] | None = None, ignore_index: int | None = None,
                 from_logits: bool | None = None, monitor: CollapseMonitor | None = None,
                 total_epochs: int | None = None, proven: str = ""):
        super().__init__()
        self.proven = proven  # a collapse the preflight proved: bannered from the first epoch
        self.samples = take_images(validation_data, num_images)
        self.every, self.num_classes, self.class_names = every, num_classes, class_names
        self.ignore_index, self.from_logits = ignore_index, from_logits
        self.log_dir, self.monitor = str(log_dir), monitor
        self.png_dir = Path(png_dir) if png_dir else None
        self.total_epochs = total_epochs
        self._writer = self._forward = None
        self.head: Head | None = None

    def set_model(self, model):
        super().set_model(model)
        self._forward = compiled_forward(model)

    def _resolve(self):
        if self.monitor is not None and self.monitor.enabled:
            self.monitor.resolve()
            self.from_logits = self.monitor.from_logits if self.from_logits is None else \
                self.from_logits
            self.num_classes = self.num_classes or self.monitor.num_classes
            self.class_names = self.class_names or self.monitor.class_names
        if self.head is None:
            from_logits, classes, self.head = read_output(self.model, self.samples[0][0][None],
                                                          self.num_classes)
            self.from_logits = from_logits if self.from_logits is None else self.from_logits
            self.num_classes = self.num_classes or classes
        self.class_names = full_names(self.class_names, self.num_classes)

    def render(self, epoch: int) -> np.ndarray:
        self._resolve()
        void = -1 if self.ignore_index is None else self.ignore_index
        preds, confs, truths = [], [], []
        for x, y in self.samples:
            output = as_image(np.asarray(first_output(self._forward(x[None]))), self.head)
            probs = probabilities(output, self.from_logits)[0]
            preds.append(probs.argmax(-1))
            confs.append(probs.max(-1))
            truths.append(class_indices(as_image(np.asarray(y)[None], self.head), void)[0])
        banner = collapse_alarm(self.monitor.current_alarms if self.monitor else []) \
            or self.proven
        return viz.panel([display_image(x) for x, _ in self.samples], truths, preds, confs,
                         class_names=self.class_names, ignore_index=void,
                         title=f"epoch {epoch + 1}", banner=banner)

    def on_epoch_end(self, epoch, logs=None):
        last = epoch + 1 >= (self.total_epochs or self.params.get("epochs", epoch + 1))
        if (epoch + 1) % self.every and not last and not self.model.stop_training:
            return
        picture = self.render(epoch)
        buffer = io.BytesIO()  # encoded once, for the file and for TensorBoard
        Image.fromarray(picture).save(buffer, format="PNG", compress_level=3)
        if self.png_dir is not None:
            self.png_dir.mkdir(parents=True, exist_ok=True)
            (self.png_dir / f"epoch_{epoch + 1:03d}.png").write_bytes(buffer.getvalue())
        if self._writer is None:
            self._writer = tf.summary.create_file_writer(self.log_dir)
        with self._writer.as_default():
            write_png_summary("predictions", buffer.getvalue(), picture.shape[1],
                              picture.shape[0], step=epoch + 1)  # the title's epoch
        self._writer.flush()


PROVEN_COLLAPSE = ("head", "head/loss", "class axis", "gradients", "initial loss",
                   "constant output")


def log_report(log_dir: str | Path, report):
    """The diagnosis before training to TensorBoard's TEXT tab (diagnostics/report, step 0)."""
    writer = tf.summary.create_file_writer(str(log_dir))
    with writer.as_default(step=0):
        tf.summary.text("diagnostics/report", "```\n" + report.text() + "\n```")
    writer.close()


MEASURED_COLLAPSE = ("initial loss", "gradients", "constant output")  # measured on a batch


def proven_collapse(report) -> str:
    """The banner for a collapse the preflight measured before the first step (a zero or
    non-finite gradient at the head, a loss already near zero): the first such error, short;
    "" when there is none. Errors it only reasoned about (a head that does not fit the loss)
    are left to the monitor, which sees whether the output really collapses."""
    found = next((f for f in (report.errors if report else []) if f.check in MEASURED_COLLAPSE),
                 None)
    if found is None:
        return ""
    text = f"preflight: {found.check}: {found.title}"
    return text if len(text) <= 100 else text[:99] + "\u2026"


THRESHOLDS = ("constant_share", "constant_spread", "vanished_share", "grace_epochs")


def _check_monitor_arguments(validation_data, log_dir, every, num_images, class_names,
                             num_classes, thresholds):
    """TypeError/ValueError naming the first argument of SegmentationMonitor that is not
    what it must be, before fit starts."""
    where = "seg.SegmentationMonitor"
    if not isinstance(validation_data, (tf.data.Dataset, keras.utils.PyDataset)):
        if not isinstance(validation_data, (tuple, list)) or len(validation_data) < 2:
            raise TypeError(f"{where}: `validation_data` must be (images, masks) arrays or a "
                            f"tf.data.Dataset of (image, mask) batches, got "
                            f"{type(validation_data).__name__}")
        for name, value in zip(("images", "masks"), validation_data):
            if np.asarray(value).dtype.kind not in "biuf" or not np.size(value):
                raise ValueError(f"{where}: the validation {name} must be a non-empty array "
                                 "of numbers")
        if len(validation_data[0]) != len(validation_data[1]):
            raise ValueError(f"{where}: {len(validation_data[0])} validation images but "
                             f"{len(validation_data[1])} masks")
    if Path(log_dir).exists() and not Path(log_dir).is_dir():
        raise ValueError(f"{where}: `log_dir` {log_dir} is a file: give a folder for "
                         "TensorBoard")
    for name, value, low in (("every", every, 0), ("num_images", num_images, 1)):
        if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < low:
            raise ValueError(f"{where}: `{name}` must be an integer >= {low}, got {value!r}")
    if num_classes is not None and (isinstance(num_classes, bool) or not isinstance(
            num_classes, (int, np.integer)) or num_classes < 1):
        raise ValueError(f"{where}: `num_classes` must be an integer >= 1, got {num_classes!r}")
    if class_names is not None and (isinstance(class_names, str) or not all(
            isinstance(c, str) for c in class_names)):
        raise TypeError(f"{where}: `class_names` must be a list of strings, got "
                        f"{class_names!r}"[:200])
    unknown = sorted(set(thresholds) - set(THRESHOLDS))
    if unknown:
        raise TypeError(f"{where}: unknown argument(s) {unknown}; the thresholds are "
                        f"{list(THRESHOLDS)}")
    for name, value in thresholds.items():
        if isinstance(value, bool) or not isinstance(value, (int, float)) or value < 0:
            raise ValueError(f"{where}: `{name}` must be a number >= 0, got {value!r}")


class SegmentationMonitor(keras.callbacks.Callback):
    """One callback for any model.fit: shows and watches what a segmentation model predicts.

    At the start of training it diagnoses the model and its compiled loss on the first
    validation batch (seg.diagnose) and prints what will stop it from learning, in the words
    of its own layers. Every epoch it predicts fixed validation images and writes to
    TensorBoard under log_dir: the side-by-side panels (input | ground truth | prediction |
    error | confidence; a constant prediction gets a red banner), the collapse monitors'
    scalars (diagnostics/...) and the alarms as text. Classes, activation and from_logits are
    read from the model and its loss; outputs with or without a channel axis, one channel
    (sigmoid or logits) and C channels all work.

    Steps are the epoch's number counted from 1 (the panel titled "epoch 3" is at step 3).
    Keras' TensorBoard callback counts from 0; seg.EpochScalars writes the epoch figures on
    seg's count, with tags that put IoU and loss first.

    Args:
        validation_data: (images, masks) arrays or a tf.data.Dataset of (image, mask) batches.
        log_dir: TensorBoard folder.
        every: epochs between panels (0: no panels). num_images: images in a panel.
        class_names, ignore_index: for the legend and the figures (None: no void label).
        stop_on_collapse: stop training when the output has collapsed.
        num_classes: by default the output's channels (2 for one channel).
        check_model: diagnose the model at the start of training.
        png_dir: also save each panel as png_dir/epoch_NNN.png.
        thresholds: constant_share, constant_spread, vanished_share, grace_epochs
            (see CollapseMonitor).

    After fit: .alarms (a list of messages, each with .epoch), .constant_output (bool),
    .report (the diagnosis at the start, or None).
    """

    def __init__(self, validation_data, *, log_dir: str | Path, every: int = 1,
                 num_images: int = 4, class_names: list[str] | None = None,
                 ignore_index: int | None = None, stop_on_collapse: bool = False,
                 num_classes: int | None = None, check_model: bool = True,
                 png_dir: str | Path | None = None, **thresholds):
        super().__init__()
        _check_monitor_arguments(validation_data, log_dir, every, num_images, class_names,
                                 num_classes, thresholds)
        self.validation_data, self.check_model = validation_data, check_model
        self.log_dir = str(log_dir)
        self.report = None
        self.collapse = CollapseMonitor(validation_data, log_dir=log_dir, num_classes=num_classes,
                                        class_names=class_names, ignore_index=ignore_index,
                                        stop_on_collapse=stop_on_collapse, **thresholds)
        self.panels = PredictionPanels(
            validation_data, num_images=num_images, every=every, log_dir=log_dir,
            png_dir=png_dir, class_names=class_names, ignore_index=ignore_index,
            monitor=self.collapse) if every else None
        self.parts = [p for p in (self.collapse, self.panels) if p is not None]

    @property
    def alarms(self) -> list[Alarm]:
        return [Alarm.from_record(a) for a in self.collapse.alarms]

    @property
    def constant_output(self) -> bool:
        return self.collapse.summary()["constant_output"]

    def set_model(self, model):
        super().set_model(model)
        for part in self.parts:
            part.set_model(model)

    def set_params(self, params):
        super().set_params(params)
        for part in self.parts:
            part.set_params(params)

    def on_train_begin(self, logs=None):
        if self.check_model and self.report is None:
            x, y = self.collapse.batch
            self.report = diagnose(self.model, x, y, num_classes=self.collapse.num_classes,
                                   ignore_index=self.collapse.ignore_index,
                                   class_names=self.collapse.class_names)
            if self.report.errors or self.report.warnings:
                print(self._short_report(), flush=True)
            proven = [f for f in self.report.errors if f.check in PROVEN_COLLAPSE]
            if proven:
                self.collapse.grace_epochs = 0  # proven before the first step: flag at once
                self.collapse.cause = proven[0]
            if self.panels is not None:
                self.panels.proven = proven_collapse(self.report)
            log_report(self.log_dir, self.report)
        for part in self.parts:
            part.on_train_begin(logs)

    def _short_report(self) -> str:
        lines = [f"[seg] {self.report.title}: {len(self.report.errors)} error(s), "
                 f"{len(self.report.warnings)} warning(s)"]
        for f in self.report.errors + self.report.warnings:
            lines.append(f"[seg] {f.level}: {f.check}: {f.title}")
            lines += [f"[seg]   {label}: {text}" for label, text in (("why", f.why),
                                                                    ("fix", f.fix)) if text]
        return "\n".join(lines)

    def on_epoch_end(self, epoch, logs=None):
        for part in self.parts:
            part.on_epoch_end(epoch, logs)

    def on_train_end(self, logs=None):
        for part in self.parts:
            part.on_train_end(logs)
        collapse = collapse_of(self.collapse.current_alarms)
        if collapse is not None:  # the last lines say what, why and what to change
            print(f"[seg] the output has collapsed: {collapse.finding}; see the panels in "
                  f"TensorBoard ({self.log_dir}, IMAGES tab)", flush=True)
            if self.collapse.cause is not None:
                print(f"[seg]   cause: {self.collapse.cause.check}: {self.collapse.cause.title}",
                      flush=True)
            print(f"[seg]   fix: {collapse.fix}", flush=True)


def learning_rate_now(model) -> float | None:
    """The optimizer's learning rate at its current step (through a loss-scale wrapper)."""
    optimizer = getattr(model, "optimizer", None)
    optimizer = getattr(optimizer, "inner_optimizer", optimizer)
    if not isinstance(optimizer, keras.optimizers.Optimizer):
        return None
    return float(keras.ops.convert_to_numpy(optimizer.learning_rate))


class EpochScalars(keras.callbacks.Callback):
    """Every epoch's figures to TensorBoard: training ones to log_dir/train, validation ones
    (val_...) to log_dir/validation, so one chart compares train and validation of every run.

    What Keras' TensorBoard callback writes, with three differences that make the pages read
    well: the tags are seg's (epoch_tag: IoU/mean, IoU/per_class/<class name>, Loss, ...,
    where Keras writes epoch_mean_iou, epoch_iou_0, epoch_loss); the step is the epoch's number
    counted from 1, as in the panels' titles; and the validation figures are not written a
    second time as evaluation_<name>_vs_iterations.
    """

    def __init__(self, log_dir: str | Path, class_names: list[str] | None = None):
        super().__init__()
        self.log_dir, self.class_names = Path(log_dir), class_names
        self._writers: dict = {}

    def _writer(self, split: str):
        if split not in self._writers:
            self._writers[split] = tf.summary.create_file_writer(str(self.log_dir / split))
        return self._writers[split]

    def on_epoch_end(self, epoch, logs=None):
        logs = dict(logs or {})
        rate = learning_rate_now(self.model)
        if rate is not None:
            logs.setdefault("learning_rate", rate)
        for split, names in (("train", [k for k in logs if not k.startswith("val_")]),
                             ("validation", [k for k in logs if k.startswith("val_")])):
            if not names:
                continue
            with self._writer(split).as_default(step=epoch + 1):
                for name in names:
                    tf.summary.scalar(epoch_tag(name.removeprefix("val_"), self.class_names),
                                      float(logs[name]))
            self._writer(split).flush()

    def close(self):
        for writer in self._writers.values():
            writer.close()
        self._writers = {}

    def on_train_end(self, logs=None):
        self.close()


class Progress(keras.callbacks.Callback):
    """What the console shows while training: one short line per epoch (loss, mIoU, val mIoU,
    learning rate, seconds), the rest going to TensorBoard and metrics.json, and progress within
    an epoch: redrawn in place on a terminal, a line every `every_s` seconds when the output is
    piped or written to a file (so a log shows that a long epoch is moving).

    Args:
        total_epochs: the end of training (fit may be called for a part of it).
        every_s: seconds between progress lines on a pipe.
        stream: where to write (sys.stdout); tty: whether it redraws (stream.isatty()).
        steps_per_epoch: an epoch's steps, where fit() is asked for fewer (the rest of an
            interrupted epoch), so its progress counts from where it resumed.
    """

    def __init__(self, total_epochs: int, every_s: float = 20.0, stream=None,
                 tty: bool | None = None, steps_per_epoch: int | None = None):
        super().__init__()
        self.total_epochs, self.every_s = total_epochs, every_s
        self.steps_per_epoch = steps_per_epoch  # a resumed epoch's fit() runs only the rest
        self.stream = stream
        self.tty = tty
        self._start = self._shown = 0.0
        self._phase = "training"
        self._drawn = False

    def _out(self):
        return self.stream or sys.stdout

    def _is_tty(self) -> bool:
        if self.tty is None:
            isatty = getattr(self._out(), "isatty", None)
            self.tty = bool(isatty and isatty())
        return self.tty

    def on_epoch_begin(self, epoch, logs=None):
        self._epoch, self._phase = epoch, "training"
        self._start = self._shown = time.perf_counter()

    def _show(self, done: int, total: int | None):
        now = time.perf_counter()
        tty = self._is_tty()
        if now - self._shown < (0.25 if tty else self.every_s):
            return
        self._shown = now
        elapsed = now - self._start
        where = f"{done}/{total}" if total else str(done)
        text = (f"epoch {self._epoch + 1}/{self.total_epochs}: {self._phase} step {where}, "
                f"{elapsed:.0f} s")
        if total and self._phase == "training" and done:
            text += f", about {elapsed * (total - done) / done:.0f} s left in the epoch"
        if tty:
            self._out().write("\r" + text.ljust(79)[:79])
            self._drawn = True
        else:
            self._out().write("  " + text + "\n")
        self._out().flush()

    def on_train_batch_end(self, batch, logs=None):
        steps = self.params.get("steps")
        total = self.steps_per_epoch or steps
        done = batch + 1 + (total - steps if steps and total and steps < total else 0)
        self._show(done, total)

    def on_test_begin(self, logs=None):
        self._phase = "validation"

    def on_test_batch_end(self, batch, logs=None):
        self._show(batch + 1, None)

    def on_epoch_end(self, epoch, logs=None):
        logs = logs or {}
        parts = [f"epoch {epoch + 1}/{self.total_epochs}"]
        for label, key, form in (("loss", "loss", ".4f"), ("mIoU", "mean_iou", ".4f"),
                                 ("val mIoU", "val_mean_iou", ".4f")):
            if key in logs:
                parts.append(f"{label} {float(logs[key]):{form}}")
        rate = learning_rate_now(self.model)
        if rate is not None:
            parts.append(f"lr {rate:.2e}")
        parts.append(f"{time.perf_counter() - self._start:.0f} s")
        clear = "\r" + " " * 79 + "\r" if self._drawn else ""
        self._drawn = False
        self._out().write(clear + "  ".join(parts) + "\n")
        self._out().flush()


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
