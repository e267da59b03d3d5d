"""Image/mask folders on disk: pairing, splitting and decoding with the label mapping.

Masks are decoded with Pillow, never with tf.io.decode_png: a palette PNG decoded by TensorFlow
gives its colours, while Pillow gives the palette indices, which are the class labels.
Every error names the file it is about.
"""

from __future__ import annotations

import errno
import os
import stat
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps

IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".tif", ".tiff", ".bmp", ".npy"}
TIFF_SUFFIXES = (".tif", ".tiff")
INDEX_MODES = ("L", "P", "I;16", "I;16B", "I;16L", "I", "1")
MAX_PIXELS = 64_000_000  # larger images are refused before decoding (decompression bombs)


class DataError(ValueError):
    """A problem with the data on disk; the message names the file."""


@dataclass(frozen=True)
class Pair:
    stem: str
    image: str
    mask: str


@dataclass
class Listing:
    """The train and validation pairs, and every problem found while pairing (file named)."""

    train: list[Pair] = field(default_factory=list)
    val: list[Pair] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)
    ignored: list[str] = field(default_factory=list)  # files of unsupported types, named


def _natural_key(stem: str):
    """Sort '2' before '10' so contiguous splits follow slice order."""
    return (0, int(stem), "") if stem.isdigit() else (1, 0, stem)


def files_by_stem(folder: Path, ignored: list | None = None
                  ) -> tuple[dict[str, Path], list[str]]:
    """Image files in a folder by stem (hidden files skipped), and duplicate-stem problems.

    Other files (unsupported extensions, sub-folders) go into `ignored`, named, so that the
    audit can say they were left out.
    """
    if not folder.is_dir():
        raise DataError(f"{folder}: " + ("is a file, not a folder" if folder.exists() else
                                         "folder not found"))
    found: dict[str, Path] = {}
    problems = []
    try:
        entries = sorted(folder.iterdir())
    except OSError as e:  # not permitted, or gone since the check
        raise DataError(f"{folder}: cannot list the folder: {_why(str(folder), e)}") from None
    for p in entries:
        if p.name.startswith("."):
            continue  # "._name" files are macOS metadata in some tarballs
        if p.suffix.lower() not in IMAGE_SUFFIXES:
            if ignored is not None:
                ignored.append(str(p))
            continue
        if p.stem in found:
            problems.append(f"{found[p.stem]} and {p}: duplicate stem {p.stem!r} (which is meant?)")
        found[p.stem] = p
    return found, problems


def read_list(root: Path, list_file: str) -> list[str]:
    """Stems from a split list: first whitespace token per line; blank and '#' lines skipped.

    Refuses names that would leave the dataset root (absolute paths, '..').
    """
    path = (root / list_file)
    if not (path.exists() or path.is_symlink()):
        raise DataError(f"{path}: split list not found")
    check_file(str(path), "split list")  # a folder, a fifo, a dangling link: named
    try:
        text = path.read_text()
    except (OSError, UnicodeDecodeError) as e:
        why = _why(str(path), e) if isinstance(e, OSError) else "not text (UTF-8)"
        raise DataError(f"{path}: cannot read the split list: {why}") from None
    stems = []
    for n, line in enumerate(text.splitlines(), 1):
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        stem = line.split()[0]
        if Path(stem).is_absolute() or ".." in Path(stem).parts:
            raise DataError(f"{path}:{n}: {stem!r} points outside the dataset root")
        stems.append(stem)
    return stems


