"""Every encoder with every decoder: sizes, a training step, .keras round trips; initialisers."""

import json

import keras
import numpy as np
import pytest

from seg.losses import SegmentationLoss
from seg.models import ICNR, BACKBONES, DepthToSpace, build_model, encoder_of, count_flops
from seg.train import prepare, run

ENCODERS = ["unet", *BACKBONES]
DECODERS = ["upsample", "deconv", "pixelshuffle"]


@pytest.mark.slow
@pytest.mark.parametrize("encoder", ENCODERS)
@pytest.mark.parametrize("decoder", DECODERS)
def test_every_encoder_decoder_pair(tmp_path, encoder, decoder):
    model = build_model(num_classes=3, in_channels=3, encoder=encoder, decoder=decoder,
                        base_filters=4)
    for size in [(37, 45), (64, 32)]:  # odd and even
        assert tuple(model(np.zeros((1, *size, 3), np.float32)).shape) == (1, *size, 3)
    # Eager: tracing a ResNet-50 training graph costs ~30 s on a CPU; the traced path is
    # exercised by the end-to-end tests.
    model.compile(optimizer="adam", loss=SegmentationLoss("auto", num_classes=3), run_eagerly=True)
    x = np.random.default_rng(0).random((2, 40, 40, 3)).astype(np.float32)
    y = np.random.default_rng(1).integers(0, 3, (2, 40, 40))
    head = model.get_layer("head").kernel.numpy().copy()
    assert np.isfinite(model.train_on_batch(x, y))
    assert not np.array_equal(head, model.get_layer("head").kernel.numpy())
    path = tmp_path / "m.keras"
    model.save(path)
    again = keras.saving.load_model(path)
    np.testing.assert_allclose(np.asarray(again(x)), np.asarray(model(x)), atol=1e-4)


@pytest.mark.parametrize("encoder", list(BACKBONES))
def test_backbones_take_grayscale_and_any_size(encoder):
    model = build_model(num_classes=2, in_channels=1, encoder=encoder, base_filters=4)
    assert tuple(model(np.zeros((1, 33, 50, 1), np.float32)).shape) == (1, 33, 50, 2)


def test_icnr_pixel_shuffle_starts_without_checkerboard():
    x = np.random.default_rng(0).random((1, 6, 6, 5)).astype(np.float32)
    conv = keras.layers.Conv2D(3 * 4, 3, padding="same", kernel_initializer=ICNR(2))
    y = np.asarray(DepthToSpace(2)(conv(x)))
    assert y.shape == (1, 12, 12, 3)
    blocks = y.reshape(1, 6, 2, 6, 2, 3)
    np.testing.assert_allclose(blocks, np.broadcast_to(blocks[:, :, :1, :, :1], blocks.shape),
                               atol=1e-6)  # every 2x2 sub-pixel block is one value


def test_local_weights_file_loads_offline(tmp_path):
    donor = keras.applications.MobileNetV2(include_top=False, weights=None, input_shape=(None, None, 3))
    path = tmp_path / "mobilenet_v2.weights.h5"
    donor.save_weights(path)
    model = build_model(num_classes=2, in_channels=3, encoder="mobilenet_v2",
                        encoder_weights=str(path))
    got = {w.path.split("/", 1)[-1]: w.numpy() for w in encoder_of(model).weights}
    want = {w.path.split("/", 1)[-1]: w.numpy() for w in donor.weights}
    assert got.keys() <= want.keys() or len(got) == len(want)
    np.testing.assert_array_equal(encoder_of(model).get_layer("Conv1").kernel.numpy(),
                                  donor.get_layer("Conv1").kernel.numpy())
    with pytest.raises(ValueError, match="no such weights file"):
        build_model(num_classes=2, in_channels=3, encoder="resnet50", encoder_weights="nope.h5")


def test_unknown_encoder_and_decoder_are_named():
    with pytest.raises(ValueError, match="model.encoder='vgg'"):
        build_model(num_classes=2, in_channels=3, encoder="vgg")
    with pytest.raises(ValueError, match="decoder.name='transpose'"):
        build_model(num_classes=2, in_channels=3, decoder="transpose")


def test_frozen_encoder_trains_only_the_decoder():
    model = build_model(num_classes=2, in_channels=3, encoder="mobilenet_v2", freeze_encoder=True)
    frozen = {id(w) for w in encoder_of(model).weights}
    assert frozen and not frozen & {id(w) for w in model.trainable_weights}


def test_flops_are_counted_from_the_layers():
    model = build_model(num_classes=2, in_channels=1, depth=1, base_filters=2, norm="none",
                        decoder="deconv", kernel_size=2, input_size=8)
    # enc0: 3x3 1->2, 3x3 2->2 at 8x8; bottleneck at 4x4: 3x3 2->4, 4->4; deconv 2x2 4->2 from
    # 4x4; dec0: 3x3 (2+2)->2, 2->2 at 8x8; head 1x1 2->2 at 8x8
    expected = 2 * (64 * 9 * (1 * 2 + 2 * 2) + 16 * 9 * (2 * 4 + 4 * 4) + 16 * 4 * 4 * 2
                    + 64 * 9 * (4 * 2 + 2 * 2) + 64 * 2 * 2)
    assert count_flops(model) == expected


@pytest.mark.slow
def test_fine_tune_schedule_unfreezes_after_n_epochs(tiny, tmp_path):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
    base = ("model.encoder=mobilenet_v2", "model.freeze_encoder=true", "trainer.epochs=2",
            "trainer.steps_per_epoch=2", "logging.panels_every=0", "diagnostics.monitor=false")
    frozen = run(tiny(*base), tmp_path / "frozen")
    start = encoder_of(prepare(tiny(*base)).model).get_weights()
    last = encoder_of(keras.saving.load_model(tmp_path / "frozen" / "checkpoints" / "last.keras"))
    assert frozen["epochs_completed"] == 2 and not last.trainable
    assert all(np.array_equal(a, b) for a, b in zip(start, last.get_weights()))

    run(tiny(*base, "trainer.unfreeze_encoder_after=1"), tmp_path / "tuned")
    last = encoder_of(keras.saving.load_model(tmp_path / "tuned" / "checkpoints" / "last.keras"))
    assert last.trainable
    assert not all(np.array_equal(a, b) for a, b in zip(start, last.get_weights()))
    acc = EventAccumulator(str(tmp_path / "tuned" / "tb" / "train"), size_guidance={"tensors": 0})
    acc.Reload()
    assert [e.step for e in acc.Tensors("Loss")] == [1, 2]  # no duplicated steps
    saved = json.loads((tmp_path / "tuned" / "metrics.json").read_text())
    assert saved["epochs_completed"] == 2 and saved["encoder"] == "mobilenet_v2"


def test_backbone_batch_norms_follow_training_quickly():
    """Keras applications use momentum 0.99-0.999: a short run would validate with the initial
    statistics and predict one class everywhere (seen: 0.1958 mIoU, the constant score)."""
    model = build_model(num_classes=2, in_channels=3, encoder="mobilenet_v2")
    momenta = {layer.momentum for layer in encoder_of(model).layers
               if isinstance(layer, keras.layers.BatchNormalization)}
    assert momenta == {0.9}
