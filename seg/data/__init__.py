"""Data sources (built-in shapes, image/mask folders) and their tf.data pipelines."""

from __future__ import annotations

import contextlib
from dataclasses import dataclass, field
from typing import Callable

import numpy as np
import tensorflow as tf

from seg.data import audit, folder, pipeline, shapes
from seg.data.folder import DataError


@dataclass
class Source:
    """A dataset split into train and validation, as unbatched (uint8 image, int32 mask)."""

    train: tf.data.Dataset
    val: tf.data.Dataset
    num_train: int
    num_val: int
    class_names: list[str]
    channels: int
    sample_masks: Callable[[int], list[tuple[str, np.ndarray]]]  # k -> [(file name, mask)]
    description: str
    audit: Callable | None = None  # (k=None, progress=False) -> AuditReport, for files on disk
    skipped: dict[str, str] = field(default_factory=dict)  # file -> why it was left out
    names: dict[str, list[str]] = field(default_factory=dict)  # split -> file of every element
    band_stats: tuple | None = None  # ([mean], [std]) per band: images are raw values (float32)

    def split(self, name: str) -> tuple[tf.data.Dataset, list[str]]:
        """("train" or "val") -> (unbatched uint8 pairs, their file names).

        With data.on_bad_sample=skip, files left out are in self.skipped once the dataset has
        been read through; the other elements keep the order of the names.
        """
        if name not in ("train", "val"):
            raise ValueError(f"split={name!r}: use 'train' or 'val'")
        return (self.train if name == "train" else self.val), list(self.names.get(name, []))


