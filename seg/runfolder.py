"""The run folder: one run at a time (a lock), what a resume may continue, nothing lost.

- `RunLock`: an exclusive lock (fcntl.flock on RUN/.lock) held for the whole run. The kernel
  releases it when the process ends, kill -9 included, so a dead holder never blocks a new
  start; its record in the file names the process that left it. A second start on a live run
  is refused, naming the holder.
- `open_folder`: checks what the folder holds, before anything in it changes. A refused resume
  leaves every file as it was; `trainer.resume=false` moves the whole previous run aside
  (config.json, .hydra/, checkpoints, everything), so it still evaluates and predicts.
- `Checkpointer` and `Guard`: the resume state at every epoch end (and at the step a signal
  stopped), NaN/Inf stops; `Signals`: SIGTERM/SIGINT honoured in every phase of a run, exit
  code 75 (`Interrupted`).
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import math
import os
import shutil
import signal
import socket
import sys
import threading
import time
from pathlib import Path

import keras

from seg import checkpoints
from seg.config import ConfigError

LOCK = ".lock"
LOG = "train.log"  # Hydra's log of the run, open while it runs: copied aside, not moved


class RunFolderBusy(checkpoints.CheckpointError):
    """Another live process holds the run folder (`holder` describes it)."""

    holder = "another process"


class RunLock:
    """An exclusive, cross-process lock on a run folder (RUN/.lock), for `with` or acquire().

    The file stays; it is empty while nobody holds the folder, and holds the holder's
    process id, host, start time and command while somebody does.
    """

    def __init__(self, folder: str | Path, log=print, name: str = LOCK):
        """name: the lock file's name in the folder (a sweep folder's is .sweep.lock)."""
        self.path, self.log, self._fd = Path(folder) / name, log, None

    def acquire(self) -> "RunLock":
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            holder = _read(fd)
            os.close(fd)
            busy = RunFolderBusy(
                f"{self.path.parent} is in use by another run: {_describe(holder)}. Wait for "
                "it to end (or stop it), or train in another folder with hydra.run.dir=...")
            busy.holder = _describe(holder)
            raise busy from None
        stale = _read(fd)
        if stale:  # its holder ended without releasing (killed): the kernel freed the lock
            self.log(f"seg: taking over the run folder from {_describe(stale)}, which ended "
                     "without releasing it (killed?)")
        record = {"pid": os.getpid(), "host": socket.gethostname(),
                  "started": time.strftime("%Y-%m-%d %H:%M:%S"), "command": " ".join(sys.argv)}
        os.ftruncate(fd, 0)
        os.pwrite(fd, json.dumps(record).encode(), 0)
        os.fsync(fd)
        self._fd = fd
        return self

    def release(self):
        if self._fd is None:
            return
        os.ftruncate(self._fd, 0)
        fcntl.flock(self._fd, fcntl.LOCK_UN)
        os.close(self._fd)
        self._fd = None

    def __enter__(self):
        return self.acquire()

    def __exit__(self, *exc):
        self.release()


def in_use(folder: str | Path) -> bool:
    """Whether another process holds the run folder's lock now (a run is going on in it)."""
    try:
        fd = os.open(Path(folder) / LOCK, os.O_RDONLY)
    except OSError:  # no lock file: nobody has held it
        return False
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        fcntl.flock(fd, fcntl.LOCK_UN)
        return False
    except OSError:
        return True
    finally:
        os.close(fd)


def _read(fd: int) -> dict | None:
    try:
        text = os.pread(fd, 4096, 0).decode(errors="replace").strip()
        record = json.loads(text) if text else None
        if record is None or isinstance(record, dict):
            return record
    except (OSError, ValueError):
        pass
    return {"pid": "?", "host": "?", "started": "?", "command": "(unreadable lock record)"}


def _describe(holder: dict | None) -> str:
    if not holder:
        return "a process that left no record"
    return (f"process {holder.get('pid')} on {holder.get('host')}, started "
            f"{holder.get('started')} ({holder.get('command')})")


def previous_config(out: Path, log=print) -> dict | None:
    """The config the folder's run trained with: config.json, or (when that is unreadable)
    the copy inside its newest resume state. What was computed from the data ("computed":
    class weights, rare classes) is left out: it is not a setting."""
    from seg import records  # noqa: PLC0415

    try:  # checked against what seg writes: a list or a text is no config to compare with
        written = records.read(out / "config.json")
        return {k: v for k, v in written.items() if k != "computed"}
    except (OSError, records.RecordError) as e:
        problem = e
    for state in checkpoints.committed(out / "checkpoints" / "resume"):
        try:
            saved = records.read(state, "state").get("config")
        except (OSError, records.RecordError):
            continue
        if saved and not records.config_problems(saved):
            log(f"seg: {out / 'config.json'} is unreadable ({problem}); comparing with the "
                f"copy in {state.name}")
            return saved
    log(f"seg: {out / 'config.json'} is unreadable ({problem}) and no resume state holds a "
        "copy; resuming without comparing configs")
    return None


