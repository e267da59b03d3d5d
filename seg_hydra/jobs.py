"""The training job behind scripts/train.py: seg.train.run with exit codes 2, 3 and 75, and in a
sweep each job in a fresh process, its failure recorded in failure.json while the sweep goes on.
"""

from __future__ import annotations

import contextlib
import ctypes
import io
import json
import logging
import multiprocessing
import os
import pickle
import signal
import sys
import traceback
from pathlib import Path

from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode

from seg.console import quiet_tensorflow
from seg.hparams import Trial, first_columns
from seg.runfolder import Interrupted, NonFiniteLoss
from seg.train import run
from seg_hydra.compose import hydra_record, to_dict
from seg_hydra.errors import REFUSALS, fail, forget_unused
from seg_hydra.names import run_name, swept_settings


def train_job(cfg) -> float:
    """The task of @hydra.main in scripts/train.py: train, and return the validation mean IoU
    (what Hydra's sweepers maximise).

    Exit codes: 0 done; 1 a crash (traceback); 2 a refused set-up or an unwritable run folder;
    3 the loss became NaN/Inf; 75 stopped by SIGTERM/SIGINT after writing a checkpoint (the
    same command resumes). In a sweep, a failed job writes failure.json and returns NaN.
    """
    # Hydra logs INFO to the console; TensorFlow's checkpoint writer (absl) would add a line
    # per save.
    logging.getLogger("absl").setLevel(logging.WARNING)
    hc = HydraConfig.get()
    sweep = hc.mode == RunMode.MULTIRUN
    if not sweep and not str(hc.run.dir).strip():
        log = Path.cwd() / "train.log"  # Hydra's empty log, made in the current folder
        if log.is_file() and log.stat().st_size == 0:
            log.unlink()
        fail(ValueError("hydra.run.dir is empty: give the run a folder of its own "
                        "(hydra.run.dir=outputs/NAME), or leave it out for a new time-stamped "
                        "one"))
    if not (sweep and hc.job.num):  # once: the device does not change between jobs
        print(f"seg: {quiet_tensorflow()}", flush=True)
    try:
        args = (to_dict(cfg), hc.runtime.output_dir)
        kwargs = {"run_name": run_name(hc.job.override_dirname),
                  "overrides": list(hc.overrides.task), "files": hydra_record(cfg),
                  "trial": trial_of(args[0], hc, sweep)}
        log = Path(hc.runtime.output_dir) / "train.log"  # what the console shows, kept
        # in a sweep, a process of its own: memory stays flat across jobs
        metrics = (in_own_process(logged, log, run, *args, **kwargs) if sweep
                   else logged(log, run, *args, **kwargs))
    except Interrupted as e:  # the whole sweep stops too: the next start resumes
        folder = (f"hydra.sweep.dir={hc.sweep.dir}" if sweep
                  else f"hydra.run.dir={hc.runtime.output_dir}")
        print(f"\nseg: interrupted: {e}\nseg: run the same command to resume, with {folder}",
              flush=True)
        sys.exit(Interrupted.exit_code)
    except Exception as e:
        if not sweep:
            if isinstance(e, REFUSALS):
                forget_unused(hc.runtime.output_dir)
                fail(e)
            if isinstance(e, NonFiniteLoss):
                fail(e, code=3)
            raise
        return _record_failure(e, cfg, hc)
    with console_to(Path(hc.runtime.output_dir) / "train.log"):
        print("\n" + closing_lines(metrics, Path(hc.runtime.output_dir)), flush=True)
    return metrics["val_mean_iou"]


def closing_lines(metrics: dict, out: Path) -> str:
    """The run's result and, last, whether it collapsed or ends with an alarm open, with the
    panel to look at."""
    text = (f"val mIoU {metrics['val_mean_iou']:.4f} ({metrics['decoder']} decoder, "
            f"{metrics['epochs_completed']} epochs, {metrics['wall_time_s']:.0f} s); "
            f"run folder {out}")
    diagnostics = metrics.get("diagnostics") or {}
    open_alarms = diagnostics.get("open_alarms") or []
    if not (diagnostics.get("constant_output") or open_alarms):
        return text
    panels = sorted((out / "panels").glob("epoch_*.png"))
    look = (f"see the panel {panels[-1]}" if panels else "see the panels")
    look += f" and TensorBoard (tensorboard --logdir {out}, IMAGES tab)"
    if diagnostics.get("constant_output"):
        what = next((a for a in open_alarms if a.startswith(("constant", "non-finite"))),
                    "constant output")
        return (f"{text}\nseg: COLLAPSED: the run ended with {what.split(' (the')[0]} (the "
                f"'yellow image'): {look}")
    more = f" (+{len(open_alarms) - 1} more)" if len(open_alarms) > 1 else ""
    return f"{text}\nseg: ALARM open at the end: {open_alarms[0]}{more}: {look}"


