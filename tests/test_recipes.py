"""Recipes for imbalanced data: class weights from the training histogram (seg/data/balance.py),
rare-class crops and image-only photometric augmentation (seg/data/pipeline.py), their config
checks, trainer.validate_every and trainer.time_budget_minutes end to end, and the imbalanced
street-scene toy dataset (seg/data/imbalanced.py)."""

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import tensorflow as tf
from PIL import Image

from conftest import ROOT
from seg.data import balance, imbalanced, pipeline, shapes

# --- class balance: histogram, weights, rare classes -----------------------------------------

# two 2x4 masks, 4 classes (class 3 absent), one void pixel (255) in B
MASK_A = np.array([[0, 0, 0, 0], [0, 0, 1, 1]])  # 6 x class 0, 2 x class 1
MASK_B = np.array([[0, 0, 2, 2], [2, 2, 2, 255]])  # 2 x class 0, 5 x class 2, 1 void


def test_histogram_counts_pixels_image_pixels_and_void():
    hist = balance.histogram([MASK_A, MASK_B], 4)
    assert hist.pixels.tolist() == [8, 2, 5, 0]
    # labelled pixels of the images holding the class: A has 8, B has 7 (its void left out)
    assert hist.image_pixels.tolist() == [15, 8, 7, 0]
    assert hist.void == 1 and hist.masks == 2
    np.testing.assert_allclose(hist.shares, [8 / 15, 2 / 15, 5 / 15, 0])
    assert hist.void_share == pytest.approx(1 / 16)
    # any value that is not a class is void: negative ones and those >= num_classes
    odd = balance.histogram([np.array([[-1, 0, 4, 1]])], 4)
    assert odd.pixels.tolist() == [1, 1, 0, 0] and odd.void == 2
    assert odd.image_pixels.tolist() == [2, 2, 0, 0]


def test_median_frequency_weights_match_the_hand_computed_ones():
    hist = balance.histogram([MASK_A, MASK_B], 4)
    # freq_c = pixels of c / pixels of the images holding c: 8/15, 2/8, 5/7; median = 8/15
    median = 8 / 15
    expected = [median / (8 / 15), median / (2 / 8), median / (5 / 7), 1.0]  # absent class: 1
    got = balance.class_weights("median_frequency", hist)
    assert got == [round(w, 4) for w in expected] == [1.0, 2.1333, 0.7467, 1.0]


def test_inverse_frequency_weights_have_a_pixel_weighted_mean_of_one():
    hist = balance.histogram([MASK_A, MASK_B], 4)
    got = balance.class_weights("inverse_frequency", hist)
    # total / (present classes x class pixels) = 15 / (3 x [8, 2, 5]); absent class 3: 1
    assert got == [0.625, 2.5, 1.0, 1.0]
    pixels = hist.pixels[:3]
    assert float(np.dot(pixels, got[:3]) / pixels.sum()) == pytest.approx(1.0)
    # another histogram, whose weights are not round numbers
    rng = np.random.default_rng(0)
    masks = [rng.choice(3, (16, 16), p=[0.7, 0.25, 0.05]) for _ in range(3)]
    hist = balance.histogram(masks, 3)
    w = np.array(balance.class_weights("inverse_frequency", hist))
    assert float(np.dot(hist.pixels, w) / hist.pixels.sum()) == pytest.approx(1.0, abs=1e-3)


def test_weights_are_capped_and_void_is_left_out():
    mask = np.zeros((100, 100), np.int64)
    mask[0, 0] = 1  # one pixel of class 1 in 10,000
    hist = balance.histogram([mask], 2)
    assert balance.class_weights("inverse_frequency", hist)[1] == balance.MAX_WEIGHT
    median = balance.class_weights("median_frequency", hist)
    assert median[1] == balance.MAX_WEIGHT
    assert median[0] == round(0.5 / 0.9999, 4)  # median of (0.9999, 0.0001) is 0.5
    # void pixels (ignore_index 255) change neither the histogram's classes nor the weights
    voided = np.pad(MASK_A, ((0, 3), (0, 3)), constant_values=255)
    for method in balance.WEIGHTINGS:
        assert balance.class_weights(method, balance.histogram([voided, MASK_B], 4)) == \
            balance.class_weights(method, balance.histogram([MASK_A, MASK_B], 4))
    with pytest.raises(ValueError, match="median"):
        balance.class_weights("median", hist)


