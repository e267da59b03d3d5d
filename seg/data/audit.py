"""A full data audit: every problem in a dataset on disk, in one report, each naming its files."""

from __future__ import annotations

import contextlib
import hashlib
import os
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path

import keras
import numpy as np

from seg.data.folder import (DataError, Pair, check_file, exif_orientation, read_image,
                              read_mask)


@dataclass
class Problem:
    level: str  # error | warning
    kind: str
    detail: str  # names the file(s)


@dataclass
class AuditReport:
    problems: list[Problem] = field(default_factory=list)
    counts: dict[str, int] = field(default_factory=dict)  # pairs scanned per split
    histograms: dict[str, list[int]] = field(default_factory=dict)  # pixels per class per split
    class_names: list[str] = field(default_factory=list)
    band_stats: tuple | None = None  # ([mean], [std]) per band of raw (16-bit, float) images

    @property
    def errors(self) -> list[Problem]:
        return [p for p in self.problems if p.level == "error"]

    def text(self) -> str:
        lines = ["== seg data audit =="]
        lines += [f"{split}: {n} pairs scanned" for split, n in self.counts.items()]
        for level in ("error", "warning"):
            for p in self.problems:
                if p.level == level:
                    lines.append(f"[{level.upper():>7}] {p.kind}: {p.detail}")
        for split, hist in self.histograms.items():
            total = max(sum(hist), 1)
            lines.append(f"-- class histogram, {split} --")
            lines += [f"  {k} {name:<16} {100 * c / total:6.2f}%"
                      for k, (name, c) in enumerate(zip(self.class_names, hist, strict=False))]
        if self.band_stats:
            lines.append("-- band statistics, train (the model standardises with them) --")
            lines += [f"  band {b}: mean {m:.6g}, std {s:.6g}"
                      for b, (m, s) in enumerate(zip(*self.band_stats, strict=False))]
        if any(p.detail.find("rare classes") >= 0 for p in self.problems):
            lines.append("hint: python scripts/plan.py <the same data overrides> plans a "
                         "recipe for rare classes (class weights, rare-class crops) from "
                         "this data")
        n_err = len(self.errors)
        lines.append(f"\n{n_err} error(s), {len(self.problems) - n_err} warning(s)")
        return "\n".join(lines)

    def as_dict(self) -> dict:
        return {"problems": [asdict(p) for p in self.problems], "counts": self.counts,
                "histograms": self.histograms, "class_names": self.class_names,
                "band_stats": self.band_stats}