def shapes_source(*, num_classes: int, image_size: int, channels: int = 3, num_train: int = 1024,
                  num_val: int = 128, seed: int = 0) -> Source:
    """The built-in procedural scenes, generated in memory (about 1 ms per 64x64 scene)."""
    train = shapes.make_shapes(num_train, image_size, num_classes=num_classes, channels=channels,
                               seed=seed, split=0)
    val = shapes.make_shapes(num_val, image_size, num_classes=num_classes, channels=channels,
                             seed=seed, split=1)

    def sample_masks(k):
        step = max(num_train // max(k, 1), 1)
        return [(f"shapes:train[{i}]", train[1][i].astype(np.int32))
                for i in range(0, num_train, step)][:k]

    return Source(pipeline.from_arrays(*train), pipeline.from_arrays(*val), num_train, num_val,
                  shapes.class_names(num_classes), channels, sample_masks,
                  f"built-in shapes, {num_train} train / {num_val} val, {image_size}x{image_size}",
                  names={"train": [f"shapes:train[{i}]" for i in range(num_train)],
                         "val": [f"shapes:val[{i}]" for i in range(num_val)]})


@dataclass
class _Folder:
    """A folder dataset listed and split, with what reading and auditing its files takes."""

    root: str
    listing: folder.Listing
    names: list[str]
    read: dict  # read_pair's keywords: channels, table, colour_table, max_pixels
    num_classes: int
    ignore_index: int
    on_bad_sample: str
    band_stats: object = None  # "auto", or ([mean], [std]) given

    def audit(self, k: int | None = None, progress: bool = False) -> audit.AuditReport:
        """Every file (k=None) or an even sample of k pairs per split."""
        splits = {"train": self.listing.train, "val": self.listing.val}
        if k is not None:
            splits = {s: ps[:: max(len(ps) // max(k, 1), 1)][:k] for s, ps in splits.items()}
        return audit.audit_pairs(splits, listing_problems=self.listing.problems,
                                 ignored=self.listing.ignored, progress=progress,
                                 num_classes=self.num_classes, ignore_index=self.ignore_index,
                                 class_names=self.names, **self.read)


def _open_folder(*, root: str, num_classes: int, channels: int = 3, images_dir: str = "images",
                 masks_dir: str = "masks", train_list: str | None = None,
                 val_list: str | None = None, split: str = "random", val_fraction: float = 0.2,
                 split_seed: int = 0, label_map: dict | None = None, colour_table=None,
                 class_names: list[str] | None = None, on_bad_sample: str = "error",
                 max_pixels: int = folder.MAX_PIXELS, ignore_index: int = 255,
                 band_stats="auto") -> _Folder:
    """The data section's keys of a folder dataset (see data/README.md), listed and split."""
    if on_bad_sample not in ("error", "skip"):
        raise DataError(f"data.on_bad_sample={on_bad_sample!r}: use 'error' or 'skip'")
    listing = folder.list_splits(root, images_dir=images_dir, masks_dir=masks_dir,
                                 train_list=train_list, val_list=val_list, split=split,
                                 val_fraction=val_fraction, split_seed=split_seed)
    names = list(class_names) if class_names else [f"class_{i}" for i in range(num_classes)]
    # raw values, standardised by the model, for given statistics or images of over 8 bits
    raw = band_stats not in (None, "auto") or bool(
        listing.train and folder.high_bit_depth(listing.train[0].image, max_pixels))
    read = dict(channels=channels, table=folder.label_lookup(label_map),
                colour_table=colour_table, max_pixels=max_pixels, raw=raw)
    return _Folder(root, listing, names, read, num_classes, ignore_index, on_bad_sample,
                   band_stats)


def folder_source(**settings) -> Source:
    """Images and masks paired by stem (or by split lists) under root; see data/README.md.

    Takes the folder keys of the data section (_open_folder's keywords). on_bad_sample="error"
    stops at the first unreadable or inconsistent pair with the file named; "skip" leaves such
    pairs out, prints each one, and lists them in source.skipped.
    """
    spec = _open_folder(**settings)
    listing, read, root = spec.listing, spec.read, spec.root
    skipped: dict[str, str] = {}
    if listing.problems:
        if spec.on_bad_sample == "error":
            raise DataError(f"{len(listing.problems)} problem(s) pairing images and masks:\n  "
                            + "\n  ".join(listing.problems)
                            + "\n(python scripts/check_data.py lists every problem of a dataset)")
        for problem in listing.problems:
            skipped[problem.split(":")[0]] = problem
            print(f"[seg data] skipped: {problem}", flush=True)
    for name, pairs in (("train", listing.train), ("validation", listing.val)):
        if not pairs:
            raise DataError(f"{root}: the {name} split is empty")

    def sample_masks(k):
        step = max(len(listing.train) // max(k, 1), 1)
        out = []
        for p in listing.train[::step][:k]:
            with contextlib.suppress(DataError):  # reported by the file audit
                out.append((p.mask, folder.read_mask(p.mask, read["table"], read["colour_table"],
                                                     read["max_pixels"])))
        return out

    labels = dict(num_classes=spec.num_classes, ignore_index=spec.ignore_index)
    source = Source(
        pipeline.from_pairs(listing.train, on_bad_sample=spec.on_bad_sample, skipped=skipped,
                            **labels, **read),
        pipeline.from_pairs(listing.val, on_bad_sample=spec.on_bad_sample, skipped=skipped,
                            **labels, **read),
        len(listing.train), len(listing.val), spec.names, read["channels"], sample_masks,
        f"folder {root}, {len(listing.train)} train / {len(listing.val)} val")
    source.audit, source.skipped = spec.audit, skipped
    if read["raw"]:
        given = spec.band_stats not in (None, "auto")
        source.band_stats = (tuple(map(list, spec.band_stats)) if given else
                             audit.band_statistics(listing.train, channels=read["channels"],
                                                   max_pixels=read["max_pixels"]))
    source.names = {"train": [p.image for p in listing.train],
                    "val": [p.image for p in listing.val]}
    return source


def folder_audit(*, progress: bool = False, **settings) -> audit.AuditReport:
    """The full audit of a folder dataset (folder_source's keywords): every file."""
    return _open_folder(**settings).audit(None, progress)


SOURCES = {"shapes": shapes_source, "folder": folder_source}
AUDITS = {"folder": folder_audit}

__all__ = ["AUDITS", "DataError", "SOURCES", "Source", "audit", "folder", "pipeline", "shapes"]
