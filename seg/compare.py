"""Compare runs: which settings differ, what they scored over seeds, and what they predict.

A run is a folder with config.json (and metrics.json once it finished, failure.json when a
sweep job failed, refused.json when scripts/train.py refused it after making its folder). Runs
are grouped by the settings that differ between them, seeds aside, so a decoder x seed sweep
gives one row per decoder with the mean and spread over seeds.
"""

from __future__ import annotations

import csv
import json
import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from seg import records
from seg.config import SEED_KEYS, applied, flatten



@dataclass
class Run:
    path: Path
    name: str
    config: dict | None
    metrics: dict | None
    failure: dict | None
    problems: tuple[str, ...] = ()  # its JSON files that are unreadable or malformed, named
    refused: dict | None = None  # refused.json: the run was refused at its start (exit 2)

    @property
    def status(self) -> str:
        if self.metrics is not None:
            return "ok"
        if self.failure is not None:
            return "failed"
        return "refused" if self.refused is not None else "incomplete"

    @property
    def miou(self) -> float:
        value = (self.metrics or {}).get("val_mean_iou")
        return float("nan") if value is None else float(value)

    @property
    def why(self) -> str:
        """Why a run has no result, in one line."""
        if self.failure:
            first = (self.failure.get("message") or "").strip().splitlines() or [""]
            return f"{self.failure.get('error')}: {first[0][:300]}"
        if self.refused:
            first = (self.refused.get("message") or "").strip().splitlines() or [""]
            more = [line.strip() for line in first[1:] if line.strip()]  # a refusal's finding
            text = first[0] + (f" {more[0]}" if more and len(first[0]) < 60 else "")
            return f"{self.refused.get('error', 'refused')}: {text[:300]}"
        if self.problems:  # the file named, and what is wrong with it
            return f"skipped: {self.problems[0]}"
        return "no metrics.json (still running, or killed before the end)"


def find_runs(root: str | Path) -> list[Run]:
    """Every run folder under root (root itself included), in folder-name order."""
    root = Path(root)
    if not root.is_dir():
        raise FileNotFoundError(f"{root}: " + ("a file, not a folder of runs" if root.exists()
                                               else "no such folder"))
    folders = set()
    for marker in ("config.json", "failure.json", "refused.json", ".hydra"):
        folders |= {p.parent for p in root.rglob(marker)}
    runs = []
    for folder in sorted(folders, key=lambda p: _natural(str(p.relative_to(root)))):
        if any(parent in folders for parent in folder.parents):
            continue  # a folder inside a run
        problems: list[str] = []  # a malformed file is named and left out, never a traceback
        failure = records.read_if_there(folder / "failure.json", problems=problems)
        config = records.read_if_there(folder / "config.json", problems=problems)
        if config is None and failure and records.config_problems(failure.get("config")) == []:
            config = failure["config"]
        metrics = records.read_if_there(folder / "metrics.json", problems=problems)
        refused = records.read_if_there(folder / "refused.json", problems=problems)
        runs.append(Run(folder, str(folder.relative_to(root)) or folder.name, config,
                        metrics, failure, tuple(problems), refused))
    return runs


def _natural(text: str):
    """Sort key where job 10 comes after job 9."""
    head = text.split("_", 1)[0]
    return (int(head), text) if head.isdigit() else (1 << 30, text)


def settings(config: dict) -> dict:
    """A run's settings as it was given them, flat: what `auto` became (config.json's
    computed.auto, which holds the numbers of the crop, depth and batch) back to auto, and
    the computed values left out; so a job refused before its data were read and one that
    trained compare alike."""
    auto = (config.get("computed") or {}).get("auto") or {}
    given = {k: v for k, v in config.items() if k != "computed"}
    return flatten(applied(given, {k: "auto" for k in auto
                                   if isinstance(given.get(k.partition(".")[0]), dict)}))


def differing_keys(runs: list[Run]) -> list[str]:
    """Config keys whose values are not the same in every run that has a config."""
    flat = [settings(r.config) for r in runs if r.config]
    keys = sorted(set().union(*flat)) if flat else []
    return [k for k in keys if len({repr(f.get(k)) for f in flat}) > 1]


@dataclass
class Group:
    label: str  # what the table shows: the settings in which this group differs (short_labels)
    runs: list[Run]
    settings: str = ""  # every differing setting's value (seeds aside), or the label

    @property
    def done(self) -> list[Run]:
        return [r for r in self.runs if r.status == "ok"]

    def values(self, fn) -> np.ndarray:
        """fn of every finished run, the finite values only (a run that never validated has
        val_mean_iou null)."""
        values = np.array([fn(r) for r in self.done], np.float64)
        return values[np.isfinite(values)]

    @property
    def best(self) -> Run | None:
        return max(self.done, key=lambda r: r.miou, default=None)