def open_folder(cfg: dict, out: Path, log=print) -> tuple[bool, bool]:
    """Check the run folder; (whether this run resumes, whether best.keras was lost).

    Refusals come before any change: an incompatible resume raises ConfigError with every
    file untouched. Only then are a crash's leftovers repaired and, with
    trainer.resume=false, the previous run moved aside whole.
    """
    checkpoints.check_writable(out)
    ckpt = out / "checkpoints"
    states = checkpoints.committed(ckpt / "resume")
    holds_run = bool(states) or (out / "metrics.json").exists() or (
        ckpt.is_dir() and any(ckpt.iterdir()))
    if holds_run and (not cfg["trainer"]["resume"] or not states):
        corrupt = any((ckpt / "resume").glob("*.corrupt")) if (ckpt / "resume").is_dir() \
            else False
        why = ("trainer.resume=false" if not cfg["trainer"]["resume"] else
               "no usable resume state (the last ones were unreadable)" if corrupt else
               "no resume state was ever completed (stopped during the first save?)")
        aside = move_aside(out)
        best = aside / "checkpoints" / "best.keras"
        log(f"seg: {why}: starting over in {out}; the previous run is in {aside}"
            + (f" (it still evaluates if its best.keras is sound: python scripts/evaluate.py "
               f"{aside})" if best.exists() else " (it saved no best.keras)"))
        return False, False
    if states:
        old = previous_config(out, log)
        problems = checkpoints.incompatibilities(old, cfg) if old is not None else []
        if problems:
            raise ConfigError(
                f"{out} holds a run that cannot continue with this config:\n  "
                + "\n  ".join(problems) + "\nUse another run folder (hydra.run.dir=...) or "
                "trainer.resume=false to start over in this one (the old run is kept aside).")
        changed = checkpoints.other_differences(old, cfg) if old is not None else []
        if changed:
            log("seg: resuming with changed settings: " + "; ".join(changed))
    stray = checkpoints.clean_partial(out)
    if stray:
        log(f"seg: removed {len(stray)} file(s) of a resume state whose write never finished "
            f"(a crash during a save): {', '.join(f.name for f in stray[:4])}")
    best_lost = False
    for name in ("best.keras", "last.keras"):
        problem = (ckpt / name).exists() and checkpoints.keras_problem(ckpt / name)
        if problem:
            (ckpt / name).rename(ckpt / f"{name}.corrupt")
            log(f"seg: {ckpt / name} is unusable ({problem}); moved aside as {name}.corrupt")
            best_lost |= name == "best.keras"
    if not checkpoints.committed(ckpt / "resume"):
        return False, False
    return True, best_lost or not (ckpt / "best.keras").exists()


def move_aside(out: Path) -> Path:
    """Move everything of the folder's run into out/previous-<time>/ (the lock and earlier
    previous-* folders stay; the open log is copied, then emptied). SIGTERM and SIGINT wait
    until the move is complete: the old run is never left split in two."""
    sigs = {signal.SIGTERM, signal.SIGINT}
    blocked = threading.current_thread() is threading.main_thread()
    if blocked:
        signal.pthread_sigmask(signal.SIG_BLOCK, sigs)
    try:
        return _move_aside(out)
    finally:
        if blocked:
            signal.pthread_sigmask(signal.SIG_UNBLOCK, sigs)


def _move_aside(out: Path) -> Path:
    aside = out / f"previous-{time.strftime('%Y-%m-%d_%H-%M-%S')}"
    n = 1
    while aside.exists():
        aside, n = out / f"previous-{time.strftime('%Y-%m-%d_%H-%M-%S')}-{n}", n + 1
    aside.mkdir()
    for entry in sorted(out.iterdir()):
        if entry.name == LOCK or entry.name.startswith("previous-") or entry == aside:
            continue
        if entry.name == LOG:
            shutil.copy2(entry, aside / LOG)
            with open(entry, "r+") as f:  # the handler appends: it goes on at the new end
                f.truncate(0)
            continue
        entry.rename(aside / entry.name)
    return aside


def write_files(out: Path, files: dict[str, str | dict]):
    """Write each relative path's text (or JSON for a dict) atomically."""
    for rel, content in files.items():
        path = out / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        if isinstance(content, dict):
            checkpoints.write_json(path, content)
        else:
            tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
            tmp.write_text(content)
            os.replace(tmp, path)


