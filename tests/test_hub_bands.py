"""keras-hub backbones as encoders and images of any number of bands (issue 19).

Backbones are built from seg's small configs with random weights: offline, no preset download.
"""

import json
import os
import subprocess
import sys

import keras
import numpy as np
import pytest
from PIL import Image

from conftest import ROOT
from seg.data import DataError
from seg.data.folder import read_image
from seg.models import build_model
from seg.models.encoders import adapt_kernel, transfer_weights
from seg.train import check_data, run

if os.environ.get("CI"):  # the dev extra installs keras-hub: in CI its absence is a failure
    import keras_hub
else:
    keras_hub = pytest.importorskip("keras_hub")

from seg.models.hub import SMALL, HubError, hub_encoder  # noqa: E402

FAMILIES = list(SMALL)  # ResNet, EfficientNet, CSPNet, MiT
DECODERS = ["upsample", "deconv", "pixelshuffle"]


@pytest.mark.slow
@pytest.mark.parametrize("family", FAMILIES)
@pytest.mark.parametrize("decoder", DECODERS)
def test_every_family_and_decoder_builds_trains_and_round_trips(tmp_path, family, decoder):
    model = build_model(num_classes=3, in_channels=3, encoder=f"hub:{family}",
                        encoder_args="small", decoder=decoder, fixed_size=48)
    fixed = model.input_shape[1]
    h, w = (fixed, fixed) if fixed else (45, 37)  # odd sizes where the backbone takes any
    assert family != "MiTBackbone" or fixed == 48
    x = np.random.default_rng(0).random((2, h, w, 3)).astype("float32")
    y = np.random.default_rng(1).integers(0, 3, (2, h, w))
    assert model(x).shape == (2, h, w, 3)
    model.compile(optimizer="adam", loss=keras.losses.SparseCategoricalCrossentropy(
        from_logits=True), run_eagerly=True)  # one step: tracing it would cost more
    before = [v.numpy().copy() for v in model.trainable_variables[:3]]
    assert np.isfinite(model.train_on_batch(x, y))
    assert any(not np.allclose(a, v.numpy()) for a, v in zip(before, model.trainable_variables))
    path = tmp_path / "m.keras"
    model.save(path)
    again = keras.saving.load_model(path, safe_mode=True, compile=False)
    np.testing.assert_allclose(again(x), model(x), atol=1e-5)


def test_skips_are_taken_at_their_measured_strides():
    # MiT names its stride-4 map "P1": the stride is measured, not read off the name
    enc = hub_encoder("hub:MiTBackbone", args="small", size=64)
    assert enc.strides == [4, 8, 16, 32] and enc.levels == 5
    enc = hub_encoder("hub:EfficientNetBackbone", args="small")
    assert enc.strides == [2, 4, 8, 16, 32]
    x = keras.Input((64, 64, 3))
    deepest, skips = enc(x)
    assert skips[0] is None and [s.shape[1] for s in skips[1:]] == [32, 16, 8, 4]
    assert deepest.shape[1] == 2


@pytest.mark.parametrize("bands", [1, 6])
def test_an_adapted_first_layer_gives_the_original_output_on_a_band_copy(bands):
    """N < 3: a grey image as N copies gives the RGB model's output on grey RGB; N = 6: the
    RGB image twice gives the RGB model's output."""
    cls = keras_hub.models.ResNetBackbone
    rgb_model = cls(**SMALL["ResNetBackbone"], image_shape=(None, None, 3))
    banded = cls(**SMALL["ResNetBackbone"], image_shape=(None, None, bands))
    adapted = transfer_weights(rgb_model, banded)
    assert len(adapted) == 1 and "conv1" in adapted[0]
    rng = np.random.default_rng(0)
    if bands == 1:
        grey = rng.random((1, 32, 32, 1)).astype("float32")
        rgb, x = np.repeat(grey, 3, -1), grey
    else:
        rgb = rng.random((1, 32, 32, 3)).astype("float32")
        x = np.concatenate([rgb, rgb], -1)
    np.testing.assert_allclose(banded(x), rgb_model(rgb), rtol=1e-4, atol=1e-4)


