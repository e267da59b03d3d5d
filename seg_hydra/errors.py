"""Refusals instead of tracebacks: seg's and Hydra's errors as one message and exit code 2."""

from __future__ import annotations

import contextlib
import json
import os
import re
import sys
import time
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
    deleted = deleted_then_used(sys.argv[1:])
    if deleted:
        fail(_Refused("ConfigError", deleted))
    unwritable = run_folder_problem(sys.argv[1:])
    if unwritable:  # before Hydra opens its log file there (a traceback of its own)
        fail(_Refused("RunFolder", unwritable))
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
        hints = did_you_mean(sys.argv[1:])
        fail(_Refused(type(e).__name__, "\n".join(hints + [text]) if hints else text))
    except REFUSALS as e:
        fail(e)
    except OSError as e:
        if e.filename is None:
            raise
        why = "exists and is not a folder" if isinstance(e, FileExistsError) else e.strerror
        folder = _output_dir()
        if folder is not None and not _related(Path(e.filename), folder):
            # not the run folder's: a data or config file, named as it is
            fail(OSError(f"{e.filename}: {why or e} (a file outside the run folder {folder}; "
                         "python scripts/check_data.py checks the data files)"))
        fail(OSError(f"{e.filename}: {why or e}. The run folder (or a file in it) "
                     "cannot be written: choose another with hydra.run.dir=... "
                     "(hydra.sweep.dir=... for a sweep; a writable folder, a name under 255 "
                     "bytes)"))


def schema_keys() -> list[str]:
    """Every dotted key of the config the schema (seg/config.py) allows: the data keys of
    every data option, the photometric ones included."""
    import dataclasses  # noqa: PLC0415
    import typing  # noqa: PLC0415

    from seg import config  # noqa: PLC0415

    def dotted(cls, prefix: str) -> list[str]:
        hints, out = typing.get_type_hints(cls), []
        for field in dataclasses.fields(cls):
            kind, key = hints.get(field.name), prefix + field.name
            if dataclasses.is_dataclass(kind):
                out += dotted(kind, key + ".")
            elif key == "data":  # one schema per data option (data.name)
                for schema in config.DATA.values():
                    out += dotted(schema, "data.")
            else:
                out.append(key)
        return out

    keys = dotted(config.Config, "")
    keys += [f"data.photometric.{name}" for name in config.PHOTOMETRIC]
    return sorted(set(keys))


def _groups() -> dict[str, tuple[list[str], bool]]:
    """The config groups of configs/ (decoder, data, experiment, ...): their options, and
    whether train.yaml's defaults list names the group (switched without "+")."""
    import yaml  # noqa: PLC0415

    from seg_hydra.compose import CONFIG_DIR  # noqa: PLC0415 (compose imports this module's kin)

    root = Path(CONFIG_DIR)
    try:
        defaults = yaml.safe_load((root / "train.yaml").read_text()).get("defaults") or []
    except (OSError, yaml.YAMLError, AttributeError):
        defaults = []
    listed = {next(iter(d)) for d in defaults if isinstance(d, dict) and d}
    return {d.name: (sorted(f.stem for f in d.glob("*.yaml")), d.name in listed)
            for d in sorted(root.iterdir()) if d.is_dir()}


def _initials(name: str) -> str:
    return "".join(part[:1] for part in name.split("_"))


def _close_keys(key: str, keys: list[str]) -> list[str]:
    """The schema keys closest to a dotted key that is not one: its last part matched within
    its section (or the closest section), by spelling or initials (trainer.lr ->
    trainer.learning_rate); else the keys of any section with that last part."""
    import difflib  # noqa: PLC0415

    section, _, leaf = key.rpartition(".")
    by_section: dict[str, list[str]] = {}
    for k in keys:
        if "." in k:
            by_section.setdefault(k.rpartition(".")[0], []).append(k.rpartition(".")[2])
    tried = [section] if section in by_section else \
        difflib.get_close_matches(section, list(by_section), n=1, cutoff=0.6)
    close = []
    for sec in tried:
        leaves = by_section[sec]
        found = [leaf] if leaf in leaves else (
            difflib.get_close_matches(leaf, leaves, n=3, cutoff=0.6)
            + [lf for lf in leaves if len(leaf) > 1 and _initials(lf) == leaf])
        close += [f"{sec}.{lf}" for lf in dict.fromkeys(found)]
    return close or [k for k in keys if k.rpartition(".")[2] == leaf]


