"""One TensorBoard page that answers "which run won": the runs under a folder, ranked.

`build(runs, into)` makes a log folder for TensorBoard out of the runs under a folder, without
touching them: one folder per run, named by its rank and the settings that tell it apart
(`01 deconv seed=1`), holding links to the run's own event files (curves, panels, final
figures); the run's hyperparameters read back from its config.json, so every key is there
whatever set it (the command line, an experiment file, a plan, a sweep); and one experiment
config for the whole set: val mIoU the first column, the keys that differ ticked.

Why a folder of its own: TensorBoard takes the first experiment config it meets as the one of
the whole log folder, and the runs' own ones know only their sweep; the HPARAMS table orders
its rows by name, so a rank in front of the name makes it the ranking.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass
from pathlib import Path

from tensorboard.backend.event_processing.event_file_loader import LegacyEventFileLoader
from tensorboard.compat.proto import event_pb2, summary_pb2
from tensorboard.plugins.custom_scalar import summary as custom_scalars
from tensorboard.plugins.hparams import api as hp
from tensorboard.plugins.hparams import summary_v2 as hp_summary
from tensorboard.summary.writer.event_file_writer import EventFileWriter

from seg import hparams
from seg.compare import Run, differing_keys
from seg.config import flatten

# the keys that decide whether the head and the loss agree (the "yellow image")
HEAD_KEYS = ("model.head_activation", "model.out_channels", "loss.name", "loss.from_logits")
# the columns a board of runs that differ in little shows
HEADLINE = ("decoder.name", "model.encoder", "loss.name", "trainer.learning_rate", "data.name")
HPARAMS_PREFIX = "_hparams_/"  # the hparams plugin's tags (session start, experiment config)
SMALL = 1 << 20  # the files seg writes with hparams in them are a few KB; Keras' are larger


@dataclass
class Entry:
    """A run as the board shows it: its row name and the run behind it."""

    name: str
    run: Run


def _overrides(run: Run) -> dict:
    """The settings the run's command line gave ({"decoder": "deconv", "seed": "1"}), from the
    .hydra/overrides.yaml Hydra keeps (or failure.json's); {} for a run made from Python."""
    listed = (run.failure or {}).get("overrides")
    path = run.path / ".hydra" / "overrides.yaml"
    if listed is None and path.is_file():
        listed = [line[2:].strip() for line in path.read_text(errors="replace").splitlines()
                  if line.startswith("- ")]
    out = {}
    for item in listed or []:
        key, sep, value = str(item).strip("'\"").lstrip("+~").partition("=")
        # what decides the result: not hydra.*, logging.* nor diagnostics.* (they only watch)
        if sep and ("." not in key or key.split(".")[0] in hparams.CONFIG_SECTIONS):
            out[key] = value
    return out


def _order(key: str):
    """Name parts in this order: config groups chosen (experiment, decoder), keys, the seed."""
    return ("." in key) + 2 * (key == "seed"), key


def labels(runs: list[Run], most: int = 3) -> list[str]:
    """What tells each run apart from the others: the command-line settings that differ among
    them, else the config keys that differ; at most `most` of them, "defaults" for none."""
    given = [_overrides(r) for r in runs]
    keys = sorted({k for g in given for k in g if len({repr(h.get(k)) for h in given}) > 1},
                  key=_order)
    if keys:
        parts = [[hparams.compact(k, g[k]) for k in keys if k in g] for g in given]
    else:
        flat = [flatten(r.config) if r.config else {} for r in runs]
        keys = sorted(differing_keys(runs), key=_order)
        parts = [[hparams.compact(k, f[k]) for k in keys if k in f] for f in flat]
    return [" ".join(p[:most]) + (" ..." if len(p) > most else "") or "defaults"
            for p in parts]


def ranked(runs: list[Run]) -> list[Entry]:
    """The runs best val mIoU first, each named by its rank and its label; the runs without a
    result last, named by what became of them."""
    done = sorted((r for r in runs if r.status == "ok"), key=lambda r: -r.miou
                  if r.miou == r.miou else float("inf"))
    rest = [r for r in runs if r.status != "ok"]
    names = dict(zip(map(id, runs), labels(runs), strict=True))
    entries = [Entry(f"{k:02d} {names[id(r)]}", r) for k, r in enumerate(done, 1)]
    entries += [Entry(f"-- {names[id(r)]} ({r.status})", r) for r in rest]
    seen: dict[str, int] = {}
    for entry in entries:  # the same settings twice (two sweeps in one folder): numbered
        seen[entry.name] = seen.get(entry.name, 0) + 1
        if seen[entry.name] > 1:
            entry.name += f" #{seen[entry.name]}"
    return entries


def _writes_hparams(path: Path) -> bool:
    """Whether an event file holds hparams summaries (seg's session start or experiment config),
    which the board writes anew."""
    if path.stat().st_size > SMALL:
        return False
    try:
        for event in LegacyEventFileLoader(str(path)).Load():
            if any(v.tag.startswith(HPARAMS_PREFIX) for v in event.summary.value):
                return True
    except Exception:  # a cut-short file (a killed run): its readable part is linked as it is
        return False
    return False


def _link_events(tb: Path, into: Path):
    """Links in `into` to the event files of a run's tb/ folder (train, validation, ...), those
    with hparams left out."""
    for events in sorted(tb.rglob("events.out.tfevents.*")):
        if _writes_hparams(events):
            continue
        target = into / events.parent.relative_to(tb) / events.name
        target.parent.mkdir(parents=True, exist_ok=True)
        os.symlink(events.resolve(), target)


def _write(folder: Path, *summaries):
    """Event files with the given Summary protos at step 0."""
    folder.mkdir(parents=True, exist_ok=True)
    writer = EventFileWriter(str(folder))
    for summary in summaries:  # TensorFlow's Summary class when it is loaded: the bytes are one
        summary = summary_pb2.Summary.FromString(summary.SerializeToString())
        writer.add_event(event_pb2.Event(wall_time=time.time(), step=0, summary=summary))
    writer.close()


def run_hparams(run: Run) -> dict:
    """A run's hyperparameters for the HPARAMS table: its config's keys (hparams.of_config) and
    the config groups its command line chose (experiment=yellow_image)."""
    out = hparams.of_config(run.config or {})
    for key, value in _overrides(run).items():  # a group that is not a section: experiment=
        if "." not in key and not any(k.startswith(f"{key}.") for k in out) and \
                key not in out and key not in hparams.SKIP_OVERRIDES:
            out[key] = value
    out["run"] = run.name
    return out


def ticked(differs: set[str], given: set[str], most: int = 5) -> set[str]:
    """The differing keys the table shows as columns (TensorBoard shows five, by name): the
    head and loss keys first (they decide a collapse), then the decoder, then what the command
    lines varied, then the rest; never the seed (repeats) nor the run's name."""
    def priority(key):
        return (key not in HEAD_KEYS, key != "decoder.name", key not in given, key)

    return set(sorted(differs - {"seed", "run"}, key=priority)[:most])


def build(runs: list[Run], into: str | Path) -> list[Entry]:
    """The board's log folder in `into` (made empty first): see the module's docstring.
    Returns the entries, ranked; runs without a tb/ folder are left out of it."""
    into = Path(into)
    entries = [e for e in ranked(runs) if (e.run.path / "tb").is_dir()]
    per_run = {e.name: run_hparams(e.run) for e in entries}
    keys = sorted({k for values in per_run.values() for k in values})
    differs = {k for k in keys if len({repr(v.get(k)) for v in per_run.values()}) > 1}
    given = {k for e in entries for k in _overrides(e.run)}
    classes: list[str] = []
    for entry in entries:
        for name in (entry.run.metrics or {}).get("class_names") or []:
            if name not in classes:
                classes.append(name)
    for entry in entries:
        folder = into / entry.name
        _link_events(entry.run.path / "tb", folder)
        _write(folder / "validation",
               hp_summary.hparams_pb(per_run[entry.name], trial_id=entry.name,
                                     start_time_secs=_started(entry.run)),
               custom_scalars.pb(hparams.layout(classes)))
    experiment = hp_summary.hparams_config_pb(
        hparams=[hp.HParam(k) for k in keys], metrics=hparams.metric_columns(classes))
    shown = ticked(differs, given)  # topped up with the headline keys when few differ
    shown |= set([k for k in HEADLINE if k in keys and k not in shown][:5 - len(shown)])
    hparams.mark_differing(experiment, shown)
    if entries:  # beside the best run's session: a folder of its own would be a run in the lists
        _write(into / entries[0].name / "validation", experiment)
    return entries


def _started(run: Run) -> float:
    """When the run began, as well as its folder tells (its config.json's time)."""
    for name in ("config.json", ".hydra/config.yaml"):
        if (run.path / name).is_file():
            return (run.path / name).stat().st_mtime
    return time.time()

