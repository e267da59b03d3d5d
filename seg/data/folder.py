"""Image/mask folders on disk: pairing, splitting and decoding with the label mapping.

Masks are decoded with Pillow, never with tf.io.decode_png: a palette PNG decoded by TensorFlow
gives its colours, while Pillow gives the palette indices, which are the class labels.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps

IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".tif", ".tiff", ".bmp"}


class DataError(ValueError):
    """A problem with the data on disk; the message names the file."""


@dataclass(frozen=True)
class Pair:
    stem: str
    image: str
    mask: str


def _files_by_stem(folder: Path) -> dict[str, Path]:
    if not folder.is_dir():
        raise DataError(f"{folder}: folder not found")
    return {p.stem: p for p in sorted(folder.iterdir()) if p.suffix.lower() in IMAGE_SUFFIXES}


def list_pairs(root: str | Path, images_dir: str = "images", masks_dir: str = "masks") -> list[Pair]:
    """Pair root/images/* with root/masks/* by file stem; refuse unpaired files by name."""
    root = Path(root)
    if not root.is_dir():
        raise DataError(f"{root}: dataset root not found (set data.root=DIR)")
    images = _files_by_stem(root / images_dir)
    masks = _files_by_stem(root / masks_dir)
    problems = [f"{images[s]}: no mask with this stem in {root / masks_dir}"
                for s in sorted(images.keys() - masks.keys())]
    problems += [f"{masks[s]}: no image with this stem in {root / images_dir}"
                 for s in sorted(masks.keys() - images.keys())]
    if problems:
        raise DataError("unpaired files:\n  " + "\n  ".join(problems))
    if not images:
        raise DataError(f"{root / images_dir}: no images found")
    stems = sorted(images, key=_natural_key)
    return [Pair(s, str(images[s]), str(masks[s])) for s in stems]


def _natural_key(stem: str):
    """Sort '2' before '10' so contiguous splits follow slice order."""
    return (len(stem), stem) if stem.isdigit() else (1 << 30, stem)


def _read_list(root: Path, list_file: str, by_stem: dict[str, Pair]) -> list[Pair]:
    path = (root / list_file).resolve()
    stems = [line.strip() for line in path.read_text().splitlines() if line.strip()]
    missing = [s for s in stems if s not in by_stem]
    if missing:
        raise DataError(f"{path}: {len(missing)} names have no image/mask pair, e.g. {missing[:5]}")
    return [by_stem[s] for s in stems]


def split_pairs(pairs: list[Pair], *, root: str | Path, train_list: str | None = None,
                val_list: str | None = None, split: str = "random", val_fraction: float = 0.2,
                split_seed: int = 0) -> tuple[list[Pair], list[Pair]]:
    """Train/validation split from list files, or contiguous, or seeded random."""
    by_stem = {p.stem: p for p in pairs}
    if train_list or val_list:
        if not (train_list and val_list):
            raise DataError("give both data.train_list and data.val_list, or neither")
        return _read_list(Path(root), train_list, by_stem), _read_list(Path(root), val_list, by_stem)
    n_val = max(1, round(len(pairs) * val_fraction))
    if len(pairs) < 2:
        raise DataError(f"{root}: {len(pairs)} pair(s) cannot be split into train and validation")
    if split == "contiguous":
        return pairs[:-n_val], pairs[-n_val:]
    if split != "random":
        raise DataError(f"data.split={split!r}: use 'random' or 'contiguous'")
    order = np.random.default_rng(split_seed).permutation(len(pairs))
    val = set(order[:n_val].tolist())
    return ([p for i, p in enumerate(pairs) if i not in val],
            [p for i, p in enumerate(pairs) if i in val])


def read_image(path: str, channels: int) -> np.ndarray:
    """Decode an image to uint8 [H, W, channels], honouring EXIF orientation."""
    try:
        with Image.open(path) as im:
            im = ImageOps.exif_transpose(im)
            if im.mode in ("I;16", "I;16B", "I", "F"):  # 16-bit or float grayscale: rescale
                a = np.asarray(im, np.float64)
                lo, hi = float(a.min()), float(a.max())
                im = Image.fromarray(np.uint8(255 * (a - lo) / max(hi - lo, 1e-9)))
            im = im.convert("L" if channels == 1 else "RGB")
            array = np.asarray(im, np.uint8)
    except (OSError, SyntaxError, ValueError) as e:  # Pillow's errors for bad files
        raise DataError(f"{path}: cannot decode image ({e})") from e
    return array[..., None] if channels == 1 else array


def label_lookup(label_map: dict | None) -> np.ndarray:
    """A 65536-entry table mapping raw mask values to class indices (identity where unmapped)."""
    table = np.arange(65536, dtype=np.int32)
    for raw, cls in (label_map or {}).items():
        table[int(raw)] = int(cls)
    return table


def read_mask(path: str, table: np.ndarray) -> np.ndarray:
    """Decode a single-channel class-index mask (8/16-bit grayscale or palette) to int32 [H, W]."""
    try:
        with Image.open(path) as im:
            if path.lower().endswith((".jpg", ".jpeg")):
                raise DataError(f"{path}: JPEG masks are refused (lossy compression invents labels)")
            if im.mode not in ("L", "P", "I;16", "I;16B", "I", "1"):
                raise DataError(
                    f"{path}: mask mode {im.mode} is not a single-channel class-index image "
                    "(save masks as grayscale or palette PNGs whose values are class indices)")
            raw = np.asarray(im).astype(np.int64)  # "P" gives palette indices, not colours
    except (OSError, SyntaxError) as e:
        raise DataError(f"{path}: cannot decode mask ({e})") from e
    if raw.min() < 0 or raw.max() >= len(table):
        raise DataError(f"{path}: mask values outside 0..{len(table) - 1}")
    return table[raw]


def read_pair(pair: Pair, *, channels: int, table: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Image and mapped mask of one pair; refuses size mismatches by name."""
    image, mask = read_image(pair.image, channels), read_mask(pair.mask, table)
    if image.shape[:2] != mask.shape:
        raise DataError(f"{pair.image} is {image.shape[1]}x{image.shape[0]} but {pair.mask} is "
                        f"{mask.shape[1]}x{mask.shape[0]}: image and mask must have the same size")
    return image, mask