def test_rare_classes_are_present_classes_under_half_an_even_share():
    # 4 classes: an even share is 25%, rare is under 12.5%; void does not count
    mask = np.array([0] * 14 + [1] * 2 + [2] * 4 + [255] * 30).reshape(5, 10)
    hist = balance.histogram([mask], 4)
    np.testing.assert_allclose(hist.shares, [0.7, 0.1, 0.2, 0.0])
    assert balance.rare_classes(hist) == [1]  # class 3 is absent, not rare
    assert balance.rare_classes(balance.histogram([MASK_A, MASK_B], 4)) == []  # 13.3% is not


# --- rare-class crops and photometric augmentation ----------------------------------------------

def _noise_pair(h=96, w=96, channels=3, seed=0):
    rng = np.random.default_rng(seed)
    image = rng.integers(0, 256, (h, w, channels), dtype=np.uint8)
    mask = np.zeros((h, w), np.int32)
    mask[: h // 2] = 1
    mask[70:73, 10:13] = 3  # one tiny rare blob, far from the centre
    return image, mask


PHOTO = {"brightness": 0.3, "contrast": 0.4, "saturation": 0.5, "hue": 0.1, "blur": 1.5}


def _seed(i):
    return tf.constant([i, 7], tf.int64)


def test_rare_class_crops_always_hold_the_rare_class_when_asked_and_rarely_otherwise():
    image, mask = _noise_pair()
    held = {}
    for share in (1.0, 0.0):
        fn = tf.function(lambda s, share=share: pipeline.augment(
            image, mask, s, size=24, rare_classes=[3], rare_class_crops=share, transpose=True))
        held[share] = [bool((fn(_seed(i))[1].numpy() == 3).any()) for i in range(20)]
    assert all(held[1.0]), f"crops without the rare class: {held[1.0]}"
    # a random 24-pixel crop of the ~96-pixel image holds the blob about 1 time in 20
    assert sum(held[0.0]) <= 5, f"{sum(held[0.0])} of 20 random crops hold the rare blob"


def test_rare_centre_picks_a_rare_pixel_the_class_first_then_the_pixel():
    mask = np.zeros((40, 40, 1), np.int32)
    mask[:20, :25] = 4  # a large rare class
    mask[35:37, 35:37] = 3  # a tiny one: drawn as often as the large one (class first)
    seeds = lambda i: tf.random.experimental.stateless_split(_seed(i), 3)  # noqa: E731
    picked = []
    for i in range(40):
        found, cy, cx = pipeline.rare_centre(mask, [3, 4], 1.0, seeds(i))
        assert bool(found)
        picked.append(int(mask[int(cy), int(cx), 0]))
    assert set(picked) == {3, 4} and picked.count(3) >= 8, picked
    # share 0, no rare class present, or no rare class given: not found
    assert not bool(pipeline.rare_centre(mask, [3, 4], 0.0, seeds(0))[0])
    assert not bool(pipeline.rare_centre(np.zeros_like(mask), [3], 1.0, seeds(0))[0])
    assert not bool(pipeline.rare_centre(mask, [], 1.0, seeds(0))[0])
    # the same in a graph
    graph = tf.function(lambda s: pipeline.rare_centre(mask, [3, 4], 1.0, s))
    for i in range(5):
        assert [int(v) for v in graph(seeds(i))] == \
            [int(v) for v in pipeline.rare_centre(mask, [3, 4], 1.0, seeds(i))]


def test_the_same_seed_gives_the_same_crop_eagerly_in_tf_data_and_in_tf_function():
    image, mask = _noise_pair(60, 50)
    kw = dict(size=24, rare_classes=[3], rare_class_crops=0.6, photometric_args=PHOTO,
              transpose=True)
    eager = [pipeline.augment(image, mask, _seed(i), **kw) for i in range(8)]
    again = [pipeline.augment(image, mask, _seed(i), **kw) for i in range(8)]
    graph = tf.function(lambda s: pipeline.augment(image, mask, s, **kw))
    ds = tf.data.Dataset.range(8).map(
        lambda i: pipeline.augment(image, mask, tf.stack([i, tf.constant(7, tf.int64)]), **kw),
        num_parallel_calls=2, deterministic=True)
    for i, (e, a, (dx, dy)) in enumerate(zip(eager, again, ds)):
        g = graph(_seed(i))
        for other, where in ((a, "eager again"), (g, "tf.function"), ((dx, dy), "tf.data")):
            np.testing.assert_array_equal(e[1].numpy(), other[1].numpy(), err_msg=where)
            np.testing.assert_allclose(e[0].numpy(), other[0].numpy(), atol=1e-6, err_msg=where)
    # and other seeds give other crops
    assert not np.array_equal(eager[0][0].numpy(), eager[1][0].numpy())


def test_photometric_changes_the_image_never_the_mask_and_stays_in_unit_range():
    image, mask = _noise_pair(48, 48)
    changed = 0
    for i in range(6):
        plain_x, plain_y = pipeline.augment(image, mask, _seed(i), size=32)
        x, y = pipeline.augment(image, mask, _seed(i), size=32, photometric_args=PHOTO)
        np.testing.assert_array_equal(y.numpy(), plain_y.numpy())  # the same crop and flips
        changed += not np.allclose(x.numpy(), plain_x.numpy(), atol=1e-3)
        strong = pipeline.augment(image, mask, _seed(i), size=32, photometric_args={
            "brightness": 1.0, "contrast": 1.0, "saturation": 1.0, "hue": 0.5, "blur": 2.0})[0]
        for out in (x, strong):
            assert out.dtype == tf.float32
            assert 0.0 <= float(tf.reduce_min(out)) and float(tf.reduce_max(out)) <= 1.0
    assert changed == 6
    # every strength alone changes the image (blur, brightness, ... are each applied)
    for name, value in PHOTO.items():
        x = pipeline.augment(image, mask, _seed(1), size=32, photometric_args={name: value})[0]
        plain = pipeline.augment(image, mask, _seed(1), size=32)[0]
        assert not np.allclose(x.numpy(), plain.numpy(), atol=1e-3), name


def test_saturation_and_hue_only_touch_three_channel_images():
    rng = np.random.default_rng(3)
    for channels in (1, 2, 4):
        image = tf.constant(rng.random((16, 16, channels)), tf.float32)
        out = pipeline.photometric(image, _seed(0), saturation=0.8, hue=0.4)
        np.testing.assert_array_equal(out.numpy(), image.numpy(), err_msg=f"{channels} bands")
        # the others still apply to any number of bands
        assert not np.allclose(pipeline.photometric(image, _seed(0), brightness=0.5).numpy(),
                               image.numpy())
    rgb = tf.constant(rng.random((16, 16, 3)), tf.float32)
    for name in ("saturation", "hue"):
        out = pipeline.photometric(rgb, _seed(0), **{name: 0.4})
        assert not np.allclose(out.numpy(), rgb.numpy(), atol=1e-3), name
    # raw bands (not scaled to [0, 1]) get contrast and blur only
    raw = tf.constant(rng.random((16, 16, 3)) * 1000, tf.float32)
    same = pipeline.photometric(raw, _seed(0), brightness=0.5, saturation=0.5, hue=0.3,
                                scaled=False)
    np.testing.assert_array_equal(same.numpy(), raw.numpy())
    # 1-band crops through augment: saturation and hue change nothing
    image, mask = _noise_pair(40, 40, channels=1)
    a = pipeline.augment(image, mask, _seed(2), size=24, photometric_args={"saturation": 0.9,
                                                                           "hue": 0.5})
    b = pipeline.augment(image, mask, _seed(2), size=24)
    np.testing.assert_array_equal(a[0].numpy(), b[0].numpy())


def test_with_the_new_options_off_the_old_stream_is_unchanged():
    image, mask = _noise_pair(50, 60)
    for i in range(6):
        plain = pipeline.augment(image, mask, _seed(i), size=32, transpose=True)
        for kw in ({"rare_classes": [3], "rare_class_crops": 0.0},
                   {"rare_classes": [3], "rare_class_crops": 0.0, "photometric_args": None},
                   {"photometric_args": {k: 0.0 for k in PHOTO}},
                   {"rare_classes": [], "rare_class_crops": 1.0},
                   # asked for, but this image has no pixel of the rare class: a random crop
                   {"rare_classes": [5], "rare_class_crops": 1.0}):
            x, y = pipeline.augment(image, mask, _seed(i), size=32, transpose=True, **kw)
            np.testing.assert_array_equal(x.numpy(), plain[0].numpy(), err_msg=str(kw))
            np.testing.assert_array_equal(y.numpy(), plain[1].numpy(), err_msg=str(kw))
    # augment draws 11 seeds now, 7 before: the first 7 must be the same ones
    for s in ([0, 0], [3, 7], [2 ** 40, -5]):
        seed = tf.constant(s, tf.int64)
        np.testing.assert_array_equal(
            tf.random.experimental.stateless_split(seed, 7).numpy(),
            tf.random.experimental.stateless_split(seed, 11).numpy()[:7])


def test_training_stream_resumes_exactly_with_rare_crops_and_photometric():
    images, masks = shapes.make_shapes(12, 40, seed=2)
    masks = masks.astype(np.int32)
    masks[:, 5:8, 30:33] = 3  # make sure the rare class is everywhere (and small)
    source = pipeline.from_arrays(images, masks)
    make = lambda start: pipeline.training(  # noqa: E731
        source, num_examples=12, batch_size=4, image_size=24, seed=3, start_batch=start,
        rare_classes=[3], rare_class_crops=0.7, photometric_args=PHOTO, transpose=True)
    whole = [(x.numpy(), y.numpy()) for x, y in make(0).take(7)]  # 3 batches a pass
    for start in (1, 4):  # inside the first pass, and in the second one
        resumed = [(x.numpy(), y.numpy()) for x, y in make(start).take(7 - start)]
        for k, ((wx, wy), (rx, ry)) in enumerate(zip(whole[start:], resumed)):
            np.testing.assert_array_equal(ry, wy, err_msg=f"start {start}, batch {start + k}")
            np.testing.assert_array_equal(rx, wx, err_msg=f"start {start}, batch {start + k}")
    # the options are in effect: this stream differs from the plain one
    plain = next(iter(pipeline.training(source, num_examples=12, batch_size=4, image_size=24,
                                        seed=3, transpose=True)))
    assert not np.array_equal(plain[0].numpy(), whole[0][0])


# --- config refusals ---------------------------------------------------------------------------

@pytest.mark.parametrize("overrides, named", [
    (["loss.class_weights=median"], "loss.class_weights"),
    (["+data.photometric.gamma=0.1"], "data.photometric.gamma"),
    (["data.photometric.hue=0.9"], "data.photometric.hue"),
    (["data.photometric.blur=-1"], "data.photometric.blur"),
    (["data=isbi_membrane", "data.photometric.saturation=0.2"], "data.photometric.saturation"),
    (["data=isbi_membrane", "data.photometric.hue=0.1"], "data.photometric.hue"),
    (["data.rare_class_crops=1.5"], "data.rare_class_crops"),
    (["data.rare_class_crops=-0.1"], "data.rare_class_crops"),
    (["trainer.validate_every=0"], "trainer.validate_every"),
    (["trainer.time_budget_minutes=-1"], "trainer.time_budget_minutes"),
    (["trainer.time_budget_minutes=0"], "trainer.time_budget_minutes"),
    (["data.image_size=32", "data.photometric.blur=6"], "data.photometric.blur"),
    (["trainer.time_budget_minutes=5", "trainer.strategy=multi_worker"],
     "trainer.time_budget_minutes"),
])
def test_config_refuses_bad_recipe_values_naming_the_key(compose, overrides, named):
    from seg import config

    found = config.problems(compose(*overrides))
    assert len(found) == 1 and found[0].startswith(named), found
    with pytest.raises(config.ConfigError, match=named.replace(".", r"\.")):
        config.check(compose(*overrides))


def test_config_accepts_the_recipes(compose):
    from seg import config

    for overrides in (["loss.class_weights=median_frequency"],
                      ["loss.class_weights=inverse_frequency", "data.rare_class_crops=1.0"],
                      ["loss.class_weights=[1,2,3,4]"],
                      ["data.photometric.saturation=0.3", "data.photometric.hue=0.5",
                       "data.photometric.blur=2"],
                      ["data=isbi_membrane", "data.photometric.brightness=0.2",
                       "data.photometric.contrast=0.3"],
                      ["trainer.validate_every=5", "trainer.time_budget_minutes=0.5"]):
        assert config.problems(compose(*overrides)) == [], overrides


def test_a_refused_recipe_writes_nothing(compose, tmp_path):
    from seg.train import ConfigError, run

    with pytest.raises(ConfigError, match=r"data\.photometric\.gamma"):
        run(compose("+data.photometric.gamma=0.1"), tmp_path / "run")
    assert not (tmp_path / "run").exists()


# --- end to end with the real trainer ----------------------------------------------------------

FAST = ("data.num_train=32", "data.num_val=8", "data.image_size=32", "model.depth=2",
        "model.base_filters=4", "trainer.batch_size=4", "trainer.steps_per_epoch=2",
        "logging.panels_every=0", "logging.num_panels=2", "diagnostics.probes=false",
        "trainer.verbose=0")


@pytest.mark.slow
def test_median_frequency_weights_and_rare_crops_are_computed_recorded_and_used(compose,
                                                                               tmp_path):
    from seg.train import run

    cfg = compose(*FAST, "trainer.epochs=1", "loss.class_weights=median_frequency",
                  "data.rare_class_crops=0.5")
    out = tmp_path / "run"
    returned = run(cfg, out)
    metrics = json.loads((out / "metrics.json").read_text())
    # what balance.py computes from the training masks (the same scenes the source makes)
    _, train_masks = shapes.make_shapes(32, 32, num_classes=4, seed=0, split=0)
    hist = balance.histogram(train_masks, 4)
    expected = balance.class_weights("median_frequency", hist)
    assert len(metrics["class_weights"]) == 4 and metrics["class_weights"] == expected
    assert returned["class_weights"] == expected
    assert metrics["rare_classes"] == balance.rare_classes(hist)
    written = json.loads((out / "config.json").read_text())
    assert written["loss"]["class_weights"] == "median_frequency"  # the config as given
    assert written["computed"]["loss.class_weights"] == expected
    assert written["computed"]["data.rare_classes"] == balance.rare_classes(hist)


@pytest.mark.slow
def test_validate_every_validates_only_those_epochs_and_the_last(compose, tmp_path):
    from seg.train import run

    cfg = compose(*FAST, "trainer.epochs=3", "trainer.validate_every=2")
    metrics = run(cfg, tmp_path / "run")
    saved = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert saved["validated_epochs"] == [2, 3]
    assert saved["epochs_completed"] == 3 and len(saved["history"]["loss"]) == 3
    val = saved["history"]["val_mean_iou"]
    assert val[0] is None and val[1] is not None and val[2] is not None, val
    assert all(v is not None for v in saved["history"]["loss"])
    assert saved["best_epoch"] in (2, 3) and metrics["validated_epochs"] == [2, 3]


@pytest.mark.slow
def test_a_time_budget_stops_the_run_saves_it_and_the_next_start_only_rescores(compose,
                                                                                tmp_path):
    from seg.train import run

    cfg = compose(*FAST, "trainer.epochs=20", "trainer.time_budget_minutes=0.001")
    out = tmp_path / "run"
    first = run(cfg, out)
    assert first["stopped_by_budget"] is True
    assert first["epochs_completed"] < 20
    assert first["budget_stop"]["epoch"] == first["epochs_completed"]
    assert first["time_budget_minutes"] == 0.001
    # the epoch it stopped in was validated and scored for best.keras
    assert first["validated_epochs"][-1] == first["epochs_completed"]
    assert (out / "checkpoints" / "best.keras").is_file()
    again = run(cfg, out)
    assert again["stopped_by_budget"] is True
    assert again["epochs_completed"] == first["epochs_completed"]
    assert again["val_mean_iou"] == first["val_mean_iou"]
    assert len(again["resumes"]) == 1, again["resumes"]  # resumed once, trained no more


# --- the imbalanced street-scene dataset -------------------------------------------------------

def _read(root):
    names = sorted(p.name for p in (root / "masks").glob("*.png"))
    masks = [np.array(Image.open(root / "masks" / n)) for n in names]
    return names, masks


def test_imbalanced_dataset_has_rare_classes_under_one_percent(tmp_path):
    info = imbalanced.write_dataset(tmp_path / "ds")  # the default 48 + 12 scenes of 96x128
    assert info["num_classes"] == imbalanced.NUM_CLASSES == 6
    assert info["class_names"] == imbalanced.CLASS_NAMES == [
        "background", "road", "building", "pole", "sign", "cyclist"]
    names, masks = _read(tmp_path / "ds")
    assert len(names) == 60 and names[0] == "train_0000.png" and names[-1] == "val_0011.png"
    image = Image.open(tmp_path / "ds" / "images" / names[0])
    assert image.mode == "RGB" and image.size == (128, 96)
    assert Image.open(tmp_path / "ds" / "masks" / names[0]).mode == "L"
    counts = np.bincount(np.concatenate([m.ravel() for m in masks]), minlength=6)
    assert len(counts) == 6  # only class indices 0..5
    np.testing.assert_allclose(info["shares"], counts / counts.sum())
    shares = dict(zip(info["class_names"], info["shares"]))
    print("class shares:", {k: f"{100 * v:.3f}%" for k, v in shares.items()})
    for rare in ("pole", "sign", "cyclist"):
        assert 0 < shares[rare] < 0.01, shares
    for common in ("background", "road", "building"):
        assert shares[common] > 0.1, shares
    # the rare classes are in most scenes, so they can be learned
    present = np.array([[(m == k).any() for k in (3, 4, 5)] for m in masks]).mean(0)
    assert (present > 0.75).all(), present
    # with the training split's histogram, balance.py calls exactly these three rare
    train = balance.histogram(masks[:48], 6)
    assert balance.rare_classes(train) == [3, 4, 5]
    # seg's folder source splits it as written with data.split=contiguous
    from seg.data import folder_source

    src = folder_source(root=str(tmp_path / "ds"), num_classes=6, split="contiguous",
                        val_fraction=0.2)
    assert (src.num_train, src.num_val) == (48, 12)
    assert all(Path(n).name.startswith("val_") for n in src.names["val"])


def test_imbalanced_dataset_is_deterministic_per_seed(tmp_path):
    kw = dict(num_train=4, num_val=2, height=48, width=64)
    a = imbalanced.write_dataset(tmp_path / "a", seed=1, **kw)
    b = imbalanced.write_dataset(tmp_path / "b", seed=1, **kw)
    c = imbalanced.write_dataset(tmp_path / "c", seed=2, **kw)
    assert a == b and a != c
    for folder in ("images", "masks"):
        files = sorted(p.name for p in (tmp_path / "a" / folder).iterdir())
        assert len(files) == 6
        for name in files:
            assert (tmp_path / "a" / folder / name).read_bytes() == \
                (tmp_path / "b" / folder / name).read_bytes(), name
        assert any((tmp_path / "a" / folder / n).read_bytes() !=
                   (tmp_path / "c" / folder / n).read_bytes() for n in files)


def test_imbalanced_cli_writes_refuses_foreign_folders_and_overwrites_its_own(tmp_path,
                                                                              capsys):
    root = tmp_path / "ds"
    assert imbalanced.main([str(root), "--train", "4", "--val", "2", "--seed", "3"]) == 0
    printed = capsys.readouterr().out
    for name in imbalanced.CLASS_NAMES:
        assert name in printed
    assert len(list((root / "masks").glob("*.png"))) == 6
    # an earlier output of the generator is replaced (no stale files left)
    assert imbalanced.main([str(root), "--train", "2", "--val", "1"]) == 0
    assert sorted(p.name for p in (root / "images").iterdir()) == [
        "train_0000.png", "train_0001.png", "val_0000.png"]
    # anything else is refused, naming the folder, and left alone
    foreign = tmp_path / "mine"
    foreign.mkdir()
    (foreign / "notes.txt").write_text("keep me")
    with pytest.raises(SystemExit) as stop:
        imbalanced.main([str(foreign)])
    assert stop.value.code == 2
    assert str(foreign) in capsys.readouterr().err
    assert sorted(p.name for p in foreign.iterdir()) == ["notes.txt"]
    for bad in (["--train", "0"], ["--val", "-1"], ["--seed", "x"], ["--height", "8"]):
        with pytest.raises(SystemExit) as stop:
            imbalanced.main([str(tmp_path / "new"), *bad])
        assert stop.value.code == 2, bad
        assert "error" in capsys.readouterr().err
    assert not (tmp_path / "new").exists()


@pytest.mark.slow
def test_imbalanced_cli_bad_argument_exits_2_without_a_traceback(tmp_path):
    done = subprocess.run([sys.executable, "-m", "seg.data.imbalanced", str(tmp_path / "ds"),
                           "--train", "abc"], cwd=ROOT, capture_output=True, text=True,
                          timeout=120)
    assert done.returncode == 2, done.stderr
    assert "Traceback" not in done.stderr and "--train" in done.stderr, done.stderr
    assert not (tmp_path / "ds").exists()
