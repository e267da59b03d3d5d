"""The data audit on a dataset with one of every defect: one report names every file."""

import json
import shutil
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

from conftest import ROOT, write_folder_dataset
from seg.data import DataError, folder_source
from seg.data.folder import list_splits, read_list
from seg.train import check_data, open_data

SHARED_ISBI = ROOT.parent / "shared" / "datasets" / "isbi2012-membrane"


@pytest.fixture
def broken(tmp_path):
    """A folder dataset with a dozen different defects, and what each should be reported as."""
    masks = {f"ok{i}": np.arange(256).reshape(16, 16) % 3 for i in range(6)}
    masks.update({n: np.zeros((16, 16)) for n in
                  ("orphan_img", "zero", "trunc", "small", "rgbmask", "labels", "exif", "huge")})
    root = write_folder_dataset(tmp_path / "ds", masks, size_of={"small": (16, 12),
                                                                  "huge": (60, 60)})
    im, ms = root / "images", root / "masks"
    (ms / "orphan_img.png").unlink()                                 # image without mask
    Image.fromarray(np.zeros((16, 16), np.uint8)).save(ms / "orphan_mask.png")  # mask w/o image
    shutil.copy(im / "ok0.png", im / "ok0.jpg")                      # duplicate stem
    (im / "zero.png").write_bytes(b"")                               # zero-byte
    data = (im / "trunc.png").read_bytes()
    (im / "trunc.png").write_bytes(data[: len(data) // 2])           # truncated
    Image.fromarray(np.zeros((16, 16, 3), np.uint8)).save(ms / "rgbmask.png")  # RGB mask
    Image.fromarray(np.full((16, 16), 7, np.uint8)).save(ms / "labels.png")    # label 7
    exif = Image.Exif()
    exif[0x0112] = 6
    Image.open(im / "exif.png").convert("RGB").save(im / "exif.png", exif=exif)  # rotated tag
    (ms / "huge.png").unlink()
    Image.fromarray(np.zeros((60, 60), np.uint8)).save(ms / "huge.png")        # too large
    expected = {"orphan_img.png: no mask", "orphan_mask.png: no image", "duplicate stem 'ok0'",
                "zero.png: zero-byte image", "trunc.png: cannot decode image",
                "small.png is 12x16 but", "rgbmask.png: mask mode RGB", "labels.png: values [7]",
                "exif.png has EXIF orientation 6", "huge.png: 60x60 image is larger than"}
    return root, expected


def _overrides(root, *extra):
    return ("data=folder", f"data.root={root}", "data.num_classes=3", "data.max_pixels=2000",
            *extra)


def test_one_report_names_every_defective_file(compose, broken):
    root, expected = broken
    report = check_data(compose(*_overrides(root)), progress=False)
    text = report.text()
    missing = [e for e in expected if e not in text]
    assert not missing, text
    assert len(report.errors) >= len(expected)
    assert "class histogram, train" in text


def test_training_refuses_unpaired_files_listing_all_of_them(compose, broken):
    root, _ = broken
    with pytest.raises(DataError) as e:
        open_data(compose(*_overrides(root))["data"])
    message = str(e.value)
    assert "orphan_img.png" in message and "orphan_mask.png" in message and "ok0" in message
    assert "check_data.py" in message


@pytest.mark.slow
def test_check_data_script_exits_non_zero_with_the_report(broken):
    root, expected = broken
    result = subprocess.run([sys.executable, "scripts/check_data.py", *_overrides(root), "--json"],
                            cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert result.returncode == 1, result.stderr[-2000:]
    details = " ".join(p["detail"] for p in json.loads(result.stdout)["problems"])
    assert all(e in details for e in expected)


def test_overlap_duplicates_and_empty_split_with_split_lists(compose, tmp_path):
    masks = {f"s{i}": np.arange(64).reshape(8, 8) % 2 for i in range(4)}
    root = write_folder_dataset(tmp_path / "ds", masks)
    shutil.copy(root / "images" / "s0.png", root / "images" / "s3.png")
    (root / "train.txt").write_text("s0\ns1\ns2\n")
    (root / "val.txt").write_text("s2\ns3\n")
    report = check_data(compose("data=folder", f"data.root={root}", "data.num_classes=2",
                                "data.train_list=train.txt", "data.val_list=val.txt"),
                        progress=False)
    text = report.text()
    assert "stems are in both splits: ['s2']" in text
    assert "identical image content in both splits" in text and "s3.png" in text
    (root / "val.txt").write_text("# nothing\n")
    with pytest.raises(DataError, match="validation split is empty"):
        folder_source(root=str(root), num_classes=2, train_list="train.txt", val_list="val.txt")


def test_split_lists_cannot_escape_the_root(tmp_path):
    (tmp_path / "l.txt").write_text("../../etc/passwd\n")
    with pytest.raises(DataError, match="outside the dataset root"):
        read_list(tmp_path, "l.txt")


@pytest.mark.slow
def test_on_bad_sample_skip_reports_every_skipped_file(compose, tmp_path):
    from seg.train import run
    masks = {f"s{i}": np.arange(64).reshape(8, 8) % 2 for i in range(8)}
    root = write_folder_dataset(tmp_path / "ds", masks)
    (root / "images" / "s1.png").write_bytes(b"garbage")
    (root / "images" / "s9.png").write_bytes((root / "images" / "s0.png").read_bytes())  # orphan
    cfg = compose("data=folder", f"data.root={root}", "data.num_classes=2", "data.image_size=8",
                  "data.split=contiguous", "data.val_fraction=0.25", "data.on_bad_sample=skip",
                  "trainer.epochs=1", "trainer.batch_size=2", "trainer.steps_per_epoch=2",
                  "logging.panels_every=0", "trainer.verbose=0", "diagnostics.probes=false")
    metrics = run(cfg, tmp_path / "run")
    skipped = {s["file"].split("/")[-1]: s["reason"] for s in metrics["skipped_samples"]}
    assert metrics["skipped_count"] == 2 and set(skipped) == {"s1.png", "s9.png"}
    assert "cannot decode image" in skipped["s1.png"]


@pytest.mark.skipif(not SHARED_ISBI.is_dir(), reason="../shared/datasets/isbi2012-membrane absent")
def test_isbi_membrane_config_reads_the_shared_data(compose):
    cfg = compose("data=isbi_membrane")
    source, _ = open_data(cfg["data"])
    assert (source.num_train, source.num_val) == (24, 6)
    image, mask = next(iter(source.val))
    assert image.shape == (512, 512, 1) and set(np.unique(mask.numpy())) == {0, 1}
    listing = list_splits(SHARED_ISBI, split="contiguous", val_fraction=0.2)
    assert [p.stem for p in listing.val] == ["24", "25", "26", "27", "28", "29"]
    report = check_data(cfg, progress=False)
    assert not report.errors and report.counts == {"train": 24, "val": 6}
