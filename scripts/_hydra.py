"""Glue between Hydra and seg shared by the scripts: resolvers, config conversion, clean errors.

seg itself never imports Hydra or OmegaConf; this module turns a DictConfig into plain dicts and
seg's refusals into one readable message and exit code 2 instead of a traceback.
"""

from __future__ import annotations

import argparse
import hashlib
import math
import os
import re
import sys
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")  # keep TensorFlow's start-up chatter out

from omegaconf import DictConfig, OmegaConf  # noqa: E402

PROJECT_ROOT = Path(__file__).resolve().parents[1]
CONFIG_DIR = str(PROJECT_ROOT / "configs")


_SHORT_FLOAT = re.compile(r"=(-?\d+\.\d{5,}(?:[eE]-?\d+)?)(?=,|$)")


def _run_name(override_dirname: str) -> str:
    """Folder-safe run name from Hydra's override_dirname; 'default' when there is none.

    Long floats (a sampled learning rate) are shown with 4 significant digits; the exact
    values are in the run's config.json. Names longer than 120 characters are cut and end in
    a hash of all the overrides, so they stay unique and within the file system's 255 bytes.
    """
    name = _SHORT_FLOAT.sub(lambda m: f"={float(m.group(1)):.4g}", override_dirname)
    # no "[ ] * ?": TensorFlow reads checkpoint paths as file patterns (a list value such as
    # data.scale_range=[1.0,1.0] is written with parentheses instead)
    name = name.translate(str.maketrans("[]", "()", "+*?")).replace("/", "_") or "default"
    if len(name) > 120:
        name = f"{name[:111]}_{hashlib.sha1(override_dirname.encode()).hexdigest()[:8]}"
    return name


def _swept_keys(params=None) -> set[str]:
    """Keys a sweep varies: those of hydra.sweeper.params and the command line's sweeps."""
    keys = {str(k).lstrip("+~") for k in (params or {})}
    try:
        from hydra.core.override_parser.overrides_parser import OverridesParser

        args = [a for a in sys.argv[1:] if "=" in a and not a.startswith("-")]
        keys |= {o.key_or_group.lstrip("+~") for o in OverridesParser.create().parse_overrides(args)
                 if o.is_sweep_override()}
    except Exception:  # an argument Hydra itself will report; the name just keeps its order
        pass
    return keys


def _job_name(override_dirname: str, params=None) -> str:
    """A sweep job's folder name: the swept settings first, so cutting keeps them."""
    swept = _swept_keys(params)
    parts = re.split(r",(?=[\w.+~/-]+=)", override_dirname) if override_dirname else []
    first = [p for p in parts if p.split("=", 1)[0].lstrip("+~") in swept]
    return _run_name(",".join(first + [p for p in parts if p not in first]))


def _store_schema():
    """The schema (seg/config.py) as Hydra structured configs: composition then refuses an
    unknown key or a value of the wrong type, naming it."""
    from hydra.core.config_store import ConfigStore

    from seg import config

    store = ConfigStore.instance()
    store.store(name="train_schema", node=config.Config)
    for name, schema in config.DATA.items():
        store.store(group="data", name=f"{name}_schema", node=schema)


_store_schema()

for name, fn in (("run_name", _run_name), ("job_name", _job_name),
                 ("project_root", lambda: str(PROJECT_ROOT))):
    if not OmegaConf.has_resolver(name):
        OmegaConf.register_new_resolver(name, fn)


def to_dict(cfg: DictConfig, missing_ok: bool = False) -> dict | None:
    """The resolved config as plain dicts; every missing mandatory value (???) is named.

    missing_ok: None instead of the error, for a record of what a failed job was given.
    """
    from seg.config import ConfigError, help_for

    missing = sorted(k for k in OmegaConf.missing_keys(cfg) if not k.startswith("hydra."))
    if missing and missing_ok:
        return None
    if missing:
        raise ConfigError("missing value(s), set on the command line as key=value:\n  " + "\n  ".join(
            f"{k}" + (f" ({help_for(k)})" if help_for(k) else "") for k in missing))
    return OmegaConf.to_container(cfg, resolve=True, throw_on_missing=True)