def list_splits(root: str | Path, *, images_dir: str = "images", masks_dir: str = "masks",
                train_list: str | None = None, val_list: str | None = None,
                split: str = "random", val_fraction: float = 0.2,
                split_seed: int = 0) -> Listing:
    """Pair images with masks and split them, collecting every problem.

    With split lists (VOC, Oxford Pets), the lists define the pairs and unlisted files are
    ignored. Without them, images and masks pair by stem, every unpaired file is a problem, and
    the split is seeded-random or contiguous (the last val_fraction in natural order).
    """
    root = Path(root)
    if not root.is_dir():
        raise DataError(f"{root}: dataset root not found (set data.root=DIR)")
    ignored: list[str] = []
    images, img_dups = files_by_stem(root / images_dir, ignored)
    masks, mask_dups = files_by_stem(root / masks_dir, ignored)
    out = Listing(problems=img_dups + mask_dups, ignored=ignored)
    if bool(train_list) != bool(val_list):
        raise DataError("give both data.train_list and data.val_list, or neither")
    if train_list:
        for list_file, target in ((train_list, out.train), (val_list, out.val)):
            for stem in read_list(root, list_file):
                if stem not in images:
                    out.problems.append(f"{root / list_file}: {stem!r} has no image in "
                                        f"{root / images_dir}")
                elif stem not in masks:
                    out.problems.append(f"{root / list_file}: {stem!r} has no mask in "
                                        f"{root / masks_dir}")
                else:
                    target.append(Pair(stem, str(images[stem]), str(masks[stem])))
        return out
    out.problems += [f"{images[s]}: no mask with this stem in {root / masks_dir}"
                     for s in sorted(images.keys() - masks.keys())]
    out.problems += [f"{masks[s]}: no image with this stem in {root / images_dir}"
                     for s in sorted(masks.keys() - images.keys())]
    pairs = [Pair(s, str(images[s]), str(masks[s]))
             for s in sorted(images.keys() & masks.keys(), key=_natural_key)]
    if len(pairs) < 2:
        out.problems.append(f"{root}: {len(pairs)} image/mask pair(s) cannot be split into "
                            "train and validation")
        return out
    n_val = min(max(1, round(len(pairs) * val_fraction)), len(pairs) - 1)
    if split == "contiguous":
        out.train, out.val = pairs[:-n_val], pairs[-n_val:]
    elif split == "random":
        val = set(np.random.default_rng(split_seed).permutation(len(pairs))[:n_val].tolist())
        out.train = [p for i, p in enumerate(pairs) if i not in val]
        out.val = [p for i, p in enumerate(pairs) if i in val]
    else:
        raise DataError(f"data.split={split!r}: use 'random' or 'contiguous'")
    return out


# what a path is when it is not a regular file: reading a fifo would wait for a writer,
# a socket or a device cannot be decoded, a folder is no file
_NOT_FILES = ((stat.S_ISDIR, "a folder"), (stat.S_ISFIFO, "a named pipe (fifo)"),
              (stat.S_ISSOCK, "a socket"), (stat.S_ISCHR, "a character device"),
              (stat.S_ISBLK, "a block device"))


def check_file(path: str, what: str = "image") -> int:
    """The size of path, a regular file this process may read; otherwise a DataError naming
    the path and what it is (a folder, a fifo, a socket, a device, gone, not permitted,
    empty). Every reader below starts with it, so none of them waits on a fifo or names an
    error of the operating system instead of the file."""
    try:
        st = os.stat(path)
    except OSError as e:  # gone since the listing, unreadable, or a link to nothing
        raise DataError(f"{path}: cannot read {what}: {_why(path, e)}") from None
    for test, kind in _NOT_FILES:
        if test(st.st_mode):
            raise DataError(f"{path}: is {kind}, not {'an' if what[0] in 'aeiou' else 'a'} "
                            f"{what} file (move it out of the data folder, or put the file "
                            "there)")
    if not os.access(path, os.R_OK):
        raise DataError(f"{path}: cannot read {what}: permission denied (make it readable: "
                        f"chmod a+r {path})")
    if st.st_size == 0:
        raise DataError(f"{path}: zero-byte {what} file")
    return st.st_size


def _why(path: str, e: OSError) -> str:
    """An operating system's error on reading path, in words that say what happened."""
    if isinstance(e, FileNotFoundError):
        return ("a dangling symbolic link (its target is gone)" if os.path.islink(path) else
                "no such file (removed or renamed since the folder was listed?)")
    if isinstance(e, PermissionError):
        return f"permission denied (make it readable: chmod a+r {path})"
    if isinstance(e, IsADirectoryError):
        return "it is a folder, not a file"
    if e.errno == errno.ELOOP:
        return "a loop of symbolic links (a link that leads back to itself)"
    return e.strerror or str(e)