def trial_of(cfg: dict, hc, sweep: bool) -> Trial:
    """The run's row in TensorBoard's HPARAMS tab: named by the settings a sweep varies
    (`decoder=deconv,seed=1`; the folder's name when none is found), the decoder and those
    settings shown first (TensorBoard uses one run's experiment config for a whole log
    folder: the decoder, our users' first question, leads in all of them); a run on its own is
    named by its overrides and start time."""
    if not sweep:
        name = f"{run_name(hc.job.override_dirname)} {Path(hc.runtime.output_dir).name[:19]}"
        keys = [o.split("=", 1)[0].lstrip("+~") for o in hc.overrides.task if "=" in o]
        return Trial(name, ["decoder.name"] + first_columns(cfg, keys))
    params = hc.sweeper.get("params") if "params" in hc.sweeper else None
    swept = swept_settings(hc.job.override_dirname, params)
    keys = [p.split("=", 1)[0] for p in swept.split(",") if p]
    return Trial(swept or Path(hc.runtime.output_dir).name,
                 ["decoder.name"] + first_columns(cfg, keys), Path(hc.sweep.dir))


class _Tee(io.TextIOBase):
    """A console stream that also writes what it shows into a log file (redrawn progress
    lines, those with a carriage return and no line end, are left out of the file)."""

    def __init__(self, stream, log):
        super().__init__()
        self.stream, self.log = stream, log

    def write(self, text: str) -> int:
        self.stream.write(text)
        if "\n" in text or "\r" not in text:
            self.log.write(text.rsplit("\r", 1)[-1] if "\r" in text else text)
        return len(text)

    def flush(self):
        self.stream.flush()
        self.log.flush()

    def isatty(self) -> bool:
        return self.stream.isatty()

    def fileno(self) -> int:
        return self.stream.fileno()

    @property
    def encoding(self):
        return getattr(self.stream, "encoding", "utf-8")


@contextlib.contextmanager
def console_to(log: Path):
    """What the console shows (stdout and stderr) is also appended to log (the run's
    train.log, which Hydra makes and otherwise leaves empty)."""
    try:
        file = open(log, "a", encoding="utf-8", buffering=1)
    except OSError:  # no run folder (yet): the console alone
        yield
        return
    streams = sys.stdout, sys.stderr
    sys.stdout, sys.stderr = _Tee(sys.stdout, file), _Tee(sys.stderr, file)
    try:
        yield
    finally:
        sys.stdout, sys.stderr = streams
        file.close()


def logged(log: Path, fn, *args, **kwargs):
    """fn(*args, **kwargs) with the console also written to log."""
    with console_to(log):
        return fn(*args, **kwargs)


def _record_failure(e: Exception, cfg, hc) -> float:
    """One failed job must not stop the sweep: record why, and let the next job run."""
    refused = isinstance(e, REFUSALS)
    try:
        given = to_dict(cfg, missing_ok=True)  # compare groups the job by it
    except Exception:  # noqa: BLE001 (the record must not fail for the config's sake)
        given = None
    failure = {"job": hc.job.num, "overrides": list(hc.overrides.task), "config": given,
               "error": type(e).__name__, "refused": refused, "message": str(e),
               "traceback": "" if refused else getattr(e, "child_traceback", None)
               or traceback.format_exc()}
    out = Path(hc.runtime.output_dir)
    out.mkdir(parents=True, exist_ok=True)
    (out / "failure.json").write_text(json.dumps(failure, indent=2))
    print(f"\nseg: job {hc.job.num} failed ({type(e).__name__}): {str(e)[:2000]}\n"
          f"seg: details in {out / 'failure.json'}; the sweep goes on", flush=True)
    return float("nan")


def in_own_process(fn, *args, **kwargs):
    """fn(*args, **kwargs) in a fresh (spawned) process: its result, or its exception, here.

    A sweep runs its jobs one after another in one process, and TensorFlow keeps about 65 MB
    for every model trained in a process however it is released (keras-team/keras#17458), so
    each job runs in its own process and the sweep's memory stays flat. SIGTERM is passed on
    to the job (which checkpoints and stops as usual); a terminal's Ctrl-C reaches it directly.
    Inside a launcher's worker process (joblib's) fn runs there: spawn cannot copy its start
    method.
    """
    if multiprocessing.parent_process() is not None:
        return fn(*args, **kwargs)
    context = multiprocessing.get_context("spawn")
    receive, send = context.Pipe(duplex=False)
    child = context.Process(target=_child, args=(send, fn, args, kwargs))
    child.start()
    send.close()
    previous = {signal.SIGTERM: signal.signal(signal.SIGTERM,
                                              lambda signum, _: os.kill(child.pid, signum)),
                signal.SIGINT: signal.signal(signal.SIGINT, signal.SIG_IGN)}
    try:
        try:
            kind, value, text = receive.recv()
        except EOFError:  # it died without a word: killed, or out of memory
            child.join()
            raise RuntimeError(f"the job's process (pid {child.pid}) ended with exit code "
                               f"{child.exitcode} before reporting a result (killed? out of "
                               "memory?)") from None
        child.join()
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    if kind == "ok":
        return value
    value.child_traceback = text
    raise value


def _child(send, fn, args, kwargs):
    try:  # Linux: if the sweep's process dies, the job gets SIGTERM (checkpoint, stop)
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass
    try:
        result = ("ok", fn(*args, **kwargs), "")
    except BaseException as e:  # noqa: BLE001 (Interrupted and KeyboardInterrupt included)
        text = traceback.format_exc()
        try:
            pickle.dumps(e)
        except Exception:  # noqa: BLE001 (an exception that cannot travel: its text does)
            e = RuntimeError(f"{type(e).__name__}: {e}")
        result = ("error", e, text)
    send.send(result)
