"""Using a trained model: tiled prediction, scores, loading rules, evaluate, predict, export."""

import json
import subprocess
import sys

import numpy as np
import pytest

from conftest import ROOT


def _model(channels=3, classes=3, kernel=1):
    import keras

    keras.utils.set_random_seed(0)
    inputs = keras.Input((None, None, channels))
    return keras.Model(inputs, keras.layers.Conv2D(classes, kernel, padding="same")(inputs))


def test_tiled_prediction_equals_whole_image_for_a_pointwise_model():
    """A 1x1 convolution sees no context, so tiles blended by any weights must give exactly
    the whole-image probabilities: a wrong window, offset or normalisation shows here."""
    from seg.inference import predict_probs

    model = _model()
    x = np.random.default_rng(0).random((2, 77, 103, 3)).astype(np.float32)
    whole = predict_probs(model, x, from_logits=True)
    tiled = predict_probs(model, x, from_logits=True, tile=32, overlap=0.25, batch_size=3)
    assert tiled.shape == (2, 77, 103, 3)
    np.testing.assert_allclose(tiled, whole, atol=1e-5)
    np.testing.assert_allclose(whole.sum(-1), 1, atol=1e-5)


def test_tiled_prediction_of_a_unet_is_close_to_whole_and_flip_averages():
    from seg.inference import predict_probs
    from seg.models import build_model

    model = build_model(num_classes=3, in_channels=3, depth=2, base_filters=4)
    x = np.random.default_rng(1).random((1, 90, 70, 3)).astype(np.float32)
    whole = predict_probs(model, x, from_logits=True)
    tiled = predict_probs(model, x, from_logits=True, tile=48, overlap=0.5)
    assert np.abs(tiled - whole).mean() < 0.05  # only the context at tile borders differs
    flipped = predict_probs(model, x[:, :, ::-1], from_logits=True)[:, :, ::-1]
    np.testing.assert_allclose(predict_probs(model, x, from_logits=True, flip=True),
                               (whole + flipped) / 2, atol=1e-5)


def test_d4_test_time_augmentation_averages_the_eight_views():
    from seg.inference import predict_probs

    model = _model(kernel=3)  # a 3x3 kernel is not symmetric: every view differs
    x = np.random.default_rng(3).random((2, 20, 28, 3)).astype(np.float32)
    views = []
    for k in range(4):
        for mirror in (False, True):
            v = np.rot90(x, k, axes=(1, 2))
            v = v[:, :, ::-1] if mirror else v
            p = predict_probs(model, np.ascontiguousarray(v), from_logits=True)
            p = p[:, :, ::-1] if mirror else p
            views.append(np.rot90(p, -k, axes=(1, 2)))
    d4 = predict_probs(model, x, from_logits=True, tta="d4")
    assert d4.shape == (2, 20, 28, 3)
    assert np.abs(views[2] - views[0]).max() > 1e-3  # the views differ
    np.testing.assert_allclose(d4, np.mean(views, axis=0), atol=1e-5)
    with pytest.raises(ValueError, match="tta='d8'"):
        predict_probs(model, x, from_logits=True, tta="d8")


def test_scores_match_keras_mean_iou():
    from seg.inference import scores
    from seg.metrics import SegmentationMetric, confusion_matrix

    rng = np.random.default_rng(2)
    truth = rng.integers(0, 4, (3, 20, 20))
    truth[0, :5] = 255
    logits = rng.normal(size=(3, 20, 20, 4)).astype(np.float32)
    metric = SegmentationMetric(num_classes=4, ignore_index=255)
    metric.update_state(truth, logits)
    cm = confusion_matrix(truth, logits.argmax(-1), 4, 255)
    assert scores(cm)["mean_iou"] == pytest.approx(float(metric.result()), abs=1e-6)