COMMON = "common settings"  # the label of a group that changes none of the common values


def common_values(runs: list[Run], keys: list[str]) -> dict[str, str]:
    """key -> the value (its text) that more than half of the runs with a config hold, for
    the keys where there is one; {} where the runs make fewer than three groups (two groups
    are a pair: each is named by all its differing values)."""
    flat = [settings(r.config) for r in runs if r.config]
    if len({tuple(str(f.get(k)) for k in keys) for f in flat}) < 3:
        return {}
    common = {}
    for k in keys:
        values = [str(f.get(k)) for f in flat]
        top = max(set(values), key=values.count)
        if values.count(top) * 2 > len(values):
            common[k] = top
    return common


def group_runs(runs: list[Run]) -> tuple[list[Group], list[str]]:
    """Runs grouped by the differing settings (seeds aside: they make repeats), best mean val
    mIoU first.

    A group's label names only the settings in which it differs from the others: a key whose
    value most runs share (common_values) is left out of the groups that hold that value, so
    a run that changes one thing is labelled by that one thing; a group that changes none is
    labelled COMMON. Its settings hold every differing key's value (compare.csv's settings).
    """
    keys = [k for k in differing_keys(runs) if k not in SEED_KEYS]
    common = common_values(runs, keys)
    groups: dict[str, Group] = {}
    for run in runs:
        if run.config is None:
            label = ",".join(o.lstrip("+") for o in (run.failure or {}).get("overrides", [])
                             if not o.lstrip("+").startswith(SEED_KEYS)) or run.name
            short = label
        else:
            flat = settings(run.config)
            label = ",".join(f"{k}={flat.get(k)}" for k in keys) or "all runs"
            short = ",".join(f"{k}={flat.get(k)}" for k in keys
                             if common.get(k) != str(flat.get(k))) or (COMMON if keys
                                                                       else label)
        groups.setdefault(label, Group(short, [], label)).runs.append(run)
    ordered = sorted(groups.values(), key=lambda g: -np.nanmean(g.values(lambda r: r.miou))
                     if g.done else math.inf)
    return ordered, keys


def _class_iou(run: Run, k: int) -> float:
    """Class k's validation IoU of a run (NaN where its run has fewer classes or none)."""
    ious = run.metrics.get("val_iou_per_class") or []
    return float("nan") if k >= len(ious) or ious[k] is None else float(ious[k])


def _mean_std(values: np.ndarray) -> tuple[float, float]:
    if not len(values):
        return float("nan"), float("nan")
    return float(values.mean()), float(values.std(ddof=1)) if len(values) > 1 else float("nan")


def _alarms(run: Run) -> list[str]:
    diag = (run.metrics or {}).get("diagnostics", {})
    final = {(a.get("kind") or a["alarm"].split(":")[0]).replace("_", " ")  # kind: seg.collapse
             for a in diag.get("alarms", [])  # (the text's head in runs from before kinds)
             if a.get("epoch") == (run.metrics or {}).get("epochs_completed")}
    if diag.get("constant_output"):
        final.add("constant output")
    if diag.get("class_vanished"):
        final.add("class vanished")
    return sorted(final)


def rows(groups: list[Group]) -> list[dict]:
    """One dict per group: the figures of the comparison table."""
    out = []
    for g in groups:
        miou, spread = _mean_std(g.values(lambda r: r.miou))
        names = next((r.metrics.get("class_names") for r in g.done), None) or []
        row = {"config": g.label, "runs": len(g.runs), "finished": len(g.done),
               "seeds": ",".join(str((r.config or {}).get("seed")) for r in g.done),
               "val_mean_iou": miou, "val_mean_iou_std": spread,
               "val_mean_iou_min": float(np.min(g.values(lambda r: r.miou))) if g.done else None,
               "val_mean_iou_max": float(np.max(g.values(lambda r: r.miou))) if g.done else None}
        for k, name in enumerate(names):
            row[f"iou_{name}"] = _mean_std(g.values(lambda r, k=k: _class_iou(r, k)))[0]
        alarmed = [r for r in g.done if _alarms(r)]
        kinds = sorted({a for r in alarmed for a in _alarms(r)})
        row["alarms"] = f"{len(alarmed)}/{len(g.done)}: {', '.join(kinds)}" if alarmed else "none"
        row["epochs"] = _mean_std(g.values(lambda r: r.metrics.get("epochs_completed", 0)))[0]
        row["wall_time_s"] = _mean_std(g.values(lambda r: r.metrics.get("wall_time_s", 0)))[0]
        row["failed"] = len([r for r in g.runs if r.status == "failed"])
        row["settings"] = g.settings or g.label  # every differing setting, not only the label's
        out.append(row)
    return out


