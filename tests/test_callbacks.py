"""seg.callbacks: the collapse monitor, the prediction panels and the throughput meter, on
tiny models in real model.fit calls."""

import json

import keras
import numpy as np
import pytest
from PIL import Image

from seg import callbacks
from seg import monitor as monitor_mod
from seg import panels as panels_mod

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
    monitor = monitor_mod.CollapseMonitor((X, Y), log_dir=tmp_path, class_names=["bg", "fg"],
                                        grace_epochs=0)
    _constant_model().fit(X, Y, epochs=2, verbose=0, callbacks=[monitor])
    summary = monitor.summary()
    assert summary["constant_output"] is True
    assert any(a["alarm"].startswith("constant output") for a in summary["alarms"])
    assert summary["final_output_stats"]["majority_share"] == pytest.approx(1.0)


def test_the_monitor_stays_quiet_on_a_model_that_learns(tmp_path):
    keras.utils.set_random_seed(0)  # the same start in any order of the tests (xdist)
    monitor = monitor_mod.CollapseMonitor((X, Y), log_dir=tmp_path, grace_epochs=1)
    _learning_model().fit(X, Y, epochs=30, verbose=0, callbacks=[monitor])
    assert monitor.summary()["constant_output"] is False
    assert monitor.summary()["alarms"] == [], monitor.summary()["alarms"]


def test_the_monitor_state_survives_a_round_trip(tmp_path):
    monitor = monitor_mod.CollapseMonitor((X, Y), log_dir=tmp_path, grace_epochs=0)
    _constant_model().fit(X, Y, epochs=1, verbose=0, callbacks=[monitor])
    again = monitor_mod.CollapseMonitor((X, Y), log_dir=tmp_path)
    again.set_state(json.loads(json.dumps(monitor.get_state())))
    assert again.get_state() == json.loads(json.dumps(monitor.get_state()))