def did_you_mean(args: list[str]) -> list[str]:
    """For each command-line override whose key or group option does not exist, the closest
    valid ones (difflib over the schema's dotted keys and configs/' groups and options):
    "trainer.epoch=3: did you mean trainer.epochs=3?", "+decoder=deconvv: did you mean
    +decoder=deconv?". [] when every key and option exists (or none is close)."""
    import difflib  # noqa: PLC0415

    keys, groups, hints = schema_keys(), _groups(), []
    sections = sorted({k.split(".")[0] for k in keys})
    for arg in args:
        if arg.startswith("-") or "=" not in arg:
            continue
        raw_key, _, value = arg.partition("=")
        prefix = raw_key[:len(raw_key) - len(raw_key.lstrip("+~"))]
        key = raw_key.lstrip("+~")
        if key.startswith(("hydra.", "hydra/")) or key in keys or key in sections and \
                key not in groups:
            continue
        guesses: list[str] = []
        if key in groups:  # a group option: +decoder=deconvv (or a sweep's list of them)
            options, given = groups[key][0], [v.strip() for v in value.split(",")]
            close = {o: difflib.get_close_matches(o, options, n=3, cutoff=0.5)
                     for o in given if o and o not in options}
            if len(given) > 1 and all(close.values()):  # the list with each one corrected
                guesses.append(f"{prefix}{key}=" + ",".join(close[o][0] if o in close else o
                                                            for o in given))
            elif len(given) == 1:
                guesses += [f"{prefix}{key}={c}" for c in close.get(given[0], [])]
        elif "." not in key:  # a misspelt group (decoderr=...) or top-level key (sed=1), or a
            # key without its section (epochs=3)
            for c in difflib.get_close_matches(key, list(groups), n=2, cutoff=0.6):
                guesses.append(f"{'' if groups[c][1] else '+'}{c}={value}")
            guesses += [f"{k}={value}" for k in difflib.get_close_matches(
                key, [k for k in keys if "." not in k], n=2, cutoff=0.6)]
            guesses += [f"{k}={value}" for k in _close_keys(key, keys)]
        else:  # an existing key needs no "+"
            guesses += [f"{'' if prefix == '+' else prefix}{k}={value}"
                        for k in _close_keys(key, keys)]
        if guesses:
            hints.append(f"{arg}: did you mean {' or '.join(list(dict.fromkeys(guesses))[:3])}?")
    return hints


def _output_dir() -> Path | None:
    """The run (or job) folder Hydra was setting up, when it got that far."""
    from hydra.core.hydra_config import HydraConfig  # noqa: PLC0415

    try:
        return Path(HydraConfig.get().runtime.output_dir)
    except Exception:  # noqa: BLE001 (not set yet: the folder could not even be named)
        return None


def _related(path: Path, folder: Path) -> bool:
    """Whether path is folder, inside it, or one of the folders above it (made for it)."""
    path, folder = Path(os.path.abspath(path)), Path(os.path.abspath(folder))
    return path == folder or folder in path.parents or path in folder.parents


def _override_keys(args: list[str]) -> list[tuple[str, str]]:
    """(prefix, key) of each command-line override: prefix is "~", "+", "++" or ""."""
    out = []
    for arg in args:
        if arg.startswith("-") or ("=" not in arg and not arg.startswith("~")):
            continue
        key = arg.partition("=")[0]
        prefix = key[:len(key) - len(key.lstrip("+~"))]
        out.append((prefix, key.lstrip("+~")))
    return out