def band_statistics(pairs: list[Pair], *, channels: int, max_pixels: int,
                    k: int = 64) -> tuple[list[float], list[float]]:
    """Per-band mean and standard deviation of raw images over an even sample of k pairs
    (every pair when fewer), in float64; files that cannot be read are left out (the audit
    names them). What the model of 16-bit or float bands standardises its input with."""
    sample = pairs[:: max(len(pairs) // max(k, 1), 1)][:k]
    total, total_sq, count, first = np.zeros(channels), np.zeros(channels), 0, None
    for pair in sample:
        try:
            image = read_image(pair.image, channels, max_pixels, raw=True).astype(np.float64)
        except DataError as e:
            first = first or e
            continue
        flat = image.reshape(-1, channels)
        total += flat.sum(0)
        total_sq += (flat ** 2).sum(0)
        count += len(flat)
    if not count:
        raise DataError(f"no training image of {len(sample)} sampled could be read for the "
                        f"band statistics; the first: {first} (python scripts/check_data.py "
                        "names each file)")
    mean = total / count
    std = np.sqrt(np.maximum(total_sq / count - mean ** 2, 0.0))
    return [float(m) for m in mean], [float(s) for s in std]


def _digest(path: str) -> str | None:
    """The file's SHA-1; None for what is not a readable regular file (named by check_pair)."""
    h = hashlib.sha1()
    try:
        check_file(path)
        with open(path, "rb") as f:
            for chunk in iter(lambda: f.read(1 << 20), b""):
                h.update(chunk)
    except (DataError, OSError):  # gone or changed since check_pair read it
        return None
    return h.hexdigest()


def check_pair(pair: Pair, *, num_classes: int, ignore_index: int, channels: int,
               table: np.ndarray, colour_table=None, max_pixels: int, raw: bool = False
               ) -> tuple[list[Problem], np.ndarray | None]:
    """Every problem of one image/mask pair (its band count included), and its class
    histogram (None if unreadable)."""
    problems = []
    try:
        image = read_image(pair.image, channels, max_pixels, raw)
    except DataError as e:
        problems.append(Problem("error", "image", str(e)))
        image = None
    try:
        mask = read_mask(pair.mask, table, colour_table, max_pixels)
    except DataError as e:
        problems.append(Problem("error", "mask", str(e)))
        return problems, None
    if image is not None and image.shape[:2] != mask.shape:
        problems.append(Problem("error", "size mismatch",
                                f"{pair.image} is {image.shape[1]}x{image.shape[0]} but "
                                f"{pair.mask} is {mask.shape[1]}x{mask.shape[0]}"))
    o_img, o_mask = exif_orientation(pair.image), exif_orientation(pair.mask)
    if o_img != o_mask:
        problems.append(Problem(
            "error", "EXIF orientation",
            f"{pair.image} has EXIF orientation {o_img} but {pair.mask} has {o_mask}: each is "
            "turned upright by its own tag, so they would not line up (strip or match the tags)"))
    values = np.unique(mask)
    bad = [int(v) for v in values if v != ignore_index and not 0 <= v < num_classes]
    if bad:
        problems.append(Problem("error", "labels", f"{pair.mask}: values {bad[:10]} outside "
                                f"[0, {num_classes}) and not ignore_index={ignore_index} "
                                "(map them with data.label_map)"))
    if mask.size and (mask == ignore_index).all():
        problems.append(Problem("warning", "all void", f"{pair.mask}: every pixel is "
                                f"ignore_index={ignore_index}, so the pair teaches nothing "
                                "(is its label map right?)"))
    valid = mask[(mask >= 0) & (mask < num_classes)]
    return problems, np.bincount(valid.ravel(), minlength=num_classes)[:num_classes]


def audit_pairs(splits: dict[str, list[Pair]], *, num_classes: int, ignore_index: int,
                channels: int, table: np.ndarray, colour_table=None, max_pixels: int,
                class_names: list[str], listing_problems: list[str] = (),
                ignored: list[str] = (), progress: bool = False,
                raw: bool = False) -> AuditReport:
    """Scan every pair of every split and report all problems at once.

    Args:
        splits: {"train": pairs, "val": pairs}. listing_problems: pairing problems found while
            listing the files (unpaired files, duplicate stems, missing list entries).
        progress: show a progress bar (for the full scan of scripts/check_data.py).
        Other arguments as for read_pair and the label checks.
    """
    report = AuditReport(class_names=list(class_names))
    report.problems += [Problem("error", "pairing", p) for p in listing_problems]
    if ignored:
        kinds = sorted({Path(f).suffix.lower() or "(no extension)" for f in ignored})
        report.problems.append(Problem(
            "warning", "unsupported files", f"{len(ignored)} file(s) left out, not images seg "
            f"reads ({', '.join(kinds)}): {', '.join(ignored[:5])}"
            + (" ..." if len(ignored) > 5 else "")))
    for split, pairs in splits.items():
        if not pairs:
            report.problems.append(Problem("error", "empty split", f"the {split} split has no "
                                           "image/mask pairs"))
    jobs = [(split, p) for split, pairs in splits.items() for p in pairs]
    bar = keras.utils.Progbar(len(jobs), unit_name="pair") if progress and jobs else None
    hists = {split: np.zeros(num_classes, np.int64) for split in splits}
    digests: dict[str, list[tuple[str, str]]] = {}

    def work(job):
        split, pair = job
        found = check_pair(pair, num_classes=num_classes, ignore_index=ignore_index,
                           channels=channels, table=table, colour_table=colour_table,
                           max_pixels=max_pixels, raw=raw)
        digest = _digest(pair.image)
        return split, pair, found, digest

    with ThreadPoolExecutor(max_workers=min(8, (os.cpu_count() or 2) * 2)) as pool:
        for i, (split, pair, (problems, hist), digest) in enumerate(pool.map(work, jobs)):
            report.problems += problems
            if hist is not None:
                hists[split] += hist
            if digest:
                digests.setdefault(digest, []).append((split, pair.image))
            if bar:
                bar.update(i + 1)
    report.counts = {split: len(pairs) for split, pairs in splits.items()}
    report.histograms = {split: h.tolist() for split, h in hists.items()}

    if raw and splits.get("train"):
        # no readable training image: the problems above name every file
        with contextlib.suppress(DataError):
            report.band_stats = band_statistics(splits["train"], channels=channels,
                                                max_pixels=max_pixels)
    report.problems += _overlaps(splits, digests)
    report.problems += _balance(hists, report, num_classes=num_classes,
                                ignore_index=ignore_index, class_names=class_names)
    return report


def _overlaps(splits: dict, digests: dict) -> list[Problem]:
    """Stems or identical image content in both splits (errors), duplicates within one."""
    found = []
    stems = {split: {p.stem for p in pairs} for split, pairs in splits.items()}
    if "train" in stems and "val" in stems:
        shared = sorted(stems["train"] & stems["val"])
        if shared:
            found.append(Problem("error", "train/val overlap",
                                 f"{len(shared)} stems are in both splits: {shared[:10]}"))
    for copies in digests.values():
        if len(copies) > 1:
            in_splits = {s for s, _ in copies}
            files = [f for _, f in copies]
            if len(in_splits) > 1:
                found.append(Problem("error", "train/val overlap",
                                     f"identical image content in both splits: {files[:5]}"))
            else:
                found.append(Problem("warning", "duplicate",
                                     f"identical image content: {files[:5]}"))
    return found


def _balance(hists: dict, report: AuditReport, *, num_classes: int, ignore_index: int,
             class_names: list[str]) -> list[Problem]:
    """Per split: masks that are all void (an error), classes absent or under 1%."""
    found = []
    for split, hist in hists.items():
        total = hist.sum()
        if not total:
            if report.counts.get(split) and not report.errors:
                found.append(Problem(
                    "error", "all void", f"{split}: every pixel of its masks is "
                    f"ignore_index={ignore_index} (after data.label_map), so nothing can be "
                    "learnt or scored; check data.label_map (0/255 masks need {0: 0, 255: 1}) "
                    "and data.ignore_index"))
            continue
        share = hist / total
        absent = [class_names[k] for k in range(num_classes) if hist[k] == 0]
        if absent:
            found.append(Problem("warning", "class balance",
                                 f"{split}: classes {absent} never appear"))
        rare = [f"{class_names[k]} {100 * share[k]:.2f}%" for k in range(num_classes)
                if 0 < share[k] < 0.01]
        if rare:
            found.append(Problem(
                "warning", "class balance", f"{split}: rare classes {rare} (under 1% of "
                "labelled pixels)"))
    return found
