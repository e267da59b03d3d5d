"""The defaults follow the data (issue 28, item 5): loss.class_weights, trainer.steps_per_epoch
and trainer.validation_images are `auto`, resolved at the start of a run by the plan's rules,
printed and recorded; null and numbers keep their meaning."""

import json
import subprocess
import sys

import numpy as np
import pytest

from conftest import ROOT, write_folder_dataset
from seg import config, parts, recipe
from seg.config import ConfigError


def _rare_folder(tmp_path, *, rare: bool):
    """Eight 32x32 pairs, class 2 a 2x2 square (0.4% of the pixels) or a 16x16 one (25%)."""
    masks = {}
    for i in range(8):
        m = np.zeros((32, 32), np.uint8)
        m[:, 16:] = 1
        side = 2 if rare else 16
        m[4:4 + side, 4:4 + side] = 2
        masks[f"s{i}"] = m
    return write_folder_dataset(tmp_path / ("rare" if rare else "even"), masks)


def _folder(compose, root, *more):
    return compose("data=folder", f"data.root={root}", "data.num_classes=3",
                   "data.image_size=32", "trainer.batch_size=4", "trainer.verbose=0", *more)


def test_the_defaults_are_auto_and_the_old_values_still_mean_what_they_meant(compose):
    cfg = compose()
    assert cfg["loss"]["class_weights"] == "auto"
    assert cfg["trainer"]["steps_per_epoch"] == "auto"
    assert cfg["trainer"]["validation_images"] == "auto"
    config.check(compose("trainer.steps_per_epoch=null", "trainer.validation_images=null",
                         "loss.class_weights=null"))
    config.check(compose("trainer.steps_per_epoch=7", "trainer.validation_images=3"))


@pytest.mark.parametrize("override, named", [
    ("trainer.steps_per_epoch=often", "trainer.steps_per_epoch='often'"),
    ("trainer.steps_per_epoch=0", "trainer.steps_per_epoch=0"),
    ("trainer.validation_images=Auto", "trainer.validation_images='Auto'"),
    ("trainer.validation_images=2.5", "trainer.validation_images=2.5"),
    ("loss.class_weights=automatic", "loss.class_weights='automatic'"),
])
def test_a_wrong_value_is_refused_naming_the_key(compose, override, named):
    with pytest.raises(ConfigError) as e:
        config.check(compose(override))
    assert named in str(e.value) and "auto" in str(e.value)


def test_steps_per_epoch_auto_is_one_pass_with_a_floor():
    steps = lambda given, n, b: parts._steps_per_epoch(  # noqa: E731
        {"steps_per_epoch": given, "steps_per_execution": 1}, num_train=n, batch_size=b)
    assert steps("auto", 24, 16) == recipe.MIN_EPOCH_STEPS  # ISBI: 2 steps would be an epoch
    assert steps("auto", 1024, 16) == 64                    # the built-in shapes: one pass
    assert steps(None, 24, 16) == 1                         # null: one pass, as before
    assert steps(7, 24, 16) == 7
    auto: dict = {}
    parts._steps_per_epoch({"steps_per_epoch": "auto", "steps_per_execution": 1},
                           num_train=24, batch_size=16, auto=auto)
    assert auto == {"auto": {"trainer.steps_per_epoch": recipe.MIN_EPOCH_STEPS}}


def test_validation_subset_only_where_validating_costs_much_of_an_epoch():
    # 101 street photographs of 360x480 against 22 steps of 16 x 128^2: about half the epoch
    assert recipe.validation_share(101, 360 * 480, 22 * 16 * 128 ** 2) > 0.45
    assert recipe.validation_subset(101, 360 * 480, 22 * 16 * 128 ** 2) == recipe.MIN_VAL_IMAGES
    # many images, small: a tenth of the split still costs a tenth
    many = recipe.validation_subset(5000, 360 * 480, 50 * 16 * 128 ** 2)
    assert recipe.MIN_VAL_IMAGES < many < 5000
    # the built-in shapes (128 of 64x64 against 64 steps of 16 x 64^2): the whole split
    assert recipe.validation_subset(128, 64 * 64, 64 * 16 * 64 ** 2) is None
    # six ISBI slices: a subset of 16 would be all of them
    assert recipe.validation_subset(6, 512 * 512, 50 * 16 * 128 ** 2) is None


