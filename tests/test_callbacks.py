"""seg.callbacks: the collapse monitor, the prediction panels and the throughput meter, on
tiny models in real model.fit calls."""

import json

import keras
import numpy as np
import pytest
from PIL import Image

from seg import callbacks

rng = np.random.default_rng(0)
X = rng.random((8, 16, 16, 3)).astype(np.float32)
Y = (X[..., 0] > 0.5).astype(np.int32)  # two classes, about half each


def _constant_model():
    """Logits that ignore the image: background everywhere (the 'yellow image')."""
    inputs = keras.Input((16, 16, 3))
    zero = keras.layers.Lambda(lambda x: x[..., :1] * 0.0)(inputs)
    logits = keras.layers.Conv2D(2, 1, kernel_initializer="zeros",
                                 bias_initializer=keras.initializers.Constant([4.0, -4.0]),
                                 trainable=False)(zero)
    model = keras.Model(inputs, logits)
    model.compile(optimizer="adam", loss=keras.losses.SparseCategoricalCrossentropy(
        from_logits=True))
    return model


def _learning_model():
    inputs = keras.Input((16, 16, 3))
    x = keras.layers.Conv2D(8, 3, padding="same", activation="relu")(inputs)
    model = keras.Model(inputs, keras.layers.Conv2D(2, 1)(x))
    model.compile(optimizer=keras.optimizers.Adam(0.01), loss=keras.losses.
                  SparseCategoricalCrossentropy(from_logits=True))
    return model


def test_the_monitor_raises_constant_output_on_a_constant_model(tmp_path):
    monitor = callbacks.CollapseMonitor((X, Y), log_dir=tmp_path, class_names=["bg", "fg"],
                                        grace_epochs=0)
    _constant_model().fit(X, Y, epochs=2, verbose=0, callbacks=[monitor])
    summary = monitor.summary()
    assert summary["constant_output"] is True
    assert any(a["alarm"].startswith("constant output") for a in summary["alarms"])
    assert summary["final_output_stats"]["majority_share"] == pytest.approx(1.0)


def test_the_monitor_stays_quiet_on_a_model_that_learns(tmp_path):
    monitor = callbacks.CollapseMonitor((X, Y), log_dir=tmp_path, grace_epochs=1)
    _learning_model().fit(X, Y, epochs=30, verbose=0, callbacks=[monitor])
    assert monitor.summary()["constant_output"] is False
    assert monitor.summary()["alarms"] == [], monitor.summary()["alarms"]


def test_the_monitor_state_survives_a_round_trip(tmp_path):
    monitor = callbacks.CollapseMonitor((X, Y), log_dir=tmp_path, grace_epochs=0)
    _constant_model().fit(X, Y, epochs=1, verbose=0, callbacks=[monitor])
    again = callbacks.CollapseMonitor((X, Y), log_dir=tmp_path)
    again.set_state(json.loads(json.dumps(monitor.get_state())))
    assert again.get_state() == json.loads(json.dumps(monitor.get_state()))


def test_panels_are_written_every_epoch_with_the_epoch_in_the_name(tmp_path):
    panels = callbacks.PredictionPanels((X, Y), num_images=2, every=1, log_dir=tmp_path / "tb",
                                        png_dir=tmp_path / "png", class_names=["bg", "fg"])
    _learning_model().fit(X, Y, epochs=2, verbose=0, callbacks=[panels])
    files = sorted(p.name for p in (tmp_path / "png").glob("*.png"))
    assert files == ["epoch_001.png", "epoch_002.png"]
    picture = np.asarray(Image.open(tmp_path / "png" / "epoch_002.png"))
    assert picture.ndim == 3 and picture.shape[1] > 5 * 32


def test_throughput_counts_images_per_second(tmp_path):
    meter = callbacks.Throughput(batch_size=4)
    _learning_model().fit(X, Y, batch_size=4, epochs=2, verbose=0, callbacks=[meter])
    assert len(meter.rates) == 2 and meter.images_per_s() > 0
