"""Keras callbacks for the run's figures: training throughput and memory, every epoch's
scalars in seg's TensorBoard tags, the console's progress lines, and the timing of other
callbacks. Watching the prediction is seg.monitor's; the panels are seg.panels'."""

from __future__ import annotations

import statistics
import sys
import time
from collections import deque
from pathlib import Path

import keras
import numpy as np
import tensorflow as tf

from seg.tags import epoch_tag


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
        clock: seconds, for the times shown (time.perf_counter; a test gives its own).

    The time left in an epoch is the median of the last RECENT steady step times times the
    steps left. A step is steady when it is not an epoch's first: the first includes tracing
    and compiling (tens of seconds on a CPU, for a step that then takes a fraction of one),
    and filling the input pipeline. Until a steady step is measured no time left is shown.
    """

    RECENT = 50  # steady step times the estimate is the median of

    def __init__(self, total_epochs: int, every_s: float = 20.0, stream=None,
                 tty: bool | None = None, steps_per_epoch: int | None = None, clock=None):
        super().__init__()
        self.total_epochs, self.every_s = total_epochs, every_s
        self.steps_per_epoch = steps_per_epoch  # a resumed epoch's fit() runs only the rest
        self.stream = stream
        self.tty = tty
        self.clock = clock or time.perf_counter
        self._start = self._shown = 0.0
        self._phase = "training"
        self._drawn = False
        self._step_s: deque[float] = deque(maxlen=self.RECENT)  # steady seconds per step
        self._last: tuple[int, float] | None = None  # (batch, time) of the epoch's last step

    def _out(self):
        return self.stream or sys.stdout

    def _is_tty(self) -> bool:
        if self.tty is None:
            isatty = getattr(self._out(), "isatty", None)
            self.tty = bool(isatty and isatty())
        return self.tty

    def on_epoch_begin(self, epoch, logs=None):
        self._epoch, self._phase = epoch, "training"
        self._start = self._shown = self.clock()
        self._last = None  # the epoch's first step is not a steady one

    def seconds_left(self, done: int, total: int | None) -> float | None:
        """The epoch's time left: the median recent steady step time x the steps left; None
        before a steady step is measured (or without a known total)."""
        if not total or not self._step_s or self._phase != "training":
            return None
        return statistics.median(self._step_s) * max(total - done, 0)

    def _show(self, done: int, total: int | None):
        now = self.clock()
        tty = self._is_tty()
        if now - self._shown < (0.25 if tty else self.every_s):
            return
        self._shown = now
        elapsed = now - self._start
        where = f"{done}/{total}" if total else str(done)
        text = (f"epoch {self._epoch + 1}/{self.total_epochs}: {self._phase} step {where}, "
                f"{elapsed:.0f} s")
        left = self.seconds_left(done, total)
        if left is not None:
            text += f", about {left:.0f} s left in the epoch"
        if tty:
            self._out().write("\r" + text.ljust(79)[:79])
            self._drawn = True
        else:
            self._out().write("  " + text + "\n")
        self._out().flush()

    def on_train_batch_end(self, batch, logs=None):
        now = self.clock()
        if self._last is not None and batch > self._last[0]:
            # steps since the last call (several with steps_per_execution), each this long
            per_step = (now - self._last[1]) / (batch - self._last[0])
            self._step_s.extend([per_step] * min(batch - self._last[0], self.RECENT))
        self._last = (batch, now)
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
        parts.append(f"{self.clock() - self._start:.0f} s")
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

    def __getattr__(self, name):  # the callback's own methods (write_pending, ...)
        callback = self.__dict__.get("callback")
        if callback is None:
            raise AttributeError(name)
        return getattr(callback, name)

    def set_model(self, model):
        super().set_model(model)
        self.callback.set_model(model)

    def set_params(self, params):
        super().set_params(params)
        self.callback.set_params(params)