def deleted_then_used(args: list[str]) -> str | None:
    """The refusal for an override that deletes a group or key (~data) while another sets a
    key inside it (data.root=...), or that deletes what every run needs: Hydra would report
    the key as unknown, or the section as unable to delete, without saying why."""
    from seg.config import SECTIONS  # noqa: PLC0415

    keys = _override_keys(args)
    for prefix, deleted in keys:
        if prefix != "~":
            continue
        group = "." not in deleted
        users = [f"{p}{k}" for p, k in keys if p != "~" and (
            k.startswith(deleted + ".") or (k == deleted and not group))]
        if users and group:
            return (f"~{deleted} deletes the config group {deleted}, and {', '.join(users)} "
                    f"set{'s' if len(users) == 1 else ''} a key in that deleted group: drop "
                    f"~{deleted} (to switch the group, write {deleted}=OPTION), or drop the "
                    f"{deleted}.* overrides")
        if users:
            return (f"~{deleted} deletes the key {deleted}, and {', '.join(users)} sets it: drop "
                    f"~{deleted} (the setting alone changes it)")
        if not group and deleted.split(".")[0] in SECTIONS:
            return (f"~{deleted}: {deleted} is a key of every run's config (the schema in "
                    f"seg/config.py) and cannot be deleted; set it instead ({deleted}=VALUE, "
                    "or null where that is allowed)")
    return None


def run_folder_problem(args: list[str]) -> str | None:
    """Why the run folder (hydra.run.dir, or hydra.sweep.dir with -m) cannot be written, before
    Hydra opens its log file in it: on a read-only file system, not writable by this user, or
    below a file. None when it can be, or cannot be told (a value with ${...})."""
    sweep = bool({"-m", "--multirun"} & set(args))
    name = "hydra.sweep.dir" if sweep else "hydra.run.dir"
    given = None
    for arg in args:
        if arg.startswith(name + "="):
            given = arg.partition("=")[2]
    if given is None:
        given, folder = "outputs (the default)", Path("outputs")
    else:
        text = given.strip("'\"")
        if not text.strip() or "${" in text:
            return None  # an empty one is refused by the job, naming it
        folder = Path(text).expanduser()
    for place in [folder, *folder.absolute().parents]:
        try:
            if not (place.exists() or place.is_symlink()):
                continue
        except OSError:  # a name too long, ...: Hydra's own error names it
            return None
        if place.is_symlink() and not place.exists():
            return (f"{name}={given}: {place} is a dangling symbolic link (its target is gone); "
                    f"choose another folder with {name}=...")
        if not place.is_dir():
            return None  # Hydra's own error names it ("exists and is not a folder")
        if os.access(place, os.W_OK | os.X_OK):
            return None
        try:
            read_only = bool(os.statvfs(place).f_flag & os.ST_RDONLY)
        except OSError:
            read_only = False
        why = ("is on a read-only file system (mount)" if read_only else
               "is not writable by this user (permissions)")
        held = (" It holds a run: copy it to a writable place to resume or extend it; "
                "evaluate.py and predict.py read it where it is." if place == folder
                and (place / "config.json").exists() else "")
        return (f"{name}={given}: {place} {why}, so the run's log, checkpoints and results "
                f"cannot be written there.{held} Choose a writable folder with {name}=...")
    return None


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


REFUSED = "refused.json"  # a refused run's record in its folder (compare lists it as refused)


def record_refusal(folder: str | Path, error: Exception, overrides: list[str] | None = None):
    """Write folder/refused.json: why the run in folder was refused (error, message, the
    command line's overrides), so that compare lists it as refused instead of as still
    running. Nothing is written where the folder is gone (forget_unused removed it) or cannot
    be written: the refusal on the console is the message that counts."""
    folder = Path(folder)
    if not folder.is_dir():
        return
    record = {"error": getattr(error, "seg_kind", None) or type(error).__name__,
              "message": str(error), "overrides": list(overrides or []),
              "time": time.strftime("%Y-%m-%d %H:%M:%S")}
    with contextlib.suppress(OSError):
        (folder / REFUSED).write_text(json.dumps(record, indent=2))


def forget_refusal(folder: str | Path):
    """Remove an earlier start's refused.json from a run folder that this start used."""
    with contextlib.suppress(OSError):
        (Path(folder) / REFUSED).unlink(missing_ok=True)


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
