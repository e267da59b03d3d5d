"""Tiny copies of the public dataset layouts, read through their configs; whole-image validation."""

import numpy as np
import pytest
from PIL import Image

from seg.data import pipeline
from seg.metrics import make_metrics
from seg.models import build_unet
from seg.train import open_data, run

VOC_PALETTE = [0, 0, 0, 128, 0, 0, 0, 128, 0] + [0] * (252 * 3) + [224, 224, 192]


@pytest.fixture
def voc(tmp_path):
    root = tmp_path / "VOC2012"
    for d in ("JPEGImages", "SegmentationClass", "ImageSets/Segmentation"):
        (root / d).mkdir(parents=True)
    rng = np.random.default_rng(0)
    for i in range(5):
        Image.fromarray(rng.integers(0, 255, (30, 40, 3), dtype=np.uint8)).save(
            root / "JPEGImages" / f"2007_00000{i}.jpg")
        if i < 4:  # one image has no segmentation, as most of VOC's JPEGImages
            mask = np.zeros((30, 40), np.uint8)
            mask[5:15, 5:20] = 1 + i % 2
            mask[4, 4:21] = 255  # void boundary
            m = Image.fromarray(mask, mode="P")
            m.putpalette(VOC_PALETTE)
            m.save(root / "SegmentationClass" / f"2007_00000{i}.png")
    (root / "ImageSets/Segmentation/train.txt").write_text("2007_000000\n2007_000001\n2007_000002\n")
    (root / "ImageSets/Segmentation/val.txt").write_text("2007_000003\n")
    return root


@pytest.fixture
def pets(tmp_path):
    root = tmp_path / "oxford-iiit-pet"
    (root / "images").mkdir(parents=True)
    (root / "annotations" / "trimaps").mkdir(parents=True)
    rng = np.random.default_rng(0)
    names = ["Abyssinian_1", "Abyssinian_2", "beagle_1", "beagle_2"]
    for name in names:
        Image.fromarray(rng.integers(0, 255, (24, 20, 3), dtype=np.uint8)).save(
            root / "images" / f"{name}.jpg")
        tri = np.full((24, 20), 2, np.uint8)  # background
        tri[6:18, 5:15] = 3  # border
        tri[7:17, 6:14] = 1  # pet
        Image.fromarray(tri).save(root / "annotations" / "trimaps" / f"{name}.png")
    (root / "annotations" / "trimaps" / "._Abyssinian_1.png").write_bytes(b"\x00\x05")  # macOS
    (root / "annotations" / "trainval.txt").write_text(
        "Abyssinian_1 1 1 1\nAbyssinian_2 1 1 1\nbeagle_1 2 2 1\n")
    (root / "annotations" / "test.txt").write_text("beagle_2 2 2 1\n")
    return root


def test_voc_layout_palette_indices_and_void(compose, voc):
    source, pipe = open_data(compose("data=voc", f"data.root={voc}")["data"])
    assert (source.num_train, source.num_val) == (3, 1) and source.class_names[15] == "person"
    _, mask = next(iter(source.val))
    assert set(np.unique(mask.numpy())) == {0, 2, 255}  # indices, not palette colours
    assert pipe["ignore_index"] == 255


def test_oxford_pets_layout_maps_trimaps(compose, pets):
    source, _ = open_data(compose("data=oxford_pets", f"data.root={pets}")["data"])
    assert (source.num_train, source.num_val) == (3, 1)
    _, mask = next(iter(source.val))
    mask = mask.numpy()
    assert set(np.unique(mask)) == {0, 1, 2}
    assert mask[0, 0] == 0 and mask[12, 10] == 1 and mask[6, 5] == 2


def test_rgb_colour_masks_with_a_colour_table(compose, tmp_path):
    root = tmp_path / "ds"
    (root / "images").mkdir(parents=True)
    (root / "masks").mkdir()
    colours = [[0, 0, 0], [255, 0, 0], [0, 0, 255]]
    for i in range(3):
        Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save(root / "images" / f"a{i}.png")
        mask = np.zeros((8, 8, 3), np.uint8)
        mask[:4] = colours[1]
        mask[4:, :2] = colours[2]
        Image.fromarray(mask).save(root / "masks" / f"a{i}.png")
    cfg = compose("data=folder", f"data.root={root}", "data.num_classes=3",
                  f"data.colour_table={colours}".replace(" ", ""), "data.split=contiguous",
                  "data.val_fraction=0.34")
    source, _ = open_data(cfg["data"])
    _, mask = next(iter(source.val))
    assert np.bincount(mask.numpy().ravel()).tolist() == [24, 32, 8]


@pytest.mark.slow
@pytest.mark.parametrize("mode", ["L", "RGB", "RGBA", "I;16"])
def test_any_image_mode_and_a_size_that_is_no_multiple_of_8(compose, tmp_path, mode):
    root = tmp_path / "ds"
    (root / "images").mkdir(parents=True)
    (root / "masks").mkdir()
    rng = np.random.default_rng(0)
    for i in range(3):
        if mode == "I;16":
            image = Image.fromarray(rng.integers(0, 65535, (36, 48), dtype=np.uint16))
        else:
            image = Image.fromarray(rng.integers(0, 255, (36, 48, 4), dtype=np.uint8)[..., :len(mode)].squeeze(),
                                    mode=mode)
        image.save(root / "images" / f"a{i}.png")
        Image.fromarray((np.arange(36 * 48).reshape(36, 48) % 2).astype(np.uint8)).save(
            root / "masks" / f"a{i}.png")
    cfg = compose("data=folder", f"data.root={root}", "data.num_classes=2", "data.image_size=20",
                  "data.split=contiguous", "data.val_fraction=0.34", "trainer.epochs=1",
                  "trainer.batch_size=2", "trainer.steps_per_epoch=2", "logging.num_panels=1",
                  "trainer.verbose=0", "model.base_filters=4", "diagnostics.monitor=false")
    metrics = run(cfg, tmp_path / "run")  # 36x48 whole-image validation, 20x20 training crops
    assert metrics["epochs_completed"] == 1 and 0 <= metrics["val_mean_iou"] <= 1


def test_validation_scores_each_whole_image_as_if_alone(tmp_path):
    """Metrics over validation batches of mixed sizes equal the metrics of the images one by one."""
    import tensorflow as tf
    rng = np.random.default_rng(0)
    sizes = [(20, 28), (31, 17), (20, 28)]
    elements = [(rng.integers(0, 255, (*s, 3), dtype=np.uint8), rng.integers(0, 3, s, dtype=np.int32))
                for s in sizes]
    ds = tf.data.Dataset.from_generator(lambda: iter(elements), output_signature=(
        tf.TensorSpec((None, None, 3), tf.uint8), tf.TensorSpec((None, None), tf.int32)))
    model = build_unet(num_classes=3, in_channels=3, base_filters=4)
    together, apart = make_metrics(3, 255, True), make_metrics(3, 255, True)
    batches = list(pipeline.validation(ds, batch_size=2))
    assert sorted(tuple(x.shape[:3]) for x, _ in batches) == [(1, 31, 17), (2, 20, 28)]
    for x, y in batches:
        for m in together:
            m.update_state(y, model(x))
    for image, mask in elements:
        image = tf.image.convert_image_dtype(image, tf.float32)[None]
        for m in apart:
            m.update_state(mask[None], model(image))
    for a, b in zip(together, apart):
        assert float(a.result()) == pytest.approx(float(b.result()), abs=1e-6), a.name
