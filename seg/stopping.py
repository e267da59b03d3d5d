"""Stopping a run early across resumes: patience on the validation mIoU, and a time budget."""

from __future__ import annotations

import time
from dataclasses import dataclass, field

import keras


def _say(text: str):
    print(text, flush=True)


@dataclass
class Clock:
    """Seconds of training: this process's, plus those before the resumed state."""

    start: float = field(default_factory=time.time)
    before: float = 0.0  # elapsed_s of the restored state

    def elapsed(self) -> float:
        return self.before + time.time() - self.start


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