def hydra_record(cfg: DictConfig) -> dict[str, str]:
    """Hydra's record of a run (.hydra/config.yaml, hydra.yaml, overrides.yaml), as texts.

    hydra.output_subdir is null, so Hydra writes nothing into the run folder itself: seg
    writes these with config.json once the folder's checks passed, and a refused resume
    changes no file.
    """
    from hydra.core.hydra_config import HydraConfig

    hc = HydraConfig.get()
    return {".hydra/config.yaml": OmegaConf.to_yaml(cfg),
            ".hydra/hydra.yaml": OmegaConf.to_yaml(OmegaConf.create({"hydra": hc})),
            ".hydra/overrides.yaml": OmegaConf.to_yaml(hc.overrides.task)}


def refusal_types() -> tuple:
    from seg.data import DataError
    from seg.diagnostics import PreflightError
    from seg.checkpoints import CheckpointError
    from seg.inference import LoadError
    from seg.config import ConfigError
    from seg.distribute import StrategyError
    from omegaconf.errors import OmegaConfBaseException
    return (ConfigError, DataError, PreflightError, LoadError, CheckpointError, StrategyError,
            OmegaConfBaseException)


def compose_dict(overrides: list[str]) -> dict:
    """configs/train.yaml composed with command-line overrides, as plain dicts (no Hydra run)."""
    from hydra import compose, initialize_config_dir

    with initialize_config_dir(config_dir=CONFIG_DIR, version_base="1.3"):
        cfg = to_dict(compose(config_name="train", overrides=overrides))
    cfg.pop("hydra", None)
    return cfg


def refusing(fn):
    """fn(), with seg's refusals and Hydra's config errors printed as one message (exit 2)."""
    try:
        return fn()
    except refusal_types() as e:
        fail(e)
    except Exception as e:  # Hydra's override errors name the bad key or option
        if type(e).__module__.startswith(("hydra", "omegaconf")):
            fail(e)
        raise


def launch(main):
    """Call a @hydra.main function with Hydra's own errors refused like seg's (exit 2).

    An unknown key or group option, a value of the wrong type, a missing value, a run folder
    that cannot be made (read-only, a file, a name over 255 bytes): the message, no traceback.
    """
    from hydra.errors import HydraException
    from omegaconf.errors import OmegaConfBaseException

    os.environ["HYDRA_FULL_ERROR"] = "1"  # Hydra raises instead of printing and exiting 1
    try:
        return main()
    except (HydraException, OmegaConfBaseException) as e:
        from hydra.errors import OverrideParseException

        if isinstance(e, OverrideParseException):
            bad = _unparsable(sys.argv[1:])
            fail(OverrideParseException(
                override=" ".join(bad), message=f"{', '.join(bad) or 'an override'}: {e}\n"
                "(quote a value with brackets or spaces: 'key=\"a[1] b\"')"))
        cause = e.__cause__
        fail(type(e)(f"{e}\n{cause}") if isinstance(cause, OmegaConfBaseException) else e)
    except refusal_types() as e:
        fail(e)
    except OSError as e:
        if e.filename is None:
            raise
        why = "exists and is not a folder" if isinstance(e, FileExistsError) else e.strerror
        fail(OSError(f"{e.filename}: {why or e}. The run folder (or a file in it) "
                     "cannot be written: choose another with hydra.run.dir=... (a writable "
                     "folder, a name under 255 bytes)"))


def whole(low: int):
    """argparse type: a whole number >= low."""
    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            value = None
        if value is None or value < low:
            raise argparse.ArgumentTypeError(f"{text!r}: use a whole number >= {low}")
        return value
    return parse


def number(low: float, high: float):
    """argparse type: a number in [low, high]."""
    def parse(text: str) -> float:
        try:
            value = float(text)
        except ValueError:
            value = math.nan
        if not low <= value <= high:
            raise argparse.ArgumentTypeError(f"{text!r}: use a number from {low:g} to {high:g}")
        return value
    return parse


