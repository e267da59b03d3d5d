"""Refusals instead of tracebacks: seg's and Hydra's errors as one message and exit code 2."""

from __future__ import annotations

import os
import re
import sys
from pathlib import Path

from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.errors import HydraException, OverrideParseException
from omegaconf.errors import OmegaConfBaseException

from seg.checkpoints import CheckpointError
from seg.config import ConfigError
from seg.data import DataError
from seg.diagnostics import PreflightError
from seg.distribute import StrategyError
from seg.inference import LoadError

REFUSALS = (ConfigError, DataError, PreflightError, LoadError, CheckpointError, StrategyError,
            OmegaConfBaseException)


def refusing(fn):
    """fn(), with seg's refusals and Hydra's config errors printed as one message (exit 2)."""
    try:
        return fn()
    except REFUSALS as e:
        fail(e)
    except Exception as e:  # Hydra's override errors name the bad key or option
        if type(e).__module__.startswith(("hydra", "omegaconf")):
            fail(e)
        raise


# Config groups whose options need a Hydra plugin from an extra: (group, option) -> the
# plugin's module and the extra that installs it
PLUGINS = {("sweep", "optuna"): ("hydra_plugins.hydra_optuna_sweeper", "optuna"),
           ("hydra/sweeper", "optuna"): ("hydra_plugins.hydra_optuna_sweeper", "optuna"),
           ("launcher", "joblib"): ("hydra_plugins.hydra_joblib_launcher", "joblib"),
           ("hydra/launcher", "joblib"): ("hydra_plugins.hydra_joblib_launcher", "joblib"),
           ("launcher", "slurm"): ("hydra_plugins.hydra_submitit_launcher", "slurm"),
           ("hydra/launcher", "submitit_slurm"): ("hydra_plugins.hydra_submitit_launcher",
                                                  "slurm")}


def missing_plugin(args: list[str]) -> str | None:
    """The refusal for an option whose Hydra plugin (an optional extra) is not installed."""
    import importlib.util  # noqa: PLC0415

    for arg in args:
        group, _, option = arg.lstrip("+~").partition("=")
        plugin = PLUGINS.get((group, option))
        if plugin and importlib.util.find_spec(plugin[0]) is None:
            return (f"{arg}: needs the '{plugin[1]}' extra, which is not installed: "
                    f'pip install -e ".[{plugin[1]}]" (or .venv/bin/pip install '
                    f'"seg[{plugin[1]}]" from another folder)')
    return None


def launch(main):
    """Call a @hydra.main function with Hydra's own errors refused like seg's (exit 2).

    An unknown key or group option, a value of the wrong type, a missing value, a run folder
    that cannot be made (read-only, a file, a name over 255 bytes): the message, no traceback.
    """
    os.environ["HYDRA_FULL_ERROR"] = "1"  # Hydra raises instead of printing and exiting 1
    missing = missing_plugin(sys.argv[1:])
    if missing:
        fail(_Refused("MissingExtra", missing))
    if "model.encoder=list" in sys.argv[1:]:  # what there is, instead of a run
        from seg.models import catalog  # noqa: PLC0415

        print(catalog.text(*catalog.rows()))
        sys.exit(0)
    try:
        return main()
    except KeyboardInterrupt:  # a second Ctrl-C: the last committed state is kept
        print("\nseg: stopped at once (a second Ctrl-C); the last committed resume state is "
              "kept: run the same command to resume", file=sys.stderr, flush=True)
        sys.exit(130)
    except (HydraException, OmegaConfBaseException) as e:
        if isinstance(e, OverrideParseException):
            bad = _unparsable(sys.argv[1:])
            fail(OverrideParseException(
                override=" ".join(bad), message=f"{', '.join(bad) or 'an override'}: {e}\n"
                "(quote a value with brackets or spaces: 'key=\"a[1] b\"')"))
        cause = e.__cause__
        text = f"{e}\n{cause}" if isinstance(cause, OmegaConfBaseException) else str(e)
        # OmegaConf's hint "use +key=..." does not apply: the schema refuses unknown keys too
        text = re.sub(r"To append to your config use \+\S+", "It is not a key of the config: "
                      "check its spelling (configs/train.yaml lists every key).", text)
        fail(_Refused(type(e).__name__, text))
    except REFUSALS as e:
        fail(e)
    except OSError as e:
        if e.filename is None:
            raise
        why = "exists and is not a folder" if isinstance(e, FileExistsError) else e.strerror
        fail(OSError(f"{e.filename}: {why or e}. The run folder (or a file in it) "
                     "cannot be written: choose another with hydra.run.dir=... "
                     "(hydra.sweep.dir=... for a sweep; a writable folder, a name under 255 "
                     "bytes)"))


class _Refused(Exception):
    """A refusal shown under the name of the error it came from."""

    def __init__(self, kind: str, text: str):
        super().__init__(text)
        self.seg_kind = kind


def forget_unused(folder: str):
    """Remove a run folder that Hydra made for a refused run and nothing used (it holds only
    train.log, what the console showed before the refusal, and a free lock): a refusal leaves
    no trace behind."""
    folder = Path(folder)
    try:
        entries = list(folder.iterdir())
        if all(e.name == "train.log" or (e.name == ".lock" and e.stat().st_size == 0)
               for e in entries):
            for e in entries:
                e.unlink()
            folder.rmdir()
    except OSError:
        pass


def _unparsable(args: list[str]) -> list[str]:
    """The command-line overrides Hydra's grammar cannot read."""
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
    kind = getattr(error, "seg_kind", None) or type(error).__name__
    print(f"\nseg: {kind}:\n{error}", file=sys.stderr, flush=True)
    sys.exit(code)