def test_adapt_kernel_rules():
    k = np.arange(2 * 3 * 4, dtype=np.float32).reshape(1, 2, 3, 4)
    assert adapt_kernel(k, 1).shape == (1, 2, 1, 4)
    np.testing.assert_allclose(adapt_kernel(k, 1)[..., 0, :], k.sum(axis=2)[:, :])
    np.testing.assert_allclose(adapt_kernel(k, 2).sum(axis=2), k.sum(axis=2))
    four = adapt_kernel(k, 4)
    np.testing.assert_allclose(four[..., 3, :], k[..., 0, :] * 0.75)
    np.testing.assert_allclose(adapt_kernel(np.array([1.0, 2.0, 6.0]), 5), [3.0] * 5)


def test_pretrained_keras_application_is_adapted_to_n_bands_from_a_local_file(tmp_path):
    base = keras.applications.MobileNetV2(include_top=False, weights=None,
                                          input_shape=(None, None, 3))
    path = tmp_path / "mnv2.weights.h5"
    base.save_weights(path)
    model = build_model(num_classes=2, in_channels=5, encoder="mobilenet_v2",
                        encoder_weights=str(path))
    assert any("Conv1/kernel" in n and "5 band" in n for n in model.seg_notes), model.seg_notes
    assert model(np.zeros((1, 40, 40, 5), "float32")).shape == (1, 40, 40, 2)


def test_hub_refusals_name_what_to_do():
    with pytest.raises(HubError, match="model.encoder_args"):
        hub_encoder("hub:ResNetBackbone")
    with pytest.raises(HubError, match="no pretrained"):
        hub_encoder("hub:ResNetBackbone", weights="pretrained", args="small")
    with pytest.raises(HubError, match="not a keras-hub preset.*similar presets: resnet_50_imagenet"):
        hub_encoder("hub:resnet_51_imagenet")
    with pytest.raises(HubError, match="model.encoder_args for ResNetBackbone"):
        hub_encoder("hub:ResNetBackbone", args={"block_type": "nope"})


# --- images of any number of bands -------------------------------------------------------

def _band_dataset(root, bands: int, kind: str, n: int = 8, size=(36, 44)):
    """n pairs of `bands`-band images whose band 0 shows the mask (class 1 brighter)."""
    (root / "images").mkdir(parents=True)
    (root / "masks").mkdir()
    rng = np.random.default_rng(bands)
    for i in range(n):
        mask = np.zeros(size, np.uint8)
        y, x = rng.integers(4, size[0] - 14), rng.integers(4, size[1] - 14)
        mask[y:y + 10, x:x + 10] = 1
        image = rng.normal(1000, 50, (*size, bands)) + 2000.0 * mask[..., None]
        image = image.astype(np.uint16 if kind != "npy" else np.float32)
        if kind == "npy":
            np.save(root / "images" / f"p{i}.npy", image)
        elif kind == "tif":
            import tifffile
            tifffile.imwrite(root / "images" / f"p{i}.tif", np.moveaxis(image, -1, 0))  # planar
        else:  # a 16-bit single-band PNG
            Image.fromarray(image[..., 0]).save(root / "images" / f"p{i}.png")
        Image.fromarray(mask).save(root / "masks" / f"p{i}.png")
    return root


def _band_cfg(compose, root, bands, *extra):
    return compose("logging.num_panels=2", "trainer.verbose=0", "data=folder", f"data.root={root}", "data.num_classes=2", f"data.channels={bands}",
                "data.image_size=32", "trainer.epochs=2", "trainer.batch_size=4",
                "diagnostics.preflight=warn", "logging.panels_every=1", *extra)