def folder_to_write(text: str) -> str:
    """argparse type: an output folder (it may exist; it must not be a file)."""
    path = Path(text)
    if path.exists() and not path.is_dir():
        raise argparse.ArgumentTypeError(f"{text}: is a file, not a folder; give a folder")
    for parent in [path, *path.parents]:  # the nearest existing one must be writable
        if parent.exists():
            if not os.access(parent, os.W_OK):
                raise argparse.ArgumentTypeError(f"{text}: {parent} is not writable")
            break
    return text


def forget_unused(folder: str):
    """Remove a run folder that Hydra made for a refused run and nothing used (it holds only
    an empty train.log): a refusal leaves no trace behind."""
    folder = Path(folder)
    try:
        entries = list(folder.iterdir())
        if all(e.name == "train.log" and e.stat().st_size == 0 for e in entries):
            for e in entries:
                e.unlink()
            folder.rmdir()
    except OSError:
        pass


def _unparsable(args: list[str]) -> list[str]:
    """The command-line overrides Hydra's grammar cannot read."""
    from hydra.core.override_parser.overrides_parser import OverridesParser

    parser, bad = OverridesParser.create(), []
    for arg in args:
        if arg.startswith("-"):
            continue
        try:
            parser.parse_override(arg)
        except Exception:  # noqa: BLE001 (any parse failure names it)
            bad.append(arg)
    return bad


def fail(error: Exception, code: int = 2):
    """Print a refusal without a traceback and exit."""
    kind = type(error).__name__
    print(f"\nseg: {kind}:\n{error}", file=sys.stderr, flush=True)
    sys.exit(code)


def in_own_process(fn, *args, **kwargs):
    """fn(*args, **kwargs) in a fresh (spawned) process: its result, or its exception, here.

    A sweep runs its jobs one after another in one process, and TensorFlow keeps about 65 MB
    for every model trained in a process however it is released (keras-team/keras#17458), so
    each job runs in its own process and the sweep's memory stays flat. SIGTERM is passed on
    to the job (which checkpoints and stops as usual); a terminal's Ctrl-C reaches it directly.
    Inside a launcher's worker process (joblib's) fn runs there: spawn cannot copy its start
    method.
    """
    import multiprocessing
    import signal

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
    import ctypes
    import pickle
    import signal
    import traceback

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


def apply_overrides(cfg: dict, overrides: list[str]) -> dict:
    """A run's saved config (config.json) with key=value overrides; unknown keys are refused."""
    from seg.train import ConfigError

    bad = [o for o in overrides if "=" not in o or o.startswith(("+", "~"))]
    if bad:
        raise ConfigError(f"overrides must be key=value on the run's config, got {bad}")
    base = OmegaConf.create(cfg)
    OmegaConf.set_struct(base, True)  # a typo is an error, not a new key
    merged = to_dict(OmegaConf.merge(base, OmegaConf.from_dotlist(list(overrides))))
    changed = tuple(o.split("=", 1)[0] for o in overrides)
    from seg.config import problems

    bad = [p for p in problems({k: v for k, v in merged.items() if k != "class_names"})
           if p.startswith(changed)]  # the run's own values are not judged again
    if bad:
        raise ConfigError("\n".join(bad))
    return merged


try:
    from hydra.experimental.callback import Callback
except ImportError:  # pragma: no cover (hydra-core < 1.1)
    Callback = object


class SweepSummary(Callback):
    """At the end of a sweep: every job's result, every failed job and why (hydra.callbacks).

    Also writes SWEEP_DIR/summary.md and summary.json. `python scripts/compare.py SWEEP_DIR`
    gives the full comparison table.
    """

    def on_multirun_end(self, config, **kwargs):
        from seg import compare

        sweep_dir = Path(config.hydra.sweep.dir)
        if not sweep_dir.is_dir():
            return
        runs = compare.find_runs(sweep_dir)
        text = compare.sweep_summary(runs, sweep_dir)
        (sweep_dir / "summary.md").write_text(text + "\n")
        (sweep_dir / "summary.json").write_text(compare.summary_json(runs))
        print("\n" + text, flush=True)
