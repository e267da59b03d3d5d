"""The run folder: one run at a time (a lock), what a resume may continue, nothing lost.

- `RunLock`: an exclusive lock (fcntl.flock on RUN/.lock) held for the whole run. The kernel
  releases it when the process ends, kill -9 included, so a dead holder never blocks a new
  start; its record in the file names the process that left it. A second start on a live run
  is refused, naming the holder.
- `open_folder`: checks what the folder holds, before anything in it changes. A refused resume
  leaves every file as it was; `trainer.resume=false` moves the whole previous run aside
  (config.json, .hydra/, checkpoints, everything), so it still evaluates and predicts.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import sys
import time
from pathlib import Path

from seg import checkpoints
from seg.config import ConfigError

LOCK = ".lock"
LOG = "train.log"  # Hydra's log of the run, open while it runs: copied aside, not moved


class RunFolderBusy(checkpoints.CheckpointError):
    """Another live process holds the run folder."""


class RunLock:
    """An exclusive, cross-process lock on a run folder (RUN/.lock), for `with` or acquire().

    The file stays; it is empty while nobody holds the folder, and holds the holder's
    process id, host, start time and command while somebody does.
    """

    def __init__(self, folder: str | Path, log=print):
        self.path, self.log, self._fd = Path(folder) / LOCK, log, None

    def acquire(self) -> "RunLock":
        import fcntl

        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            holder = _read(fd)
            os.close(fd)
            raise RunFolderBusy(
                f"{self.path.parent} is in use by another run: {_describe(holder)}. Wait for "
                "it to end (or stop it), or train in another folder with hydra.run.dir=...") \
                from None
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
        import fcntl

        os.ftruncate(self._fd, 0)
        fcntl.flock(self._fd, fcntl.LOCK_UN)
        os.close(self._fd)
        self._fd = None

    def __enter__(self):
        return self.acquire()

    def __exit__(self, *exc):
        self.release()


def _read(fd: int) -> dict | None:
    try:
        text = os.pread(fd, 4096, 0).decode(errors="replace").strip()
        return json.loads(text) if text else None
    except (OSError, ValueError):
        return {"pid": "?", "host": "?", "started": "?", "command": "(unreadable lock record)"}


def _describe(holder: dict | None) -> str:
    if not holder:
        return "a process that left no record"
    return (f"process {holder.get('pid')} on {holder.get('host')}, started "
            f"{holder.get('started')} ({holder.get('command')})")


def previous_config(out: Path, log=print) -> dict | None:
    """The config the folder's run trained with: config.json, or (when that is unreadable)
    the copy inside its newest resume state."""
    try:
        return json.loads((out / "config.json").read_text())
    except (OSError, ValueError) as e:
        problem = e
    for state in checkpoints.committed(out / "checkpoints" / "resume"):
        try:
            saved = json.loads(state.read_text()).get("config")
        except (OSError, ValueError):
            continue
        if saved:
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
    holds_run = bool(states) or (ckpt / "best.keras").exists()
    if holds_run and not cfg["trainer"]["resume"]:
        aside = move_aside(out)
        log(f"seg: trainer.resume=false: starting over in {out}; the previous run is in "
            f"{aside} (it still evaluates: python scripts/evaluate.py {aside})")
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
    previous-* folders stay; the open log is copied, then emptied)."""
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
