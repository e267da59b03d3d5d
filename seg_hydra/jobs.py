"""The training job behind scripts/train.py: seg.train.run with exit codes 2, 3, 4 and 75, and
in a sweep each job in a fresh process, its failure recorded in failure.json while the sweep
goes on.
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
import time
import traceback
from pathlib import Path

from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode

from seg.collapse import collapse_alarm
from seg.console import quiet_tensorflow
from seg.hparams import Trial, compact, first_columns
from seg.runfolder import Interrupted, NonFiniteLoss, RunFolderBusy, in_use
from seg.train import run
from seg_hydra.compose import hydra_record, to_dict
from seg_hydra.errors import REFUSALS, fail, forget_refusal, forget_unused, record_refusal
from seg_hydra.names import run_name, swept_settings
from seg_hydra.sweep import record_busy


def train_job(cfg) -> float:
    """The task of @hydra.main in scripts/train.py: train, and return the validation mean IoU
    (what Hydra's sweepers maximise).

    Exit codes (scripts/train.py's docstring lists them for users): 0 done; 1 a crash
    (traceback); 2 a refused set-up or an unwritable run folder (refused.json in a run folder
    that stays); 3 the loss became NaN/Inf; 4 finished, but the output collapsed into a
    constant (COLLAPSED_EXIT); 75 stopped by SIGTERM/SIGINT after writing a checkpoint (the
    same command resumes). In a sweep, a failed job writes failure.json and returns NaN, a
    collapsed job returns its val mIoU: the sweep goes on.
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
    out = Path(hc.runtime.output_dir)
    # what the console shows goes to the run's train.log too; not a worker's other than the
    # chief's, nor a second start's on a folder in use (it is refused: the log is the run's)
    with console_to(out / "train.log" if chief_process() and not in_use(out) else None):
        if not (sweep and hc.job.num):  # once: the device does not change between jobs
            print(f"seg: {quiet_tensorflow()}", flush=True)
        return _job(cfg, hc, sweep, out)


def _job(cfg, hc, sweep: bool, out: Path) -> float:
    try:
        args = (to_dict(cfg), str(out))
        kwargs = {"run_name": run_name(hc.job.override_dirname),
                  "overrides": list(hc.overrides.task), "files": hydra_record(cfg),
                  "trial": trial_of(args[0], hc, sweep)}
        # in a sweep, a process of its own (memory stays flat across jobs), logging its console
        metrics = (in_own_process(logged, out / "train.log", run, *args, **kwargs) if sweep
                   else run(*args, **kwargs))
    except Interrupted as e:  # the whole sweep stops too: the next start resumes
        if not sweep:
            forget_refusal(out)  # this start got past the checks: an earlier refusal is old
        folder = f"hydra.sweep.dir={hc.sweep.dir}" if sweep else f"hydra.run.dir={out}"
        print(f"\nseg: interrupted: {e}\nseg: run the same command to resume, with {folder}",
              flush=True)
        sys.exit(Interrupted.exit_code)
    except Exception as e:
        if not sweep:
            if isinstance(e, REFUSALS):
                forget_unused(out)  # a folder nothing used goes; one that stays says why
                if not isinstance(e, RunFolderBusy) and not in_use(out):
                    record_refusal(out, e, list(hc.overrides.task))
                fail(e)
            if isinstance(e, NonFiniteLoss):
                forget_refusal(out)
                fail(e, code=3)
            raise
        return _record_failure(e, cfg, hc)
    if not sweep:
        forget_refusal(out)
    print("\n" + closing_lines(metrics, out), flush=True)
    if collapsed(metrics) and not sweep:  # a sweep goes on over its other jobs
        sys.exit(COLLAPSED_EXIT)
    return metrics["val_mean_iou"]


COLLAPSED_EXIT = 4  # the run finished, but its output collapsed into a constant (closing_lines)


def collapsed(metrics: dict) -> bool:
    """Whether a finished run's output collapsed into a constant (the 'yellow image'), as the
    monitor recorded in metrics.json's diagnostics.constant_output."""
    return bool((metrics.get("diagnostics") or {}).get("constant_output"))


def chief_process() -> bool:
    """False only for a worker of a multi-worker run (TF_CONFIG) that is not its chief."""
    try:
        tf_config = json.loads(os.environ.get("TF_CONFIG") or "{}")
        task, cluster = tf_config.get("task") or {}, tf_config.get("cluster") or {}
    except (ValueError, AttributeError):
        return True
    kind, index = task.get("type"), int(task.get("index", 0) or 0)
    return not kind or kind == "chief" or (kind == "worker" and index == 0
                                           and "chief" not in cluster)


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
        collapse = diagnostics.get("collapse") or {}  # the Alarm's record (seg.collapse)
        what = collapse.get("finding") or collapse_alarm(open_alarms) or "constant output"
        fix = f"\nseg:   fix: {collapse['fix']}" if collapse.get("fix") else ""
        return f"{text}\nseg: COLLAPSED (the 'yellow image'): {what}: {look}{fix}"
    more = f" (+{len(open_alarms) - 1} more)" if len(open_alarms) > 1 else ""
    return f"{text}\nseg: ALARM open at the end: {open_alarms[0]}{more}: {look}"


def trial_of(cfg: dict, hc, sweep: bool) -> Trial:
    """The run's row in TensorBoard's HPARAMS tab, named short and distinct (the table's Trial
    ID column shows about 15 characters): the settings a sweep varies or a run's overrides,
    compact (`deconv seed=1`), then the job number and the sweep's folder (TensorBoard merges
    the rows of equal names: two sweeps in one log folder), or a run's start time. The
    decoder and those settings are the columns shown first."""
    def short(settings):
        return " ".join(compact(*s.lstrip("+~").split("=", 1)) for s in settings if "=" in s)

    if not sweep:
        given = [o for o in hc.overrides.task if "=" in o and not o.startswith("hydra.")]
        name = f"{short(given) or 'defaults'} {time.strftime('%m-%d %H:%M:%S')}"
        keys = [o.split("=", 1)[0].lstrip("+~") for o in given]
        return Trial(name, ["decoder.name"] + first_columns(cfg, keys))
    params = hc.sweeper.get("params") if "params" in hc.sweeper else None
    swept = swept_settings(hc.job.override_dirname, params)
    name = short(swept) or Path(hc.runtime.output_dir).name
    return Trial(f"{name} #{hc.job.num} {Path(hc.sweep.dir).name}",
                 ["decoder.name"] + first_columns(cfg, [p.split("=", 1)[0] for p in swept]),
                 Path(hc.sweep.dir))


class _Tee(io.TextIOBase):
    """A console stream that also writes what it shows into a log file (redrawn progress
    lines, those with a carriage return and no line end, are left out of the file)."""

    def __init__(self, stream, log):
        super().__init__()
        self.stream, self.log = stream, log

    def write(self, text: str) -> int:
        self.stream.write(text)
        if self.log.closed:  # a handler that outlived its run (logging at exit): console only
            return len(text)
        if "\r" not in text:
            self.log.write(text)
            return len(text)
        lines = text.replace("\r\n", "\n").split("\n")
        kept = [line.rsplit("\r", 1)[-1] for line in lines[:-1]]  # what stayed on screen
        if "\r" not in lines[-1]:  # an unfinished line that is not being redrawn
            kept.append(lines[-1])
        self.log.write("\n".join(kept) + ("\n" if len(kept) == len(lines) - 1 and kept else ""))
        return len(text)

    def flush(self):
        self.stream.flush()
        if not self.log.closed:
            self.log.flush()

    def isatty(self) -> bool:
        return self.stream.isatty()

    def fileno(self) -> int:
        return self.stream.fileno()

    @property
    def encoding(self):
        return getattr(self.stream, "encoding", "utf-8")


@contextlib.contextmanager
def console_to(log: Path | None):
    """What Python writes to the console (stdout and stderr) is also appended to log (the run's
    train.log, which Hydra makes and otherwise leaves empty); None: the console alone.

    TensorFlow's own C++ lines (a GPU out of memory, XLA notices) reach the console only."""
    if isinstance(sys.stdout, _Tee):  # already logged (a job run in a launcher's worker)
        yield
        return
    try:
        # noqa below: the log stays open across the yield and is closed in its finally
        file = open(log, "a", encoding="utf-8", buffering=1) if log is not None else None  # noqa: SIM115
    except OSError:  # no run folder (yet): the console alone
        file = None
    if file is None:
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
    """fn(*args, **kwargs) with the console also written to log (not when another process
    holds log's run folder: its log is that run's)."""
    with console_to(None if in_use(log.parent) else log):
        return fn(*args, **kwargs)


def _record_failure(e: Exception, cfg, hc) -> float:
    """One failed job must not stop the sweep: record why, and let the next job run."""
    out = Path(hc.runtime.output_dir)
    if isinstance(e, RunFolderBusy):  # not this process's folder: nothing is written into it
        record_busy(Path(hc.sweep.dir), out, hc.job.num, list(hc.overrides.task), str(e))
        print(f"\nseg: job {hc.job.num} not run: {e}\nseg: reported in this sweep's summary; "
              "the sweep goes on", flush=True)
        return float("nan")
    refused = isinstance(e, REFUSALS)
    try:
        given = to_dict(cfg, missing_ok=True)  # compare groups the job by it
    except Exception:  # noqa: BLE001 (the record must not fail for the config's sake)
        given = None
    failure = {"job": hc.job.num, "overrides": list(hc.overrides.task), "config": given,
               "error": type(e).__name__, "refused": refused, "message": str(e),
               "traceback": "" if refused else getattr(e, "child_traceback", None)
               or traceback.format_exc()}
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
    # Linux: if the sweep's process dies, the job gets SIGTERM (checkpoint, stop)
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
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
