"""argparse types for the scripts' options: each refuses a bad value naming the option."""

from __future__ import annotations

import argparse
import math
import os
from pathlib import Path


def whole(low: int):
    """argparse type: a whole number >= low."""
    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            value = None
        if value is None or value < low:
            raise argparse.ArgumentTypeError(f"{text!r}: use a whole number >= {low}")
        return value
    return parse


def number(low: float, high: float):
    """argparse type: a number in [low, high]."""
    def parse(text: str) -> float:
        try:
            value = float(text)
        except ValueError:
            value = math.nan
        if not low <= value <= high:
            raise argparse.ArgumentTypeError(f"{text!r}: use a number from {low:g} to {high:g}")
        return value
    return parse


def folder_to_write(text: str) -> str:
    """argparse type: an output folder (it may exist; it must not be a file)."""
    path = Path(text)
    if path.exists() and not path.is_dir():
        raise argparse.ArgumentTypeError(f"{text}: is a file, not a folder; give a folder")
    for parent in [path, *path.parents]:  # the nearest existing one: a writable folder
        if parent.exists():
            if not parent.is_dir():
                raise argparse.ArgumentTypeError(f"{text}: {parent} is a file, not a folder")
            if not os.access(parent, os.W_OK):
                raise argparse.ArgumentTypeError(f"{text}: {parent} is not writable")
            break
    return text


def file_to_write(text: str) -> str:
    """argparse type: an output file (its folder is made; a folder or a file above is refused)."""
    path = Path(text)
    if path.is_dir():
        raise argparse.ArgumentTypeError(f"{text}: is a folder, not a file")
    folder_to_write(str(path.parent))
    return text