def _open(path: str, what: str, max_pixels: int):
    check_file(path, what)
    try:
        im = Image.open(path)
    except OSError as e:
        if e.errno is not None:  # the system's error (gone meanwhile, permission), not Pillow's
            raise DataError(f"{path}: cannot read {what}: {_why(path, e)}") from None
        raise DataError(f"{path}: cannot decode {what} ({e})") from e
    except (SyntaxError, ValueError) as e:  # Pillow's errors for unreadable files
        raise DataError(f"{path}: cannot decode {what} ({e})") from e
    if im.size[0] * im.size[1] > max_pixels:
        im.close()
        raise DataError(f"{path}: {im.size[0]}x{im.size[1]} {what} is larger than "
                        f"{max_pixels:,} pixels, too large to decode safely")
    try:
        im.load()  # decode now, so truncated files fail here with their name
    except (OSError, SyntaxError, ValueError) as e:
        im.close()
        raise DataError(f"{path}: cannot decode {what}, truncated or corrupt ({e})") from e
    return im


def _array(path: str, max_pixels: int, what: str = "image") -> np.ndarray:
    """A .npy stack or a TIFF (tifffile: any band count, 16-bit, float) as an array."""
    check_file(path, what)
    try:
        if path.lower().endswith(".npy"):
            a = np.load(path, mmap_mode="r", allow_pickle=False)
        else:
            import tifffile  # noqa: PLC0415 (only for TIFFs Pillow cannot give as they are)
            with tifffile.TiffFile(path) as tif:
                shape = tif.series[0].shape
                if int(np.prod(shape[:2])) > max_pixels:
                    raise DataError(f"{path}: {shape} image is larger than {max_pixels:,} "
                                    "pixels, too large to decode safely")
                a = tif.asarray()
    except DataError:
        raise
    except OSError as e:
        if e.errno is not None:  # the system's error (gone meanwhile, permission)
            raise DataError(f"{path}: cannot read {what}: {_why(path, e)}") from None
        raise DataError(f"{path}: cannot decode {what} ({type(e).__name__}: {e})") from None
    except Exception as e:  # noqa: BLE001 (numpy's and tifffile's errors for unreadable files)
        raise DataError(f"{path}: cannot decode {what} ({type(e).__name__}: {e})") from None
    if a.dtype.kind not in "uifb":
        raise DataError(f"{path}: {a.dtype} values are not an {what}")
    return a


def check_finite(path: str, a: np.ndarray) -> np.ndarray:
    """a, when every value is finite; a DataError naming the file and how many values are NaN
    or Inf otherwise (one such pixel makes the loss NaN at the first step that sees it)."""
    if a.dtype.kind == "f":
        bad = ~np.isfinite(a)
        if bad.any():
            n_nan = int(np.isnan(a).sum())
            where = np.argwhere(bad)[0].tolist()
            error = DataError(f"{path}: {n_nan} NaN and {int(bad.sum()) - n_nan} Inf value(s) "
                              f"(the first at row {where[0]}, column {where[1]}): an image needs "
                              "finite values (fill or mask them, or leave the file out)")
            error.final = True  # no other reader is tried: the values are the problem
            raise error
    return a


def _to_hwc(path: str, a: np.ndarray, channels: int) -> np.ndarray:
    """[H, W] or [H, W, C] as it is, [C, H, W] (planar stacks: C == channels, or the first
    axis the shortest) transposed; C checked."""
    if a.ndim == 2:
        a = a[..., None]
    elif a.ndim == 3 and (a.shape[0] == channels and a.shape[-1] != channels
                          or a.shape[0] < min(a.shape[1], a.shape[2]) and a.shape[-1] != channels):
        a = np.moveaxis(a, 0, -1)  # planar: bands first (tifffile's order for most stacks)
    if a.ndim != 3:
        raise DataError(f"{path}: an image of shape {a.shape}: use [height, width, bands] "
                        "(or [bands, height, width])")
    if a.shape[0] * a.shape[1] == 0:
        raise DataError(f"{path}: an empty image of shape {a.shape}")
    if a.shape[-1] != channels:
        raise DataError(f"{path}: {a.shape[-1]} band(s), data.channels={channels}: every image "
                        f"needs {channels} (set data.channels={a.shape[-1]} if that is right)")
    return a


