"""The JSON files seg writes and reads back, checked against what seg wrote there.

metrics.json, config.json, failure.json and refused.json of a run, summary.json of a sweep and
the resume states' sidecars are read back by compare, evaluate, predict, the sweep summary and
a resume.
A file that does not hold what seg wrote (a list, a text where a number belongs, cut short,
not UTF-8) is a RecordError naming the file and what is wrong with it; the callers skip it
(compare, the summary) or refuse (evaluate, a resume), never a traceback.

Each check looks at the keys seg reads back, and only at their types: keys a newer or older
seg wrote are left alone, so a record stays readable across versions.
"""

from __future__ import annotations

import json
import math
from pathlib import Path


class RecordError(ValueError):
    """A JSON file of seg's that cannot be read or does not hold what seg wrote; names it."""


def _number(v, null: bool = True) -> bool:
    if v is None:
        return null
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def _whole(v, null: bool = False) -> bool:
    return (v is None and null) or (isinstance(v, int) and not isinstance(v, bool))


def _text(v, null: bool = False) -> bool:
    return (v is None and null) or isinstance(v, str)


def _kind(v) -> str:
    return {dict: "a mapping", list: "a list", str: "a text", bool: "true/false",
            type(None): "null"}.get(type(v), "a number" if _number(v, False) else type(v).__name__)


def _keys(record: dict, expected: dict, where: str = "") -> list[str]:
    """Problems of the expected keys present in record: key -> (test, what it should be)."""
    found = []
    for key, (test, wanted) in expected.items():
        if key in record and not test(record[key]):
            found.append(f"{where}{key} is {_kind(record[key])} ({record[key]!r:.60}), "
                         f"not {wanted}")
    return found


def metrics_problems(m) -> list[str]:
    """What a metrics.json holds that seg did not write there (the keys seg reads back)."""
    if not isinstance(m, dict):
        return [f"holds {_kind(m)}, not a mapping of results"]
    found = [] if "val_mean_iou" in m else ["no val_mean_iou"]
    found += _keys(m, {
        "val_mean_iou": (_number, "a number or null"),
        "val_iou_per_class": (lambda v: isinstance(v, list) and all(map(_number, v)),
                              "a list of numbers"),
        "class_names": (lambda v: isinstance(v, list) and all(map(_text, v)), "a list of texts"),
        "epochs_completed": (_whole, "a whole number"),
        "wall_time_s": (_number, "a number"),
        "rss_mb_at_end": (_number, "a number or null"),
        "diagnostics": (lambda v: isinstance(v, dict), "a mapping"),
        "skipped_samples": (lambda v: isinstance(v, list), "a list")})
    if not found and isinstance(m.get("val_iou_per_class"), list) and isinstance(
            m.get("class_names"), list) and len(m["val_iou_per_class"]) != len(m["class_names"]):
        found.append(f"val_iou_per_class has {len(m['val_iou_per_class'])} values for "
                     f"{len(m['class_names'])} class_names")
    diag = m.get("diagnostics")
    if isinstance(diag, dict) and "alarms" in diag:
        alarms = diag["alarms"]
        if not isinstance(alarms, list) or not all(
                isinstance(a, dict) and _text(a.get("alarm")) for a in alarms):
            found.append("diagnostics.alarms is not a list of {alarm: text, epoch: number}")
    return found


def config_problems(c) -> list[str]:
    """What a config.json holds that seg did not write there: every value whose type is not
    the schema's (seg/config.py), and sections that are not mappings."""
    from seg import config  # noqa: PLC0415 (config imports the model builders)

    if not isinstance(c, dict):
        return [f"holds {_kind(c)}, not a mapping of settings"]
    data = c.get("data")
    if not isinstance(data, dict) or not isinstance(data.get("name"), str):
        return ["no data section naming its data (data.name)"]
    return config.type_problems(c)


def failure_problems(f) -> list[str]:
    """What a failure.json (a failed sweep job) holds that seg did not write there."""
    if not isinstance(f, dict):
        return [f"holds {_kind(f)}, not a mapping"]
    return _keys(f, {
        "job": (lambda v: _whole(v, True), "a whole number"),
        "overrides": (lambda v: isinstance(v, list) and all(map(_text, v)), "a list of texts"),
        "config": (lambda v: v is None or isinstance(v, dict), "a mapping or null"),
        "error": (_text, "a text"), "message": (_text, "a text"),
        "refused": (lambda v: isinstance(v, bool), "true or false")})