@pytest.mark.slow
@pytest.mark.parametrize("bands,kind", [(1, "png"), (4, "npy"), (13, "tif")])
def test_n_band_data_trains_end_to_end_and_predicts(compose, tmp_path, bands, kind):
    root = _band_dataset(tmp_path / "ds", bands, kind)
    out = tmp_path / "run"
    cfg = _band_cfg(compose, root, bands)
    result = run(cfg, out, run_name=f"bands={bands}")
    assert result["epochs_completed"] == 2 and np.isfinite(result["val_mean_iou"])
    assert result["channels"] == bands and len(result["band_stats"]["mean"]) == bands
    model = keras.saving.load_model(out / "checkpoints" / "best.keras", safe_mode=True)
    assert model.input_shape[-1] == bands
    norm = model.get_layer("band_normalization")  # the training split's statistics, inside
    first = read_image(str(next((root / "images").iterdir())), bands, raw=True)
    assert first.dtype == np.float32 and first.max() > 255  # the file's own 16-bit values
    mean = np.asarray(norm.mean).ravel()
    assert mean.shape == (bands,) and abs(mean[0] - 1000) < 1500  # raw scale, not [0, 1]
    assert (out / "panels" / "epoch_002.png").is_file()
    pred = subprocess.run([sys.executable, "scripts/predict.py", str(out), str(root / "images"),
                           "--out", str(tmp_path / "pred")], cwd=ROOT, capture_output=True,
                          text=True, timeout=300)
    assert pred.returncode == 0, pred.stderr
    assert len(list((tmp_path / "pred").glob("*_mask.png"))) == 8
    exported = subprocess.run([sys.executable, "scripts/export.py", str(out), "--out",
                               str(tmp_path / "export")], cwd=ROOT, capture_output=True,
                              text=True, timeout=300)
    assert exported.returncode == 0, exported.stderr
    info = json.loads((tmp_path / "export" / "export.json").read_text())
    assert info["input"].startswith(f"float32 [batch, height, width, {bands}]")


@pytest.mark.slow
def test_hub_encoder_on_four_bands_in_the_pipeline(tiny, tmp_path):
    out = tmp_path / "run"
    cfg = tiny("model.encoder=hub:CSPNetBackbone", "model.encoder_args=small",
               "data.channels=4", "+decoder=deconv", "trainer.epochs=1",
               "diagnostics.preflight=warn")
    result = run(cfg, out, run_name="hub")
    assert result["encoder"] == "hub:CSPNetBackbone" and np.isfinite(result["val_mean_iou"])
    text = (out / "diagnostics" / "preflight.txt").read_text()
    assert "keras-hub CSPNetBackbone" in text


def test_the_audit_names_a_file_with_the_wrong_band_count(compose, tmp_path):
    root = _band_dataset(tmp_path / "ds", 4, "npy", n=6)
    np.save(root / "images" / "p3.npy", np.zeros((36, 44, 3), np.float32))
    report = check_data(compose("data=folder", f"data.root={root}", "data.num_classes=2",
                                "data.channels=4"), progress=False)
    text = report.text()
    assert "p3.npy: 3 band(s), data.channels=4" in text, text
    assert "band statistics" in text


def test_band_counts_and_planar_stacks_are_read(tmp_path):
    a = np.random.default_rng(0).random((5, 12, 10)).astype(np.float32)  # planar [C, H, W]
    np.save(tmp_path / "x.npy", a)
    got = read_image(str(tmp_path / "x.npy"), 5, raw=True)
    np.testing.assert_array_equal(got, np.moveaxis(a, 0, -1))
    with pytest.raises(DataError, match="x.npy: 5 band"):
        read_image(str(tmp_path / "x.npy"), 4, raw=True)
    Image.fromarray(np.zeros((8, 8, 4), np.uint8), "RGBA").save(tmp_path / "rgba.png")
    assert read_image(str(tmp_path / "rgba.png"), 4).shape == (8, 8, 4)


def test_bad_band_and_encoder_settings_are_refused(compose, tmp_path):
    from seg.config import ConfigError, check

    cfg = compose("model.encoder=hub:", "data.channels=4", "model.encoder_args=[1]")
    with pytest.raises(ConfigError) as e:
        check(cfg)
    text = str(e.value)
    assert "model.encoder='hub:'" in text and "model.encoder_args=[1]" in text
    check(compose("model.encoder=unet", "model.encoder_args=small"))  # a sweep may mix encoders
    cfg = compose("model.encoder=hub:ResNetBackbone", "model.encoder_weights=imagenet")
    with pytest.raises(ConfigError, match="imagenet is for Keras applications"):
        check(cfg)