def high_bit_depth(path: str, max_pixels: int = MAX_PIXELS) -> bool:
    """Whether an image holds more than 8 bits per value (16-bit, 32-bit or float)."""
    try:
        check_file(path)
        if path.lower().endswith((".npy", *TIFF_SUFFIXES)):
            return _array(path, max_pixels).dtype not in (np.uint8, np.bool_)
    except DataError:
        return False  # named by the audit and the pipeline
    try:
        with Image.open(path) as im:
            return im.mode in ("I;16", "I;16B", "I;16L", "I", "F")
    except (OSError, SyntaxError, ValueError):
        return False


def read_image(path: str, channels: int, max_pixels: int = MAX_PIXELS,
               raw: bool = False) -> np.ndarray:
    """Decode an image to [H, W, channels], honouring EXIF orientation.

    raw=False: uint8. Grayscale, RGB, RGBA (alpha dropped, or kept as the 4th band with
    channels=4), palette and 16-bit images are converted; 16-bit and float images are rescaled
    to 0..255 by their own range. raw=True: float32, the file's own values (16-bit, float),
    standardised later by the model's band statistics.
    Multi-band TIFFs (tifffile) and .npy stacks ([H, W, C] or [C, H, W]) must have `channels`
    bands; a file with another band count is refused, named.
    """
    pil = not path.lower().endswith(".npy") and not (
        path.lower().endswith(TIFF_SUFFIXES) and (raw or channels not in (1, 3)))
    if pil:
        try:
            return _read_pil(path, channels, max_pixels, raw)
        except DataError as e:
            if getattr(e, "final", False) or not path.lower().endswith(TIFF_SUFFIXES):
                raise
    a = check_finite(path, _to_hwc(path, _array(path, max_pixels), channels))
    if raw:
        return np.asarray(a, np.float32)
    return a if a.dtype == np.uint8 else _stretched(a)


def _stretched(a: np.ndarray) -> np.ndarray:
    """Values of more than 8 bits rescaled to 0..255 by the image's own range (uint8)."""
    a = a.astype(np.float64)
    lo, hi = float(a.min()), float(a.max())
    return np.uint8(np.round(255 * (a - lo) / max(hi - lo, 1e-9)))


def _read_pil(path: str, channels: int, max_pixels: int, raw: bool) -> np.ndarray:
    with _open(path, "image", max_pixels) as im:
        pages = getattr(im, "n_frames", 1)
        if pages > 1:  # Pillow gives the first page alone: a stack of bands, read by tifffile
            raise DataError(f"{path}: {pages} pages")
        im = ImageOps.exif_transpose(im)
        if im.mode == "F":
            check_finite(path, np.asarray(im))
        if raw:
            a = np.asarray(im if im.mode in ("I;16", "I;16B", "I;16L", "I", "F", "L", "RGB",
                                             "RGBA", "LA") else im.convert("RGB"), np.float32)
            if channels == 3 and a.ndim == 2:  # grey as RGB, as 8-bit images are converted
                a = np.repeat(a[..., None], 3, axis=-1)
            elif channels in (1, 3) and a.ndim == 3 and a.shape[-1] in (3, 4):
                a = a[..., :3] if channels == 3 else a[..., :3] @ np.float32([0.299, 0.587,
                                                                              0.114])
            return np.asarray(_to_hwc(path, a, channels), np.float32)
        if im.mode in ("I;16", "I;16B", "I;16L", "I", "F"):
            im = Image.fromarray(_stretched(np.asarray(im)))
        modes = {1: "L", 2: "LA", 3: "RGB", 4: "RGBA"}
        if channels not in modes:
            raise DataError(f"{path}: a {im.mode} image has not data.channels={channels} "
                            "bands (save multi-band images as TIFF or .npy)")
        if channels in (2, 4) and im.mode != modes[channels]:
            raise DataError(f"{path}: a {im.mode} image, data.channels={channels}: every "
                            f"image needs {channels} bands ({modes[channels]})")
        array = np.asarray(im.convert(modes[channels]), np.uint8)
    return array[..., None] if channels == 1 else array


def _layout(path: str, pages: int) -> str:
    """A multi-page file's shape in words (tifffile's reading of it, else its page count)."""
    try:
        import tifffile  # noqa: PLC0415

        with tifffile.TiffFile(path) as tif:
            return f"shape {tuple(tif.series[0].shape)} ({pages} pages)"
    except Exception:  # noqa: BLE001 (not a TIFF tifffile reads: the page count says enough)
        return f"{pages} pages"


