"""Crash-safe checkpoints and exact resume.

Every file is written elsewhere, verified, then renamed into place (os.replace is atomic on
POSIX), so a crash at any moment leaves the previous good file. A run folder holds:

    checkpoints/best.keras, last.keras     the models (Keras format, safe to load)
    checkpoints/resume/state-NNNNNNNN.*    weights + optimizer state (a TensorFlow checkpoint)
                                           after global step NNNNNNNN, and its .json sidecar:
                                           epoch, step in the epoch, history, best so far and
                                           the callbacks' state

A resume state counts only once its sidecar exists; the sidecar is written last, after the
TensorFlow files were read back. The two newest states are kept: if the newest one turns out
unreadable at start, the one before it is used, with a message naming the bad one.
"""

from __future__ import annotations

import json
import os
import shutil
import zipfile
from pathlib import Path

import numpy as np

from seg.config import ARCHITECTURE_KEYS, flatten

KERAS_MEMBERS = {"config.json", "metadata.json", "model.weights.h5"}
KEEP_STATES = 2


class CheckpointError(RuntimeError):
    """A checkpoint that cannot be written or read; the message names the path."""


class NonFiniteWeights(CheckpointError):
    """Weights with NaN or Inf, which are never saved."""


def finite(model) -> bool:
    return all(np.isfinite(np.asarray(w)).all() for w in model.weights)


def _fsync_dir(folder: Path):
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def _commit(tmp: Path, path: Path):
    """fsync tmp, rename it onto path, fsync the folder."""
    with open(tmp, "rb+") as f:
        os.fsync(f.fileno())
    os.replace(tmp, path)
    _fsync_dir(path.parent)


def keras_problem(path: str | Path) -> str | None:
    """Why a .keras file cannot be loaded (missing, truncated, corrupt), or None if it is sound.

    Checks the zip structure and every member's CRC: what a crash during a write breaks.
    """
    path = Path(path)
    try:
        with zipfile.ZipFile(path) as z:
            missing = KERAS_MEMBERS - set(z.namelist())
            if missing:
                return f"missing {sorted(missing)}"
            bad = z.testzip()
            return f"corrupt member {bad}" if bad else None
    except FileNotFoundError:
        return "missing"
    except (zipfile.BadZipFile, OSError, EOFError, ValueError) as e:
        return f"not a readable .keras file ({e})"


def save_keras(model, path: str | Path, *, check_finite: bool = True):
    """Save model to path atomically: write a temporary file beside it, verify, rename.

    Raises NonFiniteWeights (nothing written) for NaN/Inf weights and CheckpointError naming
    the path when the folder is read-only or full; the previous file is untouched either way.
    check_finite=False skips the scan of the weights for a caller that has just made it.
    """
    path = Path(path)
    if check_finite and not finite(model):
        raise NonFiniteWeights(f"{path}: not saved, the weights contain NaN or Inf")
    tmp = path.with_name(f".tmp-{os.getpid()}-{path.name}")
    try:
        gone = vanished(path.parent.parent)
        if gone:  # not made again: a run folder deleted mid-run is not silently recreated
            raise CheckpointError(gone)
        path.parent.mkdir(exist_ok=True)
        model.save(tmp)
        problem = keras_problem(tmp)
        if problem:
            raise CheckpointError(f"{path}: the new file did not verify ({problem}); "
                                  "the previous one is kept")
        _commit(tmp, path)
    except OSError as e:
        raise CheckpointError(f"{path}: cannot write the checkpoint ({e.strerror or e}); the "
                              "previous file is kept") from e
    finally:
        tmp.unlink(missing_ok=True)


def vanished(folder: str | Path) -> str | None:
    """Why a run's folder is gone, in words (None while it is there): deleted, moved or
    unmounted while the run went on. Named as such, not as a failed write of a file in it."""
    folder = Path(folder)
    if folder.is_dir():
        return None
    return (f"{folder}: the run folder vanished while the run went on (deleted, moved or "
            "unmounted); nothing more can be saved there, and what it held went with it. "
            "Start the run again (in another folder with hydra.run.dir=..., if this one "
            "was removed on purpose)")