def test_panels_are_written_every_epoch_with_the_epoch_in_the_name(tmp_path):
    panels = panels_mod.PredictionPanels((X, Y), num_images=2, every=1, log_dir=tmp_path / "tb",
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


def _tags_and_steps(log_dir):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    acc = EventAccumulator(str(log_dir), size_guidance={"tensors": 0})
    acc.Reload()
    return {tag: [e.step for e in acc.Tensors(tag)] for tag in acc.Tags()["tensors"]}


def test_epoch_scalars_use_seg_tags_at_the_epochs_number_without_duplicates(tmp_path):
    model = _learning_model()
    model.compile(optimizer=keras.optimizers.Adam(0.01),
                  loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
                  metrics=[keras.metrics.MeanIoU(2, sparse_y_pred=False, name="mean_iou"),
                           keras.metrics.IoU(2, [1], sparse_y_pred=False, name="iou_1")])
    scalars = callbacks.EpochScalars(tmp_path, class_names=["bg", "road/sign"])
    model.fit(X, Y, epochs=2, validation_data=(X, Y), verbose=0, callbacks=[scalars])
    train, val = _tags_and_steps(tmp_path / "train"), _tags_and_steps(tmp_path / "validation")
    assert train == {"IoU/mean": [1, 2], "IoU/per_class/road_sign": [1, 2], "Loss": [1, 2],
                     "learning_rate": [1, 2]}
    assert val == {"IoU/mean": [1, 2], "IoU/per_class/road_sign": [1, 2], "Loss": [1, 2]}


def test_epoch_tags_put_iou_and_loss_first_in_tensorboards_order():
    from seg.tags import epoch_tag

    tags = [epoch_tag(n, ["background", "car"]) for n in (
        "pixel_accuracy", "loss", "iou_1", "learning_rate", "majority_share", "mean_iou", "dice")]
    groups = sorted({t.split("/")[0] for t in tags})  # TensorBoard: by character code
    assert groups[:2] == ["IoU", "Loss"], groups
    assert "IoU/per_class/car" in tags and "diagnostics/majority_share" in tags


def test_progress_prints_a_short_epoch_line_and_progress_lines_when_piped():
    import io

    out = io.StringIO()
    progress = callbacks.Progress(total_epochs=2, every_s=0, stream=out, tty=False)
    model = _learning_model()
    model.fit(X, Y, batch_size=2, epochs=2, validation_data=(X, Y), verbose=0,
              callbacks=[progress])
    lines = out.getvalue().splitlines()
    epochs = [line for line in lines if line.startswith("epoch ")]
    assert len(epochs) == 2 and epochs[1].startswith("epoch 2/2  loss ")
    assert " val " not in epochs[0] or len(epochs[0]) < 100  # short: no per-class figures
    assert "lr " in epochs[0] and epochs[0].endswith(" s")
    assert any(line.startswith("  epoch 1/2: training step 2/4") for line in lines), lines
    assert "\r" not in out.getvalue()  # a pipe or a file gets whole lines


def test_progress_estimates_time_left_from_steady_steps_not_the_compiling_one():
    import io

    class Clock:  # seconds a test sets: no sleeping
        now = 0.0

        def __call__(self):
            return self.now

    clock, out = Clock(), io.StringIO()
    progress = callbacks.Progress(total_epochs=1, every_s=0, stream=out, tty=False, clock=clock)
    progress.set_params({"steps": 100, "epochs": 1})
    progress.on_epoch_begin(0)
    clock.now = 60.0  # the first step: tracing and compiling
    progress.on_train_batch_end(0)
    assert "left in the epoch" not in out.getvalue()  # no steady step measured yet
    for batch in range(1, 11):  # then 0.5 s a step
        clock.now += 0.5
        progress.on_train_batch_end(batch)
    last = out.getvalue().splitlines()[-1]
    # 89 steps left at 0.5 s: 44 s (the old estimate, 65 s / 11 steps x 89, said 526 s)
    assert last.endswith("training step 11/100, 65 s, about 44 s left in the epoch"), last
    assert progress.seconds_left(11, 100) == 44.5
    clock.now += 30.0  # one slow step (a checkpoint, another process): the median holds
    progress.on_train_batch_end(11)
    assert progress.seconds_left(12, 100) == 44.0
    clock.now += 2.0  # steps_per_execution: four steps in one call, 0.5 s each
    progress.on_train_batch_end(15)
    assert progress.seconds_left(16, 100) == 42.0


def test_progress_redraws_in_place_on_a_terminal():
    import io

    out = io.StringIO()
    progress = callbacks.Progress(total_epochs=1, every_s=0, stream=out, tty=True)
    progress._shown = -1e9
    _learning_model().fit(X, Y, batch_size=2, epochs=1, verbose=0, callbacks=[progress])
    text = out.getvalue()
    assert text.count("\n") == 1 and "\r" in text and text.rstrip().endswith(" s")


def test_a_collapse_the_preflight_proved_is_bannered_from_the_first_panel(tmp_path):
    import keras as k

    inputs = k.Input((16, 16, 3))
    head = k.layers.Conv2D(1, 1, activation="sigmoid", name="head")(inputs)
    model = k.Model(inputs, head)
    model.compile("adam", loss="categorical_crossentropy")  # the classic yellow image
    monitor = monitor_mod.SegmentationMonitor((X, Y[..., None]), log_dir=tmp_path,
                                            png_dir=tmp_path / "png", num_images=1)
    model.fit(X, Y[..., None], epochs=1, verbose=0, callbacks=[monitor])
    assert monitor.panels.proven.startswith("preflight: ")
    picture = np.asarray(Image.open(tmp_path / "png" / "epoch_001.png"))
    banner = picture[: picture.shape[0] // 4, 300]  # under the title (text sized to the width)
    assert (banner == (200, 0, 0)).all(axis=-1).any()  # the red banner row
    assert _tags_and_steps(tmp_path)["predictions"] == [1]  # titled "epoch 1", at step 1


def test_class_tags_are_safe_and_never_shared():
    from seg.tags import class_tags

    assert class_tags(["road sign", "\u9053\u8def", "car/truck"]) == [
        "road sign", "\u9053\u8def", "car_truck"]  # readable; no "/" to open a sub-group
    assert class_tags(["a/b", "a_b", "c"]) == ["a_b_0", "a_b_1", "c"]  # never one tag for two