def verdict(groups: list[Group]) -> str:
    """Which config is best, and whether the gap to the next is beyond the seed spread."""
    ranked = [g for g in groups if g.done]
    if len(ranked) < 2:
        return ""
    a, b = ranked[0], ranked[1]
    va, vb = a.values(lambda r: r.miou), b.values(lambda r: r.miou)
    gap = va.mean() - vb.mean()
    text = (f"Best: {a.label} (val mIoU {va.mean():.4f} over {len(va)} run(s)), "
            f"{gap:+.4f} ahead of {b.label}")
    if len(va) > 1 and len(vb) > 1:
        from scipy import stats

        p = stats.ttest_ind(va, vb, equal_var=False).pvalue
        clear = gap > va.std(ddof=1) + vb.std(ddof=1)
        text += (f"; Welch t-test p = {p:.3g}: "
                 + ("the gap is larger than the seed spread." if clear and p < 0.05 else
                    "not distinguishable from seed noise with these runs."))
    else:
        text += "; one run each: repeat with seeds (seed=0,1,2) to tell a gap from noise."
    return text


def _fmt(value, digits=4):
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "-"
    return f"{value:.{digits}f}" if isinstance(value, float) else str(value)


def markdown(groups: list[Group], runs: list[Run]) -> str:
    """The comparison table, failed jobs and the verdict, as Markdown."""
    table = rows(groups)
    ious = list(dict.fromkeys(k for row in table for k in row if k.startswith("iou_")))
    head = (["config", "runs", "val mIoU", "± std", "min-max"] + [f"IoU {k[4:]}" for k in ious]
            + ["alarms", "epochs", "wall s"])
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for row in table:
        cells = [row["config"], f"{row['finished']}/{row['runs']}", _fmt(row["val_mean_iou"]),
                 _fmt(row["val_mean_iou_std"]),
                 f"{_fmt(row['val_mean_iou_min'])}-{_fmt(row['val_mean_iou_max'])}"
                 if row["finished"] else "-"]
        cells += [_fmt(row.get(k)) for k in ious]
        cells += [row["alarms"], _fmt(row["epochs"], 1), _fmt(row["wall_time_s"], 0)]
        lines.append("| " + " | ".join(cells) + " |")
    keys = [k for k in differing_keys(runs) if k not in SEED_KEYS]
    common = common_values(runs, keys)
    if common:
        lines += ["", f"A config names only the settings it changes; the others ({COMMON}): "
                  + ", ".join(f"{k}={v}" for k, v in common.items())]
    failed = [r for r in runs if r.status != "ok"]
    if failed:
        lines += ["", f"{len(failed)} run(s) without a result:"]
        lines += [f"- {r.name}: {r.status}: {r.why}" for r in failed]
    text = verdict(groups)
    best = max((r for r in runs if r.status == "ok"), key=lambda r: r.miou, default=None)
    if best is not None:
        # a blank line, then indented: a code block in Markdown (TensorBoard's TEXT tab), where
        # "--out" stays two hyphens and can be copied
        text += (f"\nBest single run: {best.name} (val mIoU {best.miou:.4f}); predict with it:\n\n"
                 f"    python scripts/predict.py {best.path} IMAGES... --out DIR")
    return "\n".join(lines + [f"\n{text.strip()}"])


def write_csv(path: Path, records: list[dict]):
    keys = list(dict.fromkeys(k for r in records for k in r))
    with open(path, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=keys)
        writer.writeheader()
        writer.writerows(records)


def run_records(runs: list[Run], keys: list[str]) -> list[dict]:
    """One dict per run: the differing settings, the seed, status and figures."""
    out = []
    for r in runs:
        flat = settings(r.config) if r.config else {}
        rec = {"run": r.name, "status": r.status, **{k: flat.get(k) for k in keys},
               "seed": flat.get("seed"), "val_mean_iou": r.miou if r.metrics else None}
        if r.metrics:
            for name, iou in zip(r.metrics.get("class_names", []),
                                 r.metrics.get("val_iou_per_class", []), strict=False):
                rec[f"iou_{name}"] = iou
            rec.update(alarms="; ".join(_alarms(r)) or "none",
                       epochs=r.metrics.get("epochs_completed"),
                       wall_time_s=r.metrics.get("wall_time_s"))
        else:
            rec["error"] = r.why
        out.append(rec)
    return out