# --- resume state and signals ---------------------------------------------------------------

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
                 stateful: dict | None = None, after_commit=(), extra=dict,
                 encoder_trainable=lambda: None):
        """extra: () -> more JSON state from the trainer (resumes, elapsed time, the config).
        encoder_trainable: () -> the fine-tuning phase the optimizer belongs to (or None)."""
        super().__init__()
        self.folder = Path(folder)
        self.monitor, self.stateful = monitor, dict(stateful or {})
        self.after_commit = list(after_commit)  # called after each commit (deferred writes)
        self.extra, self.encoder_trainable = extra, encoder_trainable
        self.history: dict[str, list] = {}
        self.best, self.best_epoch = -math.inf, None
        self.last_committed: Path | None = None
        self.position: tuple[int, int] | None = None  # (epoch, step in it) last committed

    def state(self, epoch: int, step_in_epoch: int) -> dict:
        return {"epoch": epoch, "step_in_epoch": step_in_epoch,
                "global_step": int(self.model.optimizer.iterations.numpy()),
                "stopped": bool(self.model.stop_training) and step_in_epoch == 0,
                "encoder_trainable": self.encoder_trainable(),
                "history": self.history, "best": self.best, "best_epoch": self.best_epoch,
                "callbacks": {name: cb.get_state() for name, cb in self.stateful.items()},
                **self.extra()}

    def resume_from(self, state: dict):
        """Carry on from a restored resume state: history, best value, callbacks, position."""
        self.restore(state)
        self.position = (state["epoch"], state["step_in_epoch"])
        self.last_committed = self.folder / "resume" / f"{state['checkpoint']}.json"

    def restore(self, state: dict):
        self.history = {k: list(v) for k, v in state["history"].items()}
        self.best = float(state["best"]) if state["best"] is not None else -math.inf
        self.best_epoch = state["best_epoch"]
        for name, cb_state in state["callbacks"].items():
            if name in self.stateful:
                self.stateful[name].set_state(cb_state)

    def commit(self, epoch: int, step_in_epoch: int = 0, *, check_finite: bool = True) -> Path:
        self.last_committed = checkpoints.save_state(self.model, self.folder / "resume",
                                                     self.state(epoch, step_in_epoch),
                                                     check_finite=check_finite)
        self.position = (epoch, step_in_epoch)
        return self.last_committed

    def on_epoch_end(self, epoch, logs=None):
        if not checkpoints.finite(self.model):  # the last step's loss was still finite
            raise NonFiniteLoss(
                f"the weights became NaN/Inf by step {int(self.model.optimizer.iterations.numpy())}"
                f" (end of epoch {epoch + 1}); nothing was saved after it. Last good state: "
                f"{self.last_committed or 'none yet'}. Lower trainer.learning_rate, or check the "
                "data for NaN/Inf values")
        logs = logs or {}
        done = max((len(v) for v in self.history.values()), default=0)  # epochs recorded
        for key in list(self.history) + [k for k in logs if k not in self.history]:
            # None where an epoch did not validate (trainer.validate_every): rows line up
            self.history.setdefault(key, [None] * done).append(
                float(logs[key]) if key in logs else None)
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

    def __init__(self, checkpointer: Checkpointer, flush=(), writes: bool = True):
        """flush: what to write out before stopping; writes: False on the workers of a
        multi-worker run other than the chief (they commit nothing)."""
        super().__init__()
        self.checkpointer, self.flush, self.writes = checkpointer, list(flush), writes
        self.signal: int | None = None
        self.epoch, self.offset = 0, 0  # offset: steps of this epoch done before this fit

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

    def on_test_batch_begin(self, batch, logs=None):
        if self.signal is None:  # validation inside fit(): it stops too, without a commit
            return
        for fn in self.flush:
            fn()
        raise Interrupted(f"signal {self.signal} during the validation of epoch {self.epoch + 1}"
                          f": stopped; resume state {self.checkpointer.last_committed or 'none'}"
                          " (the steps after it run again)")

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


class Signals:
    """SIGTERM/SIGINT for a whole run, phase by phase.

    While training, a signal is noted and the Guard stops after the current step (checkpoint
    first). In every other phase (preparing, re-scoring best.keras, writing metrics.json) it
    stops at once: the committed state already is what a resume continues from. A second
    SIGINT stops at once (KeyboardInterrupt).
    """

    def __init__(self):
        self.phase, self.guard, self.signal = "preparing the run", None, None

    def handler(self, signum, frame):
        if self.signal is not None and signum == signal.SIGINT:
            raise KeyboardInterrupt
        self.signal = signum
        if self.guard is not None and self.phase == "training":
            self.guard.signal = signum
            print(f"\nseg: signal {signum}: stopping after the current step; a checkpoint "
                  "follows", flush=True)
            return
        raise Interrupted(f"signal {signum} while {self.phase}: stopped; the committed state is "
                          "what a resume continues from")

    @contextlib.contextmanager
    def handled(self):
        """Install the handler (in the main thread) for the block; restore the old ones."""
        sigs = (signal.SIGTERM, signal.SIGINT)
        previous = ({sig: signal.signal(sig, self.handler) for sig in sigs}
                    if threading.current_thread() is threading.main_thread() else {})
        try:
            yield self
        finally:
            for sig, handler in previous.items():
                signal.signal(sig, handler)


@contextlib.contextmanager
def held(out: Path, chief: bool = True):
    """The run folder, writable and locked for the block (the chief's; a worker only reads)."""
    if not chief:
        yield
        return
    checkpoints.check_writable(out)
    with RunLock(out):
        yield
