"""Data sources (built-in shapes, image/mask folders) and their tf.data pipelines."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import numpy as np
import tensorflow as tf

from seg.data import folder, pipeline, shapes
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
                  f"built-in shapes, {num_train} train / {num_val} val, {image_size}x{image_size}")


def folder_source(*, root: str, num_classes: int, channels: int = 3, images_dir: str = "images",
                  masks_dir: str = "masks", train_list: str | None = None,
                  val_list: str | None = None, split: str = "random", val_fraction: float = 0.2,
                  split_seed: int = 0, label_map: dict | None = None,
                  class_names: list[str] | None = None) -> Source:
    """Images and class-index masks paired by stem under root (see data/README.md)."""
    pairs = folder.list_pairs(root, images_dir, masks_dir)
    train, val = folder.split_pairs(pairs, root=root, train_list=train_list, val_list=val_list,
                                    split=split, val_fraction=val_fraction, split_seed=split_seed)
    table = folder.label_lookup(label_map)

    def sample_masks(k):
        step = max(len(train) // max(k, 1), 1)
        return [(p.mask, folder.read_mask(p.mask, table)) for p in train[::step][:k]]

    names = list(class_names) if class_names else [f"class_{i}" for i in range(num_classes)]
    return Source(pipeline.from_pairs(train, channels=channels, table=table),
                  pipeline.from_pairs(val, channels=channels, table=table), len(train), len(val),
                  names, channels, sample_masks,
                  f"folder {root}, {len(train)} train / {len(val)} val")


SOURCES = {"shapes": shapes_source, "folder": folder_source}

__all__ = ["DataError", "SOURCES", "Source", "folder", "pipeline", "shapes"]