def label_lookup(label_map: dict | None) -> np.ndarray:
    """A 65536-entry table mapping raw mask values to class indices (identity where unmapped)."""
    table = np.arange(65536, dtype=np.int32)
    for raw, cls in (label_map or {}).items():
        table[int(raw)] = int(cls)
    return table


def read_mask(path: str, table: np.ndarray, colour_table=None,
              max_pixels: int = MAX_PIXELS) -> np.ndarray:
    """Decode a mask to int32 class indices [H, W].

    Single-channel masks (8/16-bit grayscale, palette) give their values (palette indices, not
    colours), mapped through `table`. RGB masks need `colour_table` (class k has colour
    colour_table[k]); a colour outside it is an error naming the file and the colours.
    """
    if path.lower().endswith((".jpg", ".jpeg")):
        raise DataError(f"{path}: JPEG masks are refused (lossy compression invents labels; "
                        "save masks as PNG)")
    if path.lower().endswith(".npy"):
        raw = _array(path, max_pixels, "mask")
        if raw.ndim == 3 and raw.shape[-1] == 1:
            raw = raw[..., 0]
        if raw.ndim != 2 or raw.dtype.kind not in "uib":
            raise DataError(f"{path}: a mask needs whole-number class indices [height, width], "
                            f"not {raw.dtype} {raw.shape}")
        raw = np.asarray(raw, np.int64)
        if raw.min() < 0 or raw.max() >= len(table):
            raise DataError(f"{path}: mask values outside 0..{len(table) - 1}")
        return table[raw]
    with _open(path, "mask", max_pixels) as im:
        pages = getattr(im, "n_frames", 1)
        if pages > 1:
            raise DataError(f"{path}: a mask of {_layout(path, pages)}: a mask is one band of "
                            "class indices [height, width]")
        im = ImageOps.exif_transpose(im)
        if im.mode in INDEX_MODES:
            raw = np.asarray(im).astype(np.int64)
            if raw.min() < 0 or raw.max() >= len(table):
                raise DataError(f"{path}: mask values outside 0..{len(table) - 1}")
            return table[raw]
        if im.mode not in ("RGB", "RGBA"):
            raise DataError(f"{path}: mask mode {im.mode} is not a class-index image")
        if colour_table is None:
            raise DataError(
                f"{path}: mask mode {im.mode} is a colour image, not class indices: give "
                "data.colour_table (one [r, g, b] per class) or save single-channel masks")
        rgb = np.asarray(im.convert("RGB")).astype(np.int64)
    codes = (rgb[..., 0] << 16) | (rgb[..., 1] << 8) | rgb[..., 2]
    palette = {(r << 16) | (g << 8) | b: k for k, (r, g, b) in enumerate(colour_table)}
    keys = np.array(sorted(palette), np.int64)
    pos = np.clip(np.searchsorted(keys, codes), 0, len(keys) - 1)
    known = keys[pos] == codes
    if not known.all():
        unknown, counts = np.unique(codes[~known], return_counts=True)
        listed = ", ".join(f"({c >> 16}, {(c >> 8) & 255}, {c & 255}) x{n}"
                           for c, n in list(zip(unknown, counts, strict=False))[:5])
        raise DataError(f"{path}: colours not in data.colour_table: {listed}")
    return np.array([palette[k] for k in keys], np.int32)[pos]


def exif_orientation(path: str) -> int:
    """The EXIF orientation tag of an image file (1 = upright / none)."""
    try:
        check_file(path)
        with Image.open(path) as im:
            return int(im.getexif().get(0x0112, 1))
    except (DataError, OSError, SyntaxError, ValueError):
        return 1


def read_pair(pair: Pair, *, channels: int, table: np.ndarray, colour_table=None,
              max_pixels: int = MAX_PIXELS, raw: bool = False) -> tuple[np.ndarray, np.ndarray]:
    """Image and mapped mask of one pair; refuses size mismatches by name."""
    image = read_image(pair.image, channels, max_pixels, raw)
    mask = read_mask(pair.mask, table, colour_table, max_pixels)
    if image.shape[:2] != mask.shape:
        raise DataError(f"{pair.image} is {image.shape[1]}x{image.shape[0]} but {pair.mask} is "
                        f"{mask.shape[1]}x{mask.shape[0]}: image and mask must have the same size")
    return image, mask