def sweep_summary(runs: list[Run], root: Path) -> str:
    """The end-of-sweep summary: each job's result, and every failed job with why."""
    ok = [r for r in runs if r.status == "ok"]
    bad = [r for r in runs if r.status != "ok"]
    lines = [f"Sweep {root}: {len(runs)} job(s), {len(ok)} finished, {len(bad)} failed"]
    lines += [f"  ok      {r.miou:.4f}  {r.name}"
              + (f"  ({r.metrics['rss_mb_at_end']:.0f} MB)" if r.metrics.get("rss_mb_at_end")
                 else "")
              # what a single run's exit code 4 says: finished, but into a constant output
              + ("  COLLAPSED (constant output)" if (r.metrics.get("diagnostics") or {})
                 .get("constant_output") else "") for r in ok]
    for r in bad:
        lines.append(f"  FAILED          {r.name}")
        if r.failure and r.failure.get("overrides"):
            lines.append(f"          overrides: {' '.join(r.failure['overrides'])}")
        lines.append(f"          {r.why}")
    lines += [f"Compare: python scripts/compare.py {root}",
              f"TensorBoard: tensorboard --logdir {root}"]
    return "\n".join(lines)


def summary_json(runs: list[Run]) -> str:
    return json.dumps([{"run": r.name, "status": r.status,
                        "val_mean_iou": r.miou if r.metrics else None,
                        "error": None if r.status == "ok" else r.why} for r in runs], indent=2)


def prediction_picture(groups: list[Group], open_source, num_images: int = 4
                       ) -> tuple[np.ndarray, list[str]]:
    """The same validation images predicted by each group's best run, side by side; one
    block per class set, each with its own images and legend, stacked.

    Runs trained on different classes (a 2-class and a 4-class run) never share a legend:
    their masks mean different things, so each class set gets its own block, its images from
    the data config of its first group's best run. open_source(data section) -> the data
    source (seg.train.open_data's first value). Returns the picture and notes on groups left
    out (no checkpoint, other input channels).
    """
    from seg import viz

    best = [(g, g.best) for g in groups if g.best is not None and g.best.config]
    if not best:
        raise ValueError("no finished run with a readable config.json to show")
    sets: dict[tuple, list] = {}
    for group, run in best:
        sets.setdefault(_class_set(run), []).append((group, run))
    notes: list[str] = []
    blocks = [_prediction_block(members, open_source, num_images, notes)
              for members in sets.values()]
    blocks = [b for b in blocks if b[4]] or blocks  # class sets with a prediction, if any
    cell, columns = 128, max(2 + len(b[4]) for b in blocks)
    width = columns * (cell + 4) + 4  # viz.comparison's pad: one width, so one text size
    several = len(blocks) > 1
    pictures = [viz.comparison(
        samples_x, samples_y, predictions, class_names=names, ignore_index=ignore, cell=cell,
        width=width,
        title=(f"{len(names)} classes: " if several else "")
        + "best run per config, same validation images (val mIoU)")
        for names, ignore, samples_x, samples_y, predictions in blocks]
    gap = np.full((12, width, 3), 160, np.uint8)  # a grey rule between class sets
    stacked = [p for picture in pictures for p in (gap, picture)][1:]
    return np.concatenate(stacked, axis=0), notes


def _class_set(run: Run) -> tuple:
    """What a run's class indices mean: its class names (metrics.json), else its data config's
    dataset and number of classes."""
    names = (run.metrics or {}).get("class_names")
    if names:
        return tuple(names)
    data = (run.config or {}).get("data") or {}
    return (data.get("name"), data.get("num_classes"))


def _prediction_block(members: list, open_source, num_images: int, notes: list[str]):
    """(class names, ignore index, images, masks, {label: predicted masks}) of the runs of one
    class set; notes get the runs left out."""
    from seg import inference

    data = members[0][1].config["data"]
    source = open_source(data)
    samples = [(x.astype(np.float32) / 255.0, y)
               for x, y in source.val.take(num_images).as_numpy_iterator()]
    predictions = {}
    for group, run in members:
        try:
            trained = inference.load(run.path)
        except inference.LoadError as e:
            notes.append(f"{group.label}: {e}")
            continue
        if trained.channels != samples[0][0].shape[-1]:
            notes.append(f"{group.label}: takes {trained.channels}-channel images, left out")
            continue
        label = f"{group.label} ({run.miou:.3f})"
        predictions[label] = [
            inference.predict_probs(trained.model, x[None], from_logits=trained.from_logits)[0]
            .argmax(-1) for x, _ in samples]
    return (list(source.class_names), data["ignore_index"], [x for x, _ in samples],
            [y for _, y in samples], predictions)