def write_json(path: Path, data: dict):
    """Write JSON atomically (temporary file, fsync, rename)."""
    gone = vanished(path.parent)
    if gone:
        raise CheckpointError(gone)
    tmp = path.with_name(f".tmp-{os.getpid()}-{path.name}")
    try:
        tmp.write_text(json.dumps(data, indent=2, default=float))
        _commit(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def _tf_checkpoint(model):
    import tensorflow as tf

    return tf.train.Checkpoint(model=model, optimizer=model.optimizer)


def save_state(model, folder: str | Path, state: dict, *, check_finite: bool = True) -> Path:
    """Write the resume state (weights, optimizer, and the JSON `state`) after the current step.

    state must hold "global_step". Returns the sidecar's path. check_finite as in save_keras.
    """
    import tensorflow as tf

    folder = Path(folder)
    if check_finite and not finite(model):
        raise NonFiniteWeights(f"{folder}: resume state not saved, the weights contain NaN/Inf")
    prefix = folder / f"state-{int(state['global_step']):08d}"
    gone = vanished(folder.parent.parent)  # RUN/checkpoints/resume: RUN deleted mid-run
    if gone:
        raise CheckpointError(gone)
    try:
        folder.mkdir(parents=True, exist_ok=True)
        _tf_checkpoint(model).write(str(prefix))
        stored = len(tf.train.list_variables(str(prefix)))  # read the index back
        if stored < len(model.weights):
            raise CheckpointError(f"{prefix}: only {stored} variables read back")
        write_json(prefix.with_suffix(".json"), {**state, "checkpoint": prefix.name})
    except (OSError, tf.errors.OpError) as e:
        raise CheckpointError(f"{prefix}: cannot write the resume state ({e}); the previous "
                              "one is kept") from e
    for old in committed(folder)[KEEP_STATES:]:
        remove_state(folder, old)
    return prefix.with_suffix(".json")


def remove_state(folder: Path, sidecar: Path):
    sidecar.unlink(missing_ok=True)  # first: without it the files no longer count
    for f in folder.glob(sidecar.stem + ".*"):
        f.unlink(missing_ok=True)


def committed(folder: str | Path) -> list[Path]:
    """The resume states' sidecars, newest first."""
    folder = Path(folder)
    return sorted(folder.glob("state-*.json"), reverse=True) if folder.is_dir() else []


def clean_partial(run_dir: str | Path) -> list[Path]:
    """Delete what writes cut short by a crash left in a run folder; returns what went.

    That is `.tmp-*` files (run folder, checkpoints/, checkpoints/resume/), files of resume
    states that were never committed, and the `*_temp` folders TensorFlow writes shards into.
    Files moved aside as .corrupt stay, for whoever wants to look at them.
    """
    run_dir = Path(run_dir)
    resume = run_dir / "checkpoints" / "resume"
    sidecars = {p.stem for p in committed(resume)}
    stray = []
    for folder in (run_dir, run_dir / "checkpoints", resume):
        if folder.is_dir():
            stray += [f for f in folder.iterdir() if not f.name.endswith(".corrupt") and (
                f.name.startswith(".tmp-") or (folder == resume and f.name.startswith("state-")
                                              and f.name.split(".")[0] not in sidecars))]
    for f in stray:
        shutil.rmtree(f, ignore_errors=True) if f.is_dir() else f.unlink(missing_ok=True)
    return stray


def restore_latest(model, folder: str | Path, log=print) -> dict | None:
    """Restore the newest readable resume state into model (and its built optimizer).

    Returns its JSON state, or None when there is none. A state that cannot be read (truncated,
    corrupt) is named, moved aside (suffix .corrupt) and the one before it is tried; a sound
    state that does not fit the model or optimizer is refused (CheckpointError), not moved.
    """
    import tensorflow as tf

    folder = Path(folder)
    tried = committed(folder)
    for sidecar in tried:
        try:
            from seg import records  # noqa: PLC0415 (records imports seg.config, which is heavy)

            state = records.read(sidecar, "state")  # what a resume reads from it, checked
            prefix = folder / state["checkpoint"]
            _tf_checkpoint(model).read(str(prefix)).assert_existing_objects_matched()
            if not finite(model):
                raise CheckpointError("NaN/Inf weights")
            return state
        except (AssertionError, ValueError) as e:
            if isinstance(e, (json.JSONDecodeError, records.RecordError)):
                corrupt = e
            else:  # a sound file that does not fit this model or optimizer: nothing to move
                raise CheckpointError(
                    f"{sidecar}: this resume state does not fit the model and optimizer of "
                    f"this config ({_first_line(e)}). Resume with the run's own settings, or "
                    "start over with trainer.resume=false") from e
        except (OSError, KeyError, IndexError, CheckpointError, tf.errors.OpError) as e:
            corrupt = e
        log(f"seg: resume state {sidecar} is unreadable ({_first_line(corrupt)}); moved aside, "
            "trying the one before it")
        for f in folder.glob(sidecar.stem + ".*"):
            f.rename(f.with_name(f.name + ".corrupt"))
    if tried:
        raise CheckpointError(f"{folder}: none of the {len(tried)} resume state(s) could be read "
                              "(moved aside as .corrupt); run again to start over (the run's "
                              "files then move into previous-<time>/, none is deleted)")
    return None


def _first_line(e: BaseException) -> str:
    text = str(e).strip()
    return (text.splitlines()[0] if text else type(e).__name__)[:200]


def check_writable(folder: str | Path):
    """Fail early, naming the folder, when it cannot be written (read-only, missing rights) or
    its path holds a character that TensorFlow's checkpoint reader takes as a file pattern."""
    folder = Path(folder)
    pattern = sorted(set("[]*?") & set(str(folder.resolve())))
    if pattern:
        raise CheckpointError(
            f"{folder}: the run folder's path contains {' '.join(pattern)}, which TensorFlow "
            "reads as a file pattern, so the resume state could be written but never read "
            "back; choose another with hydra.run.dir=...")
    try:
        folder.mkdir(parents=True, exist_ok=True)
        probe = folder / f".tmp-{os.getpid()}-write-test"
        probe.write_bytes(b"ok")
        probe.unlink()
    except OSError as e:
        raise CheckpointError(f"{folder}: the run folder cannot be written ({e.strerror or e}); "
                              "choose another with hydra.run.dir=...") from e


# Keys added since runs were first written: an older run's config counts as their default.
_DEFAULTS = {"trainer.precision": "float32"}


def incompatibilities(old: dict, new: dict) -> list[str]:
    """The differences that stop a run from resuming (classes, architecture, input channels,
    optimizer, fine-tuning schedule, batch size, steps per epoch and precision) between two
    configs."""
    a, b = {**_DEFAULTS, **flatten(old)}, {**_DEFAULTS, **flatten(new)}
    keys = sorted(k for k in set(a) | set(b)
                  if any(k == p or k.startswith(p + ".") for p in ARCHITECTURE_KEYS))
    return [f"{k}: {a.get(k, '(absent)')!r} in the run, {b.get(k, '(absent)')!r} now"
            for k in keys if a.get(k) != b.get(k)]


def other_differences(old: dict, new: dict) -> list[str]:
    a, b = flatten(old), flatten(new)
    return [f"{k}: {a.get(k)!r} -> {b.get(k)!r}" for k in sorted(set(a) | set(b))
            if a.get(k) != b.get(k)
            and not any(k == p or k.startswith(p + ".") for p in ARCHITECTURE_KEYS)]