def test_a_missing_extra_is_refused_with_the_pip_command(monkeypatch):
    import seg_hydra.errors as errors

    monkeypatch.setitem(errors.PLUGINS, ("sweep", "optuna"),
                        ("hydra_plugins.not_installed_here", "optuna"))
    text = errors.missing_plugin(["+sweep=optuna", "seed=1"])
    assert text and 'pip install -e ".[optuna]"' in text and "+sweep=optuna" in text
    assert errors.missing_plugin(["seed=1"]) is None


def test_a_local_preset_folder_loads_offline_with_its_weights_and_preprocessing(tmp_path):
    from seg.models import encoder_of

    source = keras_hub.models.ResNetBackbone(**SMALL["ResNetBackbone"])
    preset = tmp_path / "my_resnet"
    source.save_to_preset(str(preset))
    keras_hub.layers.ResNetImageConverter(scale=[1 / 58.4, 1 / 57.1, 1 / 57.4],
                                          offset=[-2.1, -2.0, -1.8]).save_to_preset(str(preset))
    model = build_model(num_classes=2, in_channels=3, encoder="hub:my_resnet",
                        encoder_weights=str(preset))
    loaded = encoder_of(model).backbone
    for a, b in zip(source.weights, loaded.weights):
        np.testing.assert_array_equal(a.numpy(), b.numpy())
    prep = model.get_layer("my_resnet_preprocess")  # pixels 0..255: x * scale + offset
    np.testing.assert_allclose(prep.scale, [255 / 58.4, 255 / 57.1, 255 / 57.4], rtol=1e-6)
    assert any("preprocessing" in n for n in model.seg_notes)
    # four bands: the preset's first layer adapted, the preprocessing averaged over RGB
    model4 = build_model(num_classes=2, in_channels=4, encoder="hub:my_resnet",
                         encoder_weights=str(preset))
    assert any("repeated" in n and "4 band" in n for n in model4.seg_notes), model4.seg_notes
    assert model4(np.zeros((1, 33, 35, 4), "float32")).shape == (1, 33, 35, 2)


def test_a_local_weights_file_loads_into_a_hub_class_offline(tmp_path):
    from seg.models import encoder_of

    source = keras_hub.models.EfficientNetBackbone(**SMALL["EfficientNetBackbone"])
    path = tmp_path / "effnet.weights.h5"
    source.save_weights(path)
    model = build_model(num_classes=2, in_channels=1, encoder="hub:EfficientNetBackbone",
                        encoder_args="small", encoder_weights=str(path))
    loaded = encoder_of(model).backbone
    assert loaded.input_shape[-1] == 1  # the first layer adapted to one band
    for a, b in zip(source.weights[1:], loaded.weights[1:]):
        np.testing.assert_array_equal(a.numpy(), b.numpy())
    np.testing.assert_allclose(loaded.weights[0].numpy(),
                               source.weights[0].numpy().sum(axis=2, keepdims=True), rtol=1e-6)


@pytest.mark.slow
def test_the_encoder_list_names_families_presets_and_strides():
    from seg.models import catalog

    table, note = catalog.rows("efficientnet")
    names = {r["encoder"]: r for r in table}
    assert note is None and "efficientnet_b0" in names
    assert names["hub:EfficientNetBackbone"]["strides"] == [2, 4, 8, 16, 32]
    assert names["hub:efficientnet_b0_ra_imagenet"]["parameters"] > 1_000_000
    text = catalog.text(table, note)
    assert "hub:efficientnet_b0_ra_imagenet" in text and "model.encoder=NAME" in text
    listed = subprocess.run([sys.executable, "scripts/train.py", "model.encoder=list"], cwd=ROOT,
                            capture_output=True, text=True, timeout=300)
    assert listed.returncode == 0 and "hub:MiTBackbone" in listed.stdout, listed.stderr