def test_only_keras_files_load_and_errors_name_the_path(tmp_path):
    from seg import inference

    pickle_file = tmp_path / "model.h5"
    pickle_file.write_bytes(b"not a model")
    with pytest.raises(inference.LoadError, match="model.h5.*only .keras"):
        inference.load(pickle_file)
    broken = tmp_path / "broken.keras"
    broken.write_bytes(b"PK\x03\x04 truncated")
    with pytest.raises(inference.LoadError, match="broken.keras: cannot load"):
        inference.load(broken)
    with pytest.raises(inference.LoadError, match="no checkpoints"):
        inference.load(tmp_path)


def test_export_reloads_as_keras_and_saved_model_and_takes_raw_images(tmp_path):
    import keras
    import tensorflow as tf

    from seg import inference
    from seg.models import build_model

    model = build_model(num_classes=3, in_channels=3, depth=2, base_filters=4)
    model.save(tmp_path / "net.keras")
    info = inference.export(inference.load(tmp_path / "net.keras"), tmp_path / "export")
    raw = np.random.default_rng(3).integers(0, 256, (2, 37, 51, 3)).astype(np.uint8)
    expected = inference.predict_probs(model, raw / 255.0, from_logits=True)

    reloaded = keras.saving.load_model(info["keras"], safe_mode=True)
    out = reloaded(raw)
    np.testing.assert_allclose(np.asarray(out["probabilities"]), expected, atol=1e-5)
    loaded = tf.saved_model.load(info["saved_model"])  # keep a reference while serving
    served = loaded.serve(tf.constant(raw))
    np.testing.assert_allclose(served["probabilities"].numpy(), expected, atol=1e-5)
    assert served["labels"].dtype == tf.int32 and served["labels"].shape == (2, 37, 51)
    np.testing.assert_array_equal(served["labels"].numpy(), expected.argmax(-1))
    assert json.loads((tmp_path / "export" / "export.json").read_text())["class_names"] == [
        "class_0", "class_1", "class_2"]


@pytest.mark.slow
def test_predict_writes_index_masks_and_overlays_and_names_unreadable_files(tmp_path):
    from PIL import Image

    from seg import inference
    from seg.models import build_model

    model = build_model(num_classes=3, in_channels=3, depth=2, base_filters=4)
    model.save(tmp_path / "net.keras")
    inputs = tmp_path / "in"
    (inputs / "sub").mkdir(parents=True)
    rng = np.random.default_rng(4)
    images = {"a.png": (30, 40), "b.png": (30, 40), "sub/c.jpg": (50, 20)}
    for name, (h, w) in images.items():
        Image.fromarray(rng.integers(0, 256, (h, w, 3), dtype=np.uint8)).save(inputs / name)
    (inputs / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n not really")
    out = tmp_path / "out"
    done = subprocess.run([sys.executable, str(ROOT / "scripts" / "predict.py"),
                           str(tmp_path / "net.keras"), str(inputs), "--out", str(out),
                           "--batch-size", "2"], capture_output=True, text=True, cwd=ROOT)
    assert done.returncode == 1, done.stderr  # one file could not be read
    assert "broken.png" in done.stderr
    # its stdout is a pipe: plain lines, without the bar's colour codes and carriage returns
    assert "\x1b[" not in done.stdout + done.stderr and "\r" not in done.stdout, done.stdout
    assert done.stdout.splitlines()[-1].startswith("predict: 3 mask(s) and overlay(s) written")
    for name in images:
        stem = name.rsplit(".", 1)[0]
        mask = Image.open(out / f"{stem}_mask.png")
        assert mask.mode == "P" and mask.size == Image.open(inputs / name).size
        x = np.asarray(Image.open(inputs / name).convert("RGB"), np.float32)[None] / 255
        expected = inference.predict_probs(model, x, from_logits=True)[0].argmax(-1)
        np.testing.assert_array_equal(np.asarray(mask), expected)
        assert (out / f"{stem}_overlay.png").is_file()
    assert not (out / "broken_mask.png").exists()