def test_auto_weights_where_a_class_is_rare_and_not_otherwise(compose, tmp_path, capsys):
    rare = parts.prepare(_folder(compose, _rare_folder(tmp_path, rare=True)))
    said = capsys.readouterr().out
    assert rare.computed["auto"]["loss.class_weights"] == "median_frequency"
    weights = rare.computed["loss.class_weights"]
    assert len(weights) == 3 and weights[2] > 10 * weights[0]  # the rare class weighs most
    assert "loss.class_weights=auto: median_frequency" in said and "class_2" in said
    assert rare.loss.class_weights is not None

    even = parts.prepare(_folder(compose, _rare_folder(tmp_path, rare=False)))
    assert even.computed["auto"]["loss.class_weights"] is None
    assert even.computed["loss.class_weights"] is None and even.loss.class_weights is None
    assert "loss.class_weights=auto: null" in capsys.readouterr().out


def test_resolved_config_feeds_the_advice(compose, tmp_path):
    """The preflight's rare-class advice judges what auto became: weighted, it suggests no
    second lever."""
    from types import SimpleNamespace

    from seg.diagnostics.fixes import ConfigFixes

    cfg = _folder(compose, _rare_folder(tmp_path, rare=True))
    built = parts.prepare(cfg)
    resolved = built.resolved(cfg)
    assert resolved["loss"]["class_weights"] == "median_frequency"
    assert resolved["trainer"]["steps_per_epoch"] == recipe.MIN_EPOCH_STEPS
    assert cfg["loss"]["class_weights"] == "auto"  # the user's tree is not changed
    advice = ConfigFixes(resolved).rare_classes(SimpleNamespace(loss=SimpleNamespace(
        kind="ce_dice")))
    assert "already" in advice and "class_weights=" not in advice


def test_a_run_with_the_defaults_prints_and_records_what_auto_became(tmp_path):
    """scripts/train.py with the defaults on a folder of 8 pairs, a class at 0.03%: weights,
    the step floor (4 training images in batches of 2), the whole validation split (cheap)."""
    masks = {}
    for i in range(8):
        m = np.zeros((96, 128), np.uint8)
        m[:, 64:] = 1
        m[10:12, 10:12] = 2
        masks[f"s{i}"] = m
    root = write_folder_dataset(tmp_path / "ds", masks)
    out = tmp_path / "run"
    done = subprocess.run(
        [sys.executable, "scripts/train.py", "data=folder", f"data.root={root}",
         "data.num_classes=3", "data.image_size=32", "data.val_fraction=0.5",
         "trainer.batch_size=2", "trainer.epochs=1", "trainer.verbose=0",
         "model.depth=2", "diagnostics.preflight=warn", "logging.num_panels=1",
         f"hydra.run.dir={out}"], cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["auto"]["loss.class_weights"] == "median_frequency"
    assert metrics["auto"]["trainer.steps_per_epoch"] == recipe.MIN_EPOCH_STEPS
    assert metrics["steps_per_epoch"] == recipe.MIN_EPOCH_STEPS
    assert metrics["auto"]["trainer.validation_images"] is None
    assert metrics["history"]["loss"] and metrics["class_weights"][2] > metrics["class_weights"][0]
    written = json.loads((out / "config.json").read_text())
    assert written["loss"]["class_weights"] == "auto"  # what the user asked for, kept
    assert written["computed"]["auto"] == metrics["auto"]
    for key in ("loss.class_weights=auto", "trainer.steps_per_epoch=auto"):
        assert key in done.stdout, done.stdout[-3000:]
