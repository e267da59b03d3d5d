"""The collapse monitor's verdict in a plain model.fit, and the one-channel explanations
measured against what Keras 3 really does.

Sound models trained for few steps per epoch must raise no collapse alarm (BatchNorm's lagging
moving statistics and a network still learning are notes, not collapses); every broken one
must raise one from epoch 1. Each "why" about one channel under a cross-entropy must say what
Keras does: whether the loss is 0, whether a gradient flows, whether the prediction stays put.
"""

import contextlib
import io

import numpy as np
import pytest
import tensorflow as tf
from keras import layers, ops

import keras
import seg

S = 32


def squares(n, seed):
    """Images with a bright square; the mask is the square (14% of the pixels)."""
    rng = np.random.default_rng(seed)
    masks = np.zeros((n, S, S), "int32")
    for m in masks:
        y, x = rng.integers(0, S - 12, 2)
        m[y:y + 12, x:x + 12] = 1
    images = np.repeat(masks[..., None], 3, -1).astype("float32") * 0.8
    return images + rng.normal(0, 0.05, images.shape).astype("float32"), masks


def body(inputs, norm=None):
    x = inputs
    for filters in (8, 16):
        x = layers.Conv2D(filters, 3, padding="same", use_bias=norm is None)(x)
        if norm == "batch":
            x = layers.BatchNormalization()(x)
        elif norm == "group":
            x = layers.GroupNormalization(4)(x)
        x = layers.ReLU()(x)
    return x


