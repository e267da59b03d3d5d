"""The sweep folder: one sweep at a time in it, and its summary (hydra.callbacks)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

from omegaconf import OmegaConf

from seg import compare, records
from seg.runfolder import RunFolderBusy, RunLock

try:
    from hydra.experimental.callback import Callback
except ImportError:  # pragma: no cover (hydra-core < 1.1)
    Callback = object

SWEEP_LOCK = ".sweep.lock"
BUSY = ".busy"  # SWEEP_DIR/.busy/<job folder>.json: jobs whose folder another process held


class SweepSummary(Callback):
    """The sweep folder's guard and summary (hydra.callbacks).

    At the start: the sweep holds SWEEP_DIR/.sweep.lock until it ends, so a second sweep
    started into the same folder is refused up front, naming the first (one sweep's jobs
    never write into the other's); a folder whose multirun.yaml records another sweep (other
    overrides) is refused too, before Hydra would replace that file. The same command again
    (a sweep stopped by a signal) resumes as before.

    At the end: every job's result, every failed job and why, in SWEEP_DIR/summary.md and
    summary.json; entries of an earlier summary.json for runs no longer found are kept
    (merged, never replaced). `python scripts/compare.py SWEEP_DIR` gives the full table.
    """

    def __init__(self):
        self._lock = None

    def on_multirun_start(self, config, **kwargs):
        sweep_dir = Path(str(config.hydra.sweep.dir))
        try:
            sweep_dir.mkdir(parents=True, exist_ok=True)
            self._lock = RunLock(sweep_dir, name=SWEEP_LOCK).acquire()
        except RunFolderBusy as e:
            _refuse(f"hydra.sweep.dir={sweep_dir} is in use by another sweep: {e.holder}. "
                    "Two sweeps in one folder would take the same job folders: wait for it "
                    "to end, or sweep into another folder with hydra.sweep.dir=...")
        except OSError:
            return  # Hydra's own error names the folder (refused by seg_hydra.launch)
        other = other_sweep(sweep_dir / "multirun.yaml", config)
        if other:
            self.release()
            _refuse(other)

    def on_multirun_end(self, config, **kwargs):
        sweep_dir = Path(str(config.hydra.sweep.dir))
        try:
            if sweep_dir.is_dir():
                write_summary(sweep_dir)
        finally:
            self.release()

    def release(self):
        if self._lock is not None:
            self._lock.release()
            self._lock = None


def _refuse(text: str):
    from seg_hydra.errors import _Refused, fail  # noqa: PLC0415

    fail(_Refused("SweepFolder", text))


def _task(cfg) -> list[str]:
    try:
        return [str(o) for o in cfg.hydra.overrides.task]
    except Exception:  # noqa: BLE001 (not a Hydra multirun.yaml)
        return []


def other_sweep(path: Path, config) -> str | None:
    """Why a sweep with this config must not go into path's folder: its multirun.yaml records
    a sweep of other overrides (Hydra would replace it), or cannot be read. None when there is
    none, or it records this same sweep (a resume)."""
    if not path.exists():
        return None
    try:
        first = OmegaConf.load(path)
        before = _task(first)
        if not before:
            raise ValueError("no hydra.overrides.task in it")
    except Exception as e:  # noqa: BLE001 (YAML, OmegaConf and OS errors alike: named)
        why = str(e).splitlines()[0][:200] if str(e) else type(e).__name__
        return (f"{path}: unreadable ({why})"
                ", so the sweep it records is unknown; kept as it is. Sweep into another folder "
                "with hydra.sweep.dir=...")
    now = _task(config)
    if sorted(before) == sorted(now):
        return None
    only_before = [o for o in before if o not in now] or ["(none)"]
    only_now = [o for o in now if o not in before] or ["(none)"]
    return (f"{path.parent} holds another sweep: its multirun.yaml records "
            f"{' '.join(only_before)} where this one has {' '.join(only_now)}. That sweep's record "
            "and summary are kept as they are: sweep into another folder with "
            "hydra.sweep.dir=..., or run that sweep's own command to resume it")


def record_busy(sweep_dir: Path, job_folder: Path, job: int, overrides: list[str], why: str):
    """A job whose folder another process held: recorded in this sweep's own folder (never in
    the job folder, which is not this process's), and reported by its summary."""
    folder = Path(sweep_dir) / BUSY
    folder.mkdir(parents=True, exist_ok=True)
    (folder / f"{job_folder.name}.json").write_text(json.dumps(
        {"run": str(job_folder.relative_to(sweep_dir)) if job_folder.is_relative_to(sweep_dir)
         else str(job_folder), "job": job, "overrides": overrides, "error": why}, indent=2))


def _busy_entries(sweep_dir: Path) -> list[dict]:
    out = []
    for f in sorted((sweep_dir / BUSY).glob("*.json")):
        try:
            entry = json.loads(f.read_text())
        except (OSError, ValueError):
            continue
        if isinstance(entry, dict) and isinstance(entry.get("run"), str):
            out.append(entry)
    return out


def write_summary(sweep_dir: Path) -> str:
    """SWEEP_DIR/summary.md and summary.json from the runs under it, merged with an earlier
    summary.json (its runs no longer found are kept) and with this sweep's busy jobs."""
    busy = _busy_entries(sweep_dir)
    held = {b["run"] for b in busy}  # another process's run in a folder of this sweep's
    runs = [r for r in compare.find_runs(sweep_dir) if r.name not in held]
    text = compare.sweep_summary(runs, sweep_dir)
    if busy:
        lines = text.splitlines()
        lines[0] += f", {len(busy)} not run (the job folder was in use by another process)"
        lines[1:1] = [f"  BUSY            {b['run']}\n          {b['error']}" for b in busy]
        text = "\n".join(lines)
    entries = json.loads(compare.summary_json(runs))
    entries += [{"run": b["run"], "status": "busy", "val_mean_iou": None, "error": b["error"]}
                for b in busy if b["run"] not in {e["run"] for e in entries}]
    path = sweep_dir / "summary.json"
    problems: list[str] = []
    earlier = records.read_if_there(path, problems=problems) or []
    if problems:  # kept beside, named: a summary is never lost
        path.rename(path.with_name("summary.json.unreadable"))
        text += f"\nnote: {problems[0]}; kept as summary.json.unreadable"
    found = {e["run"] for e in entries}
    entries += [e for e in earlier if e["run"] not in found]
    (sweep_dir / "summary.md").write_text(text + "\n")
    tmp = path.with_name(".summary.json.tmp")
    tmp.write_text(json.dumps(entries, indent=2))
    tmp.replace(path)
    shutil.rmtree(sweep_dir / BUSY, ignore_errors=True)  # reported now, in summary.json
    print("\n" + text, flush=True)
    return text
