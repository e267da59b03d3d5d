"""Watching a segmentation model while it trains: the collapse monitor (a flat, one-class or
non-finite prediction, a constant loss, a vanished class; typed Alarms that the console,
TensorBoard, metrics.json and the panels read) and SegmentationMonitor, the one callback for
any model.fit (diagnosis, monitor and panels). What counts as a collapse is seg.collapse's."""

from __future__ import annotations

import textwrap
from pathlib import Path

import keras
import numpy as np
import tensorflow as tf

from seg.collapse import Alarm, alarms_for, collapse_alarm, collapse_of, constant_loss, output_stats
from seg.diagnostics import diagnose, first_output
from seg.diagnostics.reading import Head, as_image, class_indices, probabilities
from seg.panels import PredictionPanels, _batch_of, compiled_forward, full_names, read_output
from seg.tags import class_tags

MONITOR_KEYS = ("constant_share", "constant_spread", "vanished_share", "stop_on_collapse",
                "monitor", "grace_epochs")

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


def training_mode_output(model, x: np.ndarray) -> np.ndarray:
    """The model's output on x with training=True (BatchNormalization on the batch's own
    statistics); the moving statistics and every other non-trainable state are restored."""
    saved = [v.numpy() for v in model.non_trainable_variables]
    try:
        return np.asarray(first_output(model(x, training=True)))
    finally:
        for variable, value in zip(model.non_trainable_variables, saved, strict=False):
            variable.assign(value)


def _has_moving_statistics(model) -> bool:
    from seg.diagnostics.reading import all_layers

    return any(isinstance(layer, keras.layers.BatchNormalization) for layer in all_layers(model))


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
        self._alarm_text = None  # the alarms last written to the TEXT tab
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
            shares = zip(stats["true_share"], stats["pred_share"], strict=False)
            self.seen |= {k for k, (t, p) in enumerate(shares) if t > 0.005 and p >= 0.5 * t}
        self.current_alarms = found if (epoch >= self.grace_epochs or final) else []
        self.alarms += [alarm.record() for alarm in self.current_alarms]
        figures = {"majority_share": stats["majority_share"], "output_spread": stats["spread"],
                   "output_entropy": stats["entropy"],
                   "alarm_count": float(len(self.current_alarms))}
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
                if text != self._alarm_text:  # a change only: not "no alarm" every epoch
                    tf.summary.text("diagnostics/alarms", text)
                    self._alarm_text = text
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


PROVEN_COLLAPSE = ("head", "head/loss", "class axis", "gradients", "initial loss",
                   "constant output")


def _wrapped(text: str, width: int = 96) -> str:
    """Lines of at most `width` characters, each continuation under its line's indent: the TEXT
    tab shows a code block without wrapping, and cuts what runs past the card."""
    out = []
    for line in text.splitlines():
        indent = " " * (len(line) - len(line.lstrip()) + 2)
        out.append(textwrap.fill(line, width, subsequent_indent=indent,
                                 break_on_hyphens=False) if len(line) > width else line)
    return "\n".join(out)


def log_report(log_dir: str | Path, report):
    """The diagnosis before training to TensorBoard's TEXT tab (diagnostics/report, step 0)."""
    writer = tf.summary.create_file_writer(str(log_dir))
    with writer.as_default(step=0):
        tf.summary.text("diagnostics/report", "```\n" + _wrapped(report.text()) + "\n```")
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
        for name, value in zip(("images", "masks"), validation_data, strict=False):
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
    TensorBoard under log_dir: the side-by-side panels (image | truth | prediction |
    errors | confidence; a constant prediction gets a red banner), the collapse monitors'
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

    seg's pipeline uses it too, with what it knows already: report (the diagnosis made before
    training: not printed again), panel_data (the images the panels show), into_logs,
    defer_writes and total_epochs (see CollapseMonitor; write_pending() writes both parts),
    monitor=False (panels only) and announce=False (its own closing lines say the collapse).

    After fit: .alarms (Alarms: str with .kind, .epoch, .fix), .constant_output (bool),
    .report (the diagnosis at the start, or None).
    """

    def __init__(self, validation_data, *, log_dir: str | Path, every: int = 1,
                 num_images: int = 4, class_names: list[str] | None = None,
                 ignore_index: int | None = None, stop_on_collapse: bool = False,
                 num_classes: int | None = None, check_model: bool = True,
                 png_dir: str | Path | None = None, report=None, panel_data=None,
                 into_logs: bool = False, defer_writes: bool = False,
                 total_epochs: int | None = None, monitor: bool = True, announce: bool = True,
                 **thresholds):
        super().__init__()
        _check_monitor_arguments(validation_data, log_dir, every, num_images, class_names,
                                 num_classes, thresholds)
        self.validation_data, self.check_model = validation_data, check_model
        self.log_dir, self.announce = str(log_dir), announce
        self.report, self._given = report, report is not None
        self.collapse = CollapseMonitor(
            validation_data, log_dir=log_dir, num_classes=num_classes, class_names=class_names,
            ignore_index=ignore_index, stop_on_collapse=stop_on_collapse, monitor=monitor,
            into_logs=into_logs, defer_writes=defer_writes, total_epochs=total_epochs,
            **thresholds)
        self.panels = PredictionPanels(
            validation_data if panel_data is None else panel_data, num_images=num_images,
            every=every, log_dir=log_dir, png_dir=png_dir, num_classes=num_classes,
            class_names=class_names, ignore_index=ignore_index, monitor=self.collapse,
            total_epochs=total_epochs, defer_writes=defer_writes) if every else None
        self.parts = [p for p in (self.collapse, self.panels) if p is not None]
        if report is not None:
            self._use(report)

    def _use(self, report):
        """A collapse the diagnosis proved before the first step: flagged from epoch 1, with
        its cause and fix, and bannered from the first panel."""
        proven = [f for f in report.errors if f.check in PROVEN_COLLAPSE]
        if proven:
            self.collapse.grace_epochs = 0
            self.collapse.cause = proven[0]
        if self.panels is not None:
            self.panels.proven = proven_collapse(report)

    def write_pending(self):
        """Write what the parts held back until the epoch was committed."""
        for part in self.parts:
            part.write_pending()

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
        if self.check_model and not self._given and self.report is None:
            x, y = self.collapse.batch
            self.report = diagnose(self.model, x, y, num_classes=self.collapse.num_classes,
                                   ignore_index=self.collapse.ignore_index,
                                   class_names=self.collapse.class_names)
            if self.report.errors or self.report.warnings:
                print(self._short_report(), flush=True)
            self._use(self.report)
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
        if collapse is not None and self.announce:  # the last lines: what, why, what to change
            print(f"[seg] the output has collapsed: {collapse.finding}; see the panels in "
                  f"TensorBoard ({self.log_dir}, IMAGES tab)", flush=True)
            if self.collapse.cause is not None:
                print(f"[seg]   cause: {self.collapse.cause.check}: {self.collapse.cause.title}",
                      flush=True)
            print(f"[seg]   fix: {collapse.fix}", flush=True)