def sound(norm):
    inputs = keras.Input((S, S, 3))
    model = keras.Model(inputs, layers.Conv2D(2, 1, name="logits")(body(inputs, norm)))
    model.compile(keras.optimizers.Adam(1e-3),
                  loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    return model


def fit_watched(model, x, y, val, tmp_path, epochs=5):
    monitor = seg.SegmentationMonitor(val, log_dir=tmp_path, every=0)
    with contextlib.redirect_stdout(io.StringIO()) as out:
        model.fit(x, y, batch_size=8, epochs=epochs, verbose=0, callbacks=[monitor])
    return monitor, out.getvalue()


@pytest.mark.slow
@pytest.mark.parametrize("norm", ["batch", "group", None])
@pytest.mark.parametrize("steps", [4, 8, 64])
def test_no_collapse_alarm_on_sound_models_with_few_or_many_steps(norm, steps, tmp_path):
    keras.utils.set_random_seed(0)
    x, y = squares(8 * steps, 1)
    monitor, printed = fit_watched(sound(norm), x, y, squares(16, 99), tmp_path)
    assert monitor.alarms == [] and not monitor.constant_output, (monitor.alarms, printed)
    for note in monitor.collapse.notes:  # what looked like a collapse is named as what it is
        assert note["note"].startswith(("inference-mode lag", "still learning")), note


def test_a_batchnorm_lag_is_a_note_not_a_collapse(tmp_path):
    """Inference-mode one class, training-mode sound: the monitor compares the two."""
    keras.utils.set_random_seed(0)
    model = sound("batch")
    x, y = squares(32, 1)
    model.fit(x, y, batch_size=8, epochs=1, verbose=0)
    bn = next(layer for layer in model.layers if isinstance(layer, layers.BatchNormalization))
    bn.moving_mean.assign(bn.moving_mean + 50.0)  # moving statistics far behind the weights
    before = [v.numpy().copy() for v in model.non_trainable_variables]
    monitor = seg.SegmentationMonitor(squares(16, 99), log_dir=tmp_path, every=0,
                                      check_model=False)
    monitor.set_model(model)
    monitor.set_params({"epochs": 3})
    monitor.collapse.grace_epochs = 0
    with contextlib.redirect_stdout(io.StringIO()) as out:
        monitor.on_epoch_end(0, {"loss": 0.5})
    stats = monitor.collapse.last_stats
    assert stats["majority_share"] > 0.98, stats  # inference mode: one class
    assert monitor.alarms == [], monitor.alarms
    assert monitor.collapse.notes and "inference-mode lag" in monitor.collapse.notes[0]["note"]
    assert "BatchNormalization" in out.getvalue()
    assert all(np.array_equal(a, b.numpy()) for a, b in zip(before,
                                                            model.non_trainable_variables))


class SubclassedSoftmax(keras.Model):
    def __init__(self):
        super().__init__(name="subclassed_softmax")
        self.conv = layers.Conv2D(8, 3, padding="same", activation="relu")
        self.out = layers.Conv2D(1, 1)

    def call(self, x):
        return ops.softmax(self.out(self.conv(x)), axis=-1)


def _functional(head, loss):
    inputs = keras.Input((S, S, 3))
    x = body(inputs)
    for layer in head:
        x = layer(x)
    model = keras.Model(inputs, x)
    model.compile(keras.optimizers.Adam(1e-2), loss=loss)
    return model


def _pixels_one_class():
    inputs = keras.Input((S, S, 3))
    x = layers.Conv2D(1, 1)(body(inputs))
    x = layers.Activation("softmax")(layers.Reshape((S * S, 1))(x))
    model = keras.Model(inputs, x)
    model.compile("adam", loss="categorical_crossentropy")
    return model


BROKEN = [
    ("softmax over one channel, binary CE",
     lambda: _functional([layers.Conv2D(1, 1, activation="softmax")], "binary_crossentropy"),
     lambda y: y[..., None].astype("float32")),
    ("sigmoid, one channel, categorical CE",
     lambda: _functional([layers.Conv2D(1, 1, activation="sigmoid")],
                         "categorical_crossentropy"), lambda y: y[..., None].astype("float32")),
    ("softmax over one channel in a Lambda",
     lambda: _functional([layers.Conv2D(1, 1), layers.Lambda(lambda t: ops.softmax(t))],
                         "binary_crossentropy"), lambda y: y[..., None].astype("float32")),
    ("subclassed softmax over one channel",
     lambda: _compiled(SubclassedSoftmax(), "binary_crossentropy"),
     lambda y: y[..., None].astype("float32")),
    ("pixels x classes with n_classes=1", _pixels_one_class,
     lambda y: y.reshape(len(y), S * S, 1).astype("float32")),
]


def _compiled(model, loss):
    model.compile("adam", loss=loss)
    return model


@pytest.mark.slow
@pytest.mark.parametrize("name,factory,targets", BROKEN, ids=[b[0] for b in BROKEN])
def test_every_broken_model_is_alarmed_from_epoch_1(name, factory, targets, tmp_path):
    keras.utils.set_random_seed(0)
    x, y = squares(32, 1)
    vx, vy = squares(16, 99)
    monitor, printed = fit_watched(factory(), x, targets(y), (vx, targets(vy)), tmp_path,
                                   epochs=3)
    assert monitor.constant_output, (monitor.alarms, printed)
    assert monitor.alarms and monitor.alarms[0].epoch == 1, monitor.alarms
    assert not monitor.report.ok


# --- the explanations, measured -------------------------------------------------------

def _one_channel(activation, loss):
    keras.utils.set_random_seed(0)
    inputs = keras.Input((S, S, 3))
    model = keras.Model(inputs, layers.Conv2D(1, 1, activation=activation)(body(inputs)))
    model.compile(keras.optimizers.Adam(1e-2), loss=loss)
    return model


def _measure(model, x, y):
    """(initial loss, gradient norm, losses over 15 steps, predicted classes afterwards,
    outputs afterwards) of a one-channel model, or the exception fit raised."""
    fn = model.loss if not isinstance(model.loss, str) else keras.losses.get(model.loss)
    try:
        with tf.GradientTape() as tape:
            loss = tf.reduce_mean(fn(y, model(x, training=True)))
        grads = [g for g in tape.gradient(loss, model.trainable_variables) if g is not None]
        norm = float(tf.linalg.global_norm(grads)) if grads else 0.0
        history = model.fit(x, y, batch_size=8, epochs=15, verbose=0)
    except tf.errors.InvalidArgumentError as e:
        return None, None, None, None, e
    out = model.predict(x, verbose=0)
    threshold = 0.0 if model.layers[-1].activation.__name__ == "linear" else 0.5
    return float(loss), norm, history.history["loss"], out > threshold, out


CCE = "categorical_crossentropy"
# (head activation, loss, what the why must say and the measurement must show)
EXPLAINED = [
    ("softmax", "binary_crossentropy", ["prediction stays 1", "loss falls"]),
    ("softmax", CCE, ["prediction stays 1", "loss is 0", "gradient flows"]),
    ("softmax", "sparse_categorical_crossentropy", ["label 1 stops training"]),
    ("sigmoid", CCE, ["loss is 0", "gradient flows", "one class everywhere"]),
    (None, keras.losses.CategoricalCrossentropy(from_logits=True),
     ["loss is 0", "gradient flows", "one class everywhere"]),
    (None, CCE, ["loss is 0", "gradient is 0"]),
    ("sigmoid", "sparse_categorical_crossentropy", ["label 1 stops training"]),
]
WORDS = {"prediction stays 1": "stays 1", "loss falls": "the loss falls",
         "loss is 0": "loss is 0", "gradient flows": "differentiates",
         "gradient is 0": "the gradient is 0", "one class everywhere": "one class everywhere",
         "label 1 stops training": "label value"}


@pytest.mark.slow
@pytest.mark.parametrize("activation,loss,claims", EXPLAINED,
                         ids=[f"{a}-{getattr(b, 'name', b)}" for a, b, _ in EXPLAINED])
def test_each_one_channel_why_says_what_keras_really_does(activation, loss, claims):
    x, y = squares(16, 3)
    y = y[..., None].astype("float32")
    model = _one_channel(activation, loss)
    report = seg.diagnose(model, x, y)
    why = " ".join(f.why for f in report.errors if f.check in ("head", "head/loss"))
    assert why, str(report)
    for claim in claims:
        assert WORDS[claim] in why, (claim, why)
    loss0, gradient, losses, predicted, out = _measure(_one_channel(activation, loss), x, y)
    for claim in claims:
        if claim == "label 1 stops training":
            assert isinstance(out, tf.errors.InvalidArgumentError), out
            assert "label value of 1" in str(out)
        elif claim == "prediction stays 1":
            assert np.all(out == 1.0), (out.min(), out.max())
        elif claim == "loss falls":
            assert losses[-1] < losses[0], losses
        elif claim == "loss is 0":
            assert loss0 < 1e-6 and max(losses) < 1e-6, (loss0, losses)  # 0, or Keras' clip
        elif claim == "gradient flows":
            assert gradient > 1e-3, gradient
        elif claim == "gradient is 0":
            assert gradient == 0, gradient
        elif claim == "one class everywhere":
            assert predicted.all() or not predicted.any(), predicted.mean()