def refused_problems(r) -> list[str]:
    """What a refused.json (a run refused at its start, exit code 2) holds that seg did not
    write there."""
    if not isinstance(r, dict):
        return [f"holds {_kind(r)}, not a mapping"]
    found = [] if "message" in r else ["no message (why the run was refused)"]
    return found + _keys(r, {
        "error": (_text, "a text"), "message": (_text, "a text"),
        "overrides": (lambda v: isinstance(v, list) and all(map(_text, v)), "a list of texts"),
        "time": (_text, "a text")})


def summary_problems(s) -> list[str]:
    """What a sweep's summary.json holds that seg did not write there."""
    if not isinstance(s, list):
        return [f"holds {_kind(s)}, not a list of runs"]
    for i, entry in enumerate(s):
        if not isinstance(entry, dict) or not _text(entry.get("run")):
            return [f"entry {i} is not a mapping with a run name"]
        found = _keys(entry, {"status": (_text, "a text"),
                              "val_mean_iou": (_number, "a number or null"),
                              "error": (lambda v: _text(v, True), "a text or null")},
                      f"entry {i} ({entry['run']}): ")
        if found:
            return found
    return []


def state_problems(s) -> list[str]:
    """What a resume state's sidecar (checkpoints/resume/state-*.json) holds that seg did not
    write there (what a resume reads from it)."""
    if not isinstance(s, dict):
        return [f"holds {_kind(s)}, not a mapping"]
    if "checkpoint" not in s:
        return ["no checkpoint (the name of the weights it belongs to)"]
    return _keys(s, {
        "checkpoint": (lambda v: _text(v) and "/" not in v and v not in ("", ".", ".."),
                       "a file name"),
        "epoch": (_whole, "a whole number"), "step_in_epoch": (_whole, "a whole number"),
        "global_step": (_whole, "a whole number"),
        "history": (lambda v: isinstance(v, dict) and all(isinstance(x, list)
                                                          for x in v.values()),
                    "a mapping of lists"),
        "best": (lambda v: _number(v) and (v is None or not math.isnan(v)), "a number or null"),
        "best_epoch": (lambda v: _whole(v, True), "a whole number or null"),
        "callbacks": (lambda v: isinstance(v, dict), "a mapping"),
        "config": (lambda v: v is None or isinstance(v, dict), "a mapping")})


CHECKS = {"metrics.json": metrics_problems, "config.json": config_problems,
          "failure.json": failure_problems, "refused.json": refused_problems,
          "summary.json": summary_problems,
          "state": state_problems}


def read(path: str | Path, kind: str | None = None):
    """The JSON value of path, checked as `kind` (a key of CHECKS; default: the file's name).

    Raises RecordError naming the file: unreadable, not JSON (truncated), or not what seg
    writes there. A missing file raises FileNotFoundError, for the caller to decide.
    """
    path = Path(path)
    try:
        value = json.loads(path.read_bytes().decode("utf-8"))
    except FileNotFoundError:
        raise
    except IsADirectoryError:
        raise RecordError(f"{path}: is a folder, not a JSON file") from None
    except OSError as e:
        raise RecordError(f"{path}: cannot be read ({e.strerror or e})") from None
    except UnicodeDecodeError:
        raise RecordError(f"{path}: not text (UTF-8): not a file seg wrote") from None
    except ValueError as e:
        raise RecordError(f"{path}: not valid JSON (truncated or corrupt: {e})") from None
    problems = CHECKS[kind or path.name](value)
    if problems:
        raise RecordError(f"{path}: not what seg writes there: " + "; ".join(problems[:3]))
    return value


def read_if_there(path: str | Path, kind: str | None = None, problems: list | None = None):
    """read(), or None when the file is missing or malformed (then its problem, naming the
    file, is appended to `problems`)."""
    try:
        return read(path, kind)
    except FileNotFoundError:
        return None
    except RecordError as e:
        if problems is not None:
            problems.append(str(e))
        return None
