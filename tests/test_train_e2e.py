"""End-to-end: train briefly, then read back what a user would look at."""

import json
import os
import subprocess
import sys

import keras
import numpy as np
import pytest
import tensorflow as tf
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from conftest import ROOT, TINY
from seg.metrics import confusion_matrix
from seg.train import prepare, run

# A short recipe that learns all four classes in 150 steps with the default loss (CE + Dice).
SHORT = ("data.num_train=256", "data.image_size=48", "trainer.batch_size=16", "trainer.epochs=6",
         "trainer.steps_per_epoch=25", "trainer.schedule=constant")


def events(folder):
    acc = EventAccumulator(str(folder), size_guidance={"tensors": 0})
    acc.Reload()
    return acc


def scalar_series(acc, tag):
    return [(e.step, float(tf.make_ndarray(e.tensor_proto))) for e in acc.Tensors(tag)]


def constant_baseline_miou(val_ds, num_classes):
    """mIoU of predicting the majority class everywhere (Keras' mean over present classes)."""
    cm = 0
    for _, y in val_ds:
        y = y.numpy()
        cm = cm + confusion_matrix(y, np.zeros_like(y), num_classes, 255)
    tp, true, pred = np.diag(cm), cm.sum(1), cm.sum(0)
    present = (true + pred) > 0
    return float((tp / np.maximum(true + pred - tp, 1))[present].mean())


@pytest.mark.slow
@pytest.mark.parametrize("decoder", ["upsample", "deconv"])
def test_train_each_decoder_and_read_everything_back(tiny, tmp_path, decoder):
    cfg = tiny(f"+decoder={decoder}", *SHORT)
    out = tmp_path / f"decoder={decoder}"
    returned = run(cfg, out, run_name=f"decoder={decoder}")

    saved = json.loads((out / "metrics.json").read_text())
    assert saved == json.loads(json.dumps(returned, default=float))
    assert saved["decoder"] == decoder and saved["epochs_completed"] == 6
    assert len(saved["val_iou_per_class"]) == 4
    assert 0 <= saved["val_pixel_accuracy"] <= 1
    # a correct config raises no alarm
    assert saved["diagnostics"]["constant_output"] is False
    assert saved["diagnostics"]["alarms"] == [], saved["diagnostics"]["alarms"]

    # the checkpoints reload with Keras' own loader and reproduce the recorded figure
    parts = prepare(cfg)
    for name in ("best.keras", "last.keras"):
        model = keras.saving.load_model(out / "checkpoints" / name)
        assert model.name == f"unet_{decoder}"
    result = model.evaluate(parts.val_ds, return_dict=True, verbose=0)
    best = keras.saving.load_model(out / "checkpoints" / "best.keras")
    best_result = best.evaluate(parts.val_ds, return_dict=True, verbose=0)
    assert best_result["mean_iou"] == pytest.approx(saved["val_mean_iou"], abs=1e-5)
    assert best_result["mean_iou"] >= result["mean_iou"] - 1e-6

    # the trained model beats a constant prediction by a wide margin
    baseline = constant_baseline_miou(parts.val_ds, 4)
    assert saved["val_mean_iou"] > baseline + 0.2, (saved["val_mean_iou"], baseline)

    # TensorBoard's own reader: one point per epoch, train and validation, panels as images
    train, val = events(out / "tb" / "train"), events(out / "tb" / "validation")
    for acc in (train, val):  # at the epoch's number, from 1, as the panels' titles
        steps = [s for s, _ in scalar_series(acc, "IoU/mean")]
        assert steps == list(range(1, 7))
        assert {"Loss", "IoU/per_class/background", "IoU/per_class/triangle"} <= set(
            acc.Tags()["tensors"])
        assert not [t for t in acc.Tags()["tensors"] if t.startswith(("epoch_", "evaluation_"))]
    assert len(scalar_series(train, "learning_rate")) == 6
    assert [s for s, _ in scalar_series(val, "diagnostics/majority_share")] == list(range(1, 7))
    images = [e.step for e in val.Tensors("predictions")]
    assert images == list(range(1, 7))  # the panel titled "epoch 6" is at step 6
    assert sorted(p.name for p in (out / "panels").glob("*.png"))[-1] == "epoch_006.png"
    assert (out / "diagnostics" / "preflight.txt").read_text().count("[  ERROR]") == 0


def _script(*args, timeout=600):
    return subprocess.run([sys.executable, "scripts/train.py", *args], cwd=ROOT,
                          capture_output=True, text=True, timeout=timeout)


@pytest.mark.slow
def test_yellow_image_experiment_is_refused_then_caught_when_forced(tmp_path):
    small = (*TINY, "trainer.steps_per_epoch=4")
    refused = _script("+experiment=yellow_image", *small, f"hydra.run.dir={tmp_path / 'a'}")
    assert refused.returncode == 2, refused.stderr[-2000:]
    assert "one output channel trained with categorical_crossentropy" in refused.stderr
    assert "diagnostics.preflight=warn" in refused.stderr and "Traceback" not in refused.stderr
    assert not (tmp_path / "a" / "checkpoints").exists()

    forced = _script("+experiment=yellow_image", "diagnostics.preflight=warn", *small,
                     f"hydra.run.dir={tmp_path / 'b'}")
    assert forced.returncode == 4, forced.stderr[-2000:]  # finished, collapsed
    last = forced.stdout.strip().splitlines()[-2:]  # the cause, then the fix in config keys
    assert last[0].startswith("seg: COLLAPSED (the 'yellow image'): constant output"), last
    assert last[1].startswith("seg:   fix: model.out_channels=null"), last
    metrics = json.loads((tmp_path / "b" / "metrics.json").read_text())
    assert metrics["diagnostics"]["constant_output"] is True
    assert any("constant output" in a["alarm"] for a in metrics["diagnostics"]["alarms"])
    assert metrics["diagnostics"]["preflight"]["errors"] >= 1
    assert (tmp_path / "b" / "panels" / "epoch_003.png").exists()
    val = events(tmp_path / "b" / "tb" / "validation")
    text = [tf.make_ndarray(e.tensor_proto).item().decode() for e in val.Tensors("diagnostics/alarms")]
    assert "constant output" in text[-1]


@pytest.mark.slow
def test_a_collapsing_learning_rate_is_caught_and_can_stop_the_run(tmp_path):
    # whether lr=100 collapses the output depends on TensorFlow's threads (the order of its
    # sums): it does with TensorFlow's default, which conftest's one thread per op is not
    env = {k: v for k, v in os.environ.items() if k != "TF_NUM_INTRAOP_THREADS"}
    done = subprocess.run(
        [sys.executable, "scripts/train.py", *TINY, "trainer.learning_rate=100.0",
         "trainer.schedule=constant", "trainer.epochs=6", "trainer.steps_per_epoch=8",
         "diagnostics.stop_on_collapse=true", "logging.panels_every=0",
         f"hydra.run.dir={tmp_path / 'run'}"],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=900)
    assert (tmp_path / "run" / "metrics.json").is_file(), done.stdout[-3000:] + done.stderr[-2000:]
    metrics = json.loads((tmp_path / "run" / "metrics.json").read_text())
    alarms = [a["alarm"] for a in metrics["diagnostics"]["alarms"]]
    assert any(a.startswith(("constant output", "non-finite")) for a in alarms), alarms
    assert metrics["epochs_completed"] < 6
