"""seg.diagnose and seg.SegmentationMonitor on Keras models that users wrote themselves.

The zoo: each broken model is a known way to get a flat or wrong prediction, and must be caught
by the right check with its own layer named; no sound model may raise an error.
"""

import numpy as np
import pytest
import tensorflow as tf
from keras import layers, ops

import keras
import seg

S = 32  # image side
RNG = np.random.default_rng(0)
IMAGES = RNG.random((12, S, S, 3)).astype("float32")
BINARY = (RNG.random((12, S, S)) > 0.6).astype("int32")
THREE = RNG.integers(0, 3, (12, S, S)).astype("int32")


def encoder_decoder(head, *, up=2, name=None, inputs=None):
    """A small conv net: two poolings, `up` x2 transposed convolutions, then `head` layers."""
    inputs = keras.Input((S, S, 3)) if inputs is None else inputs
    x = layers.Conv2D(8, 3, padding="same", activation="relu", name="enc1")(inputs)
    x = layers.MaxPooling2D(2, name="pool1")(x)
    x = layers.Conv2D(16, 3, padding="same", activation="relu", name="enc2")(x)
    x = layers.MaxPooling2D(2, name="pool2")(x)
    for i in range(up):
        x = layers.Conv2DTranspose(8, 2, strides=2, name=f"up{i + 1}")(x)
    for layer in head:
        x = layer(x)
    return keras.Model(inputs, x, name=name)


def compiled(model, loss):
    model.compile("adam", loss=loss)
    return model


def one_hot(masks, c):
    return np.eye(c, dtype="float32")[masks]


class SubclassedSigmoid(keras.Model):
    def __init__(self):
        super().__init__(name="my_subclassed_net")
        self.body = layers.Conv2D(8, 3, padding="same", activation="relu")
        self.out = layers.Conv2D(1, 1, activation="sigmoid")

    def call(self, x):
        return self.out(self.body(x))


def seed_model():
    """The classic report, Keras 3 version (the README's example)."""
    model = keras.Sequential([
        keras.Input((S, S, 3)),
        layers.Conv2D(32, 3, activation="relu", padding="same"), layers.MaxPooling2D(2),
        layers.Conv2D(128, 3, activation="relu", padding="same"), layers.MaxPooling2D(2),
        layers.Conv2DTranspose(128, 2, strides=2), layers.Conv2DTranspose(64, 2, strides=2),
        layers.Conv2D(1, 1, activation="sigmoid"), layers.Reshape((S, S))])
    return compiled(model, "categorical_crossentropy")


def dead_relu_model():
    inputs = keras.Input((S, S, 3))
    x = layers.Conv2D(8, 3, padding="same", activation="relu", name="early")(inputs)
    x = layers.Conv2D(8, 3, padding="same", activation="relu", name="dead",
                      bias_initializer=keras.initializers.Constant(-100.0))(x)
    x = layers.Conv2D(2, 1, name="logits")(x)
    return compiled(keras.Model(inputs, x),
                    keras.losses.SparseCategoricalCrossentropy(from_logits=True))


def thresholded_model():
    inputs = keras.Input((S, S, 3))
    x = layers.Conv2D(1, 3, padding="same", activation="sigmoid", name="prob")(inputs)
    x = layers.Lambda(lambda t: ops.round(t), name="threshold")(x)
    return compiled(keras.Model(inputs, x), "binary_crossentropy")


# (name, model factory, masks, check expected among the errors/warnings, words in its title)
BROKEN = [
    ("reshape drops the channel axis", seed_model, BINARY, "error", "class axis",
     ["the last layer `reshape", "drops the channel axis: categorical_crossentropy now",
      f"width ({S} values)"]),
    ("one sigmoid channel with categorical CE",
     lambda: compiled(encoder_decoder([layers.Conv2D(1, 1, activation="sigmoid", name="mask")]),
                      "categorical_crossentropy"), BINARY[..., None], "error", "head/loss",
     ["one output channel", "`mask`", "categorical_crossentropy"]),
    ("softmax over one channel",
     lambda: compiled(encoder_decoder([layers.Conv2D(1, 1, activation="softmax", name="out")]),
                      "binary_crossentropy"), BINARY[..., None], "error", "head",
     ["softmax over a single output channel", "`out`"]),
    ("a separate Softmax layer over one channel",
     lambda: compiled(encoder_decoder([layers.Conv2D(1, 1, name="conv_out"),
                                       layers.Softmax(name="probs")]), "binary_crossentropy"),
     BINARY[..., None], "error", "head", ["softmax over a single output channel", "`probs`"]),
    ("softmax probabilities into from_logits=True",
     lambda: compiled(encoder_decoder([layers.Conv2D(3, 1, activation="softmax", name="cls")]),
                      keras.losses.SparseCategoricalCrossentropy(from_logits=True)),
     THREE, "error", "from_logits", ["from_logits=true", "softmax in `cls`"]),
    ("logits into a probability loss",
     lambda: compiled(encoder_decoder([layers.Conv2D(3, 1, name="logits")]),
                      "sparse_categorical_crossentropy"), THREE, "error", "from_logits",
     ["logits fed to a loss with from_logits=false"]),
    ("output at half the masks' size",
     lambda: compiled(encoder_decoder([layers.Conv2D(2, 1, name="logits")], up=1),
                      keras.losses.SparseCategoricalCrossentropy(from_logits=True)),
     BINARY, "error", "output size", [f"the output is {S // 2}x{S // 2}", "(x0.5)"]),
    ("valid padding shrinks the output",
     lambda: compiled(keras.Sequential([
         keras.Input((S, S, 3)), layers.Conv2D(8, 3, activation="relu", name="valid1"),
         layers.Conv2D(8, 3, activation="relu", name="valid2"),
         layers.Conv2D(2, 1, name="logits")]),
         keras.losses.SparseCategoricalCrossentropy(from_logits=True)),
     BINARY, "error", "output size", [f"the output is {S - 4}x{S - 4}"]),
    ("class-index masks into categorical CE",
     lambda: compiled(encoder_decoder([layers.Conv2D(3, 1, activation="softmax", name="cls")]),
                      "categorical_crossentropy"), THREE, "error", "targets",
     ["class-index masks", "categorical_crossentropy"]),
    ("one-hot masks into sparse CE",
     lambda: compiled(encoder_decoder([layers.Conv2D(3, 1, name="logits")]),
                      keras.losses.SparseCategoricalCrossentropy(from_logits=True)),
     one_hot(THREE, 3), "error", "targets", ["one-hot masks"]),
    ("class-index masks into binary CE over 3 channels",
     lambda: compiled(encoder_decoder([layers.Conv2D(3, 1, activation="sigmoid", name="cls")]),
                      "binary_crossentropy"), THREE[..., None], "error", "targets",
     ["class-index masks", "binary_crossentropy"]),
    ("0/255 masks",
     lambda: compiled(encoder_decoder([layers.Conv2D(1, 1, name="logit")]),
                      keras.losses.BinaryCrossentropy(from_logits=True)),
     (BINARY * 255)[..., None], "error", "labels", ["[255]"]),
    ("labels beyond the channels",
     lambda: compiled(encoder_decoder([layers.Conv2D(3, 1, name="logits")]),
                      keras.losses.SparseCategoricalCrossentropy(from_logits=True)),
     RNG.integers(0, 5, (12, S, S)), "error", "labels", ["[3, 4]"]),
    ("every pixel background",
     lambda: compiled(encoder_decoder([layers.Conv2D(2, 1, name="logits")]),
                      keras.losses.SparseCategoricalCrossentropy(from_logits=True)),
     np.zeros((12, S, S), "int32"), "error", "labels", ["is class 0"]),
    ("ReLU at the head",
     lambda: compiled(encoder_decoder([layers.Conv2D(2, 1, activation="relu", name="relu_head")]),
                      keras.losses.SparseCategoricalCrossentropy(from_logits=True)),
     BINARY, "error", "head", ["`relu_head` ends in relu"]),
    ("channels first at the output",
     lambda: compiled(encoder_decoder([layers.Conv2D(3, 1, activation="softmax", name="cls"),
                                       layers.Permute((3, 1, 2), name="to_channels_first")]),
                      "categorical_crossentropy"), one_hot(THREE, 3), "error", "class axis",
     ["channels first"]),
    ("softmax over the height",
     lambda: compiled(encoder_decoder([layers.Conv2D(3, 1, name="conv_out"),
                                       layers.Softmax(axis=1, name="sm")]),
                      "sparse_categorical_crossentropy"), THREE, "error", "class axis",
     ["softmax over axis 1 (height)", "`sm`"]),
    ("a rounding step blocks every gradient", thresholded_model, BINARY[..., None].astype("float32"),
     "error", "gradients", ["zero gradient at the head `prob`"]),
    ("a dead ReLU layer cuts the gradient to the layers before it", dead_relu_model, BINARY,
     "warning", "gradients", ["`early`", "`dead`"]),
    ("transposed convolution kernel 3, stride 2",
     lambda: compiled(encoder_decoder([layers.Conv2DTranspose(4, 3, strides=2, padding="same",
                                                              name="up_odd"),
                                       layers.MaxPooling2D(2, name="down_again"),
                                       layers.Conv2D(2, 1, name="logits")]),
                      keras.losses.SparseCategoricalCrossentropy(from_logits=True)),
     BINARY, "warning", "decoder", ["`up_odd` (kernel 3, stride 2)"]),
    ("subclassed sigmoid model with categorical CE",
     lambda: compiled(SubclassedSigmoid(), "categorical_crossentropy"), BINARY[..., None],
     "error", "head/loss", ["one output channel", "categorical_crossentropy"]),
]


BROKEN += [
    ("Dice on class-index masks over 3 channels",
     lambda: compiled(encoder_decoder([layers.Conv2D(3, 1, activation="softmax", name="cls")]),
                      keras.losses.Dice()), THREE, "error", "targets", ["class-index masks"]),
    ("a head with fewer channels than the classes",
     lambda: compiled(encoder_decoder([layers.Conv2D(3, 1, name="logits")]),
                      keras.losses.SparseCategoricalCrossentropy(from_logits=True)),
     THREE, "error", "head", ["3 output channel(s) in `logits` for num_classes=5"]),
]
BROKEN_KWARGS = {"a head with fewer channels than the classes": {"num_classes": 5}}


def _unet():
    inputs = keras.Input((None, None, 3))
    e1 = layers.Conv2D(8, 3, padding="same", activation="relu", name="e1")(inputs)
    e2 = layers.Conv2D(16, 3, padding="same", activation="relu", name="e2")(
        layers.MaxPooling2D(2)(e1))
    u = layers.Conv2DTranspose(8, 2, strides=2, name="u1")(e2)
    x = layers.Conv2D(8, 3, padding="same", activation="relu", name="d1")(
        layers.Concatenate()([u, e1]))
    return keras.Model(inputs, layers.Conv2D(3, 1, name="logits")(x))


SOUND = [
    ("one logit, BCE from logits",
     lambda: compiled(encoder_decoder([layers.Conv2D(1, 1, name="logit")]),
                      keras.losses.BinaryCrossentropy(from_logits=True)),
     BINARY[..., None].astype("float32")),
    ("C logits, sparse CE from logits",
     lambda: compiled(encoder_decoder([layers.Conv2D(3, 1, name="logits")]),
                      keras.losses.SparseCategoricalCrossentropy(from_logits=True)), THREE),
    ("softmax, sparse CE",
     lambda: compiled(encoder_decoder([layers.Conv2D(3, 1, activation="softmax")]),
                      "sparse_categorical_crossentropy"), THREE),
    ("a separate Softmax layer, sparse CE",
     lambda: compiled(encoder_decoder([layers.Conv2D(3, 1), layers.Softmax()]),
                      keras.losses.SparseCategoricalCrossentropy()), THREE),
    ("sigmoid, binary CE", lambda: compiled(encoder_decoder(
        [layers.Conv2D(1, 1, activation="sigmoid")]), "binary_crossentropy"),
     BINARY[..., None].astype("float32")),
    ("softmax, categorical CE on one-hot masks", lambda: compiled(encoder_decoder(
        [layers.Conv2D(3, 1, activation="softmax")]), "categorical_crossentropy"),
     one_hot(THREE, 3)),
    ("a U-Net with a skip, any input size",
     lambda: compiled(_unet(), keras.losses.SparseCategoricalCrossentropy(from_logits=True)),
     THREE),
]


@pytest.mark.parametrize("name,factory,masks,level,check,words", BROKEN,
                         ids=[b[0] for b in BROKEN])
def test_each_broken_model_is_caught_by_the_right_check(name, factory, masks, level, check, words):
    model = factory()
    before = [w.copy() for w in model.get_weights()]
    report = seg.diagnose(model, IMAGES, masks, **BROKEN_KWARGS.get(name, {}))
    found = [f for f in report.findings if f.level == level and f.check == check]
    assert found, str(report)
    title = " ".join(f.title for f in found)
    for word in words:
        assert word in title, (word, str(report))
    assert all(f.why and f.fix for f in found), str(report)
    assert (not report.ok) == bool(report.errors)
    if level == "error":
        assert not report.ok
    assert all(np.array_equal(a, b) for a, b in zip(before, model.get_weights()))


def _void_rows(masks):
    out = one_hot(masks, 3)
    out[:, :4] = 0  # unlabelled: no class at all
    return out


def _zero_logits_behind_a_lambda():
    inputs = keras.Input((S, S, 3))
    x = layers.Conv2D(8, 3, padding="same", activation="relu")(inputs)
    x = layers.Conv2D(2, 1, kernel_initializer="zeros", name="logits")(x)
    x = layers.Lambda(lambda t: t * 1.0, name="scale")(x)
    return compiled(keras.Model(inputs, x),
                    keras.losses.SparseCategoricalCrossentropy(from_logits=True))


SOUND += [
    ("multi-label sigmoid channels with multi-hot masks, binary CE",
     lambda: compiled(encoder_decoder([layers.Conv2D(3, 1, activation="sigmoid")]),
                      "binary_crossentropy"),
     (RNG.random((12, S, S, 3)) > 0.5).astype("float32")),
    ("one-hot masks with unlabelled (all-zero) pixels",
     lambda: compiled(encoder_decoder([layers.Conv2D(3, 1, activation="softmax")]),
                      "categorical_crossentropy"), _void_rows(THREE)),
    ("void pixels skipped by the loss's ignore_class",
     lambda: compiled(encoder_decoder([layers.Conv2D(3, 1, name="logits")]),
                      keras.losses.SparseCategoricalCrossentropy(from_logits=True,
                                                                 ignore_class=255)),
     np.where(THREE == 2, 255, THREE)),
    ("a loss given per output, as a list", lambda: compiled(
        encoder_decoder([layers.Conv2D(3, 1)]),
        [keras.losses.SparseCategoricalCrossentropy(from_logits=True)]), THREE),
    ("zero-initialised logits behind a Lambda", _zero_logits_behind_a_lambda, BINARY),
]


@pytest.mark.parametrize("name,factory,masks", SOUND, ids=[s[0] for s in SOUND])
def test_sound_models_raise_no_error(name, factory, masks):
    report = seg.diagnose(factory(), IMAGES, masks)
    assert report.ok, str(report)
    assert {"head/loss", "labels"} <= {f.check for f in report.findings if f.level == "ok"}, \
        str(report)
    assert "initial_loss" in report.figures and "head_gradient_norm" in report.figures


def test_the_seed_report_names_the_reshape_and_says_how_to_fix_it():
    report = seg.diagnose(seed_model(), IMAGES, BINARY)
    [error] = report.errors
    assert "remove `reshape" in error.fix and "binary_crossentropy" in error.fix
    text = str(report)
    assert text.startswith("== seg diagnose: model `sequential")
    assert "[  ERROR] class axis" in text and "why:" in text
    as_dict = report.as_dict()
    assert as_dict["ok"] is False and as_dict["errors"] == 1
    assert as_dict["findings"][0]["check"] == "class axis"


def test_a_loss_given_by_argument_wins_and_an_uncompiled_model_is_checked_without_one():
    model = encoder_decoder([layers.Conv2D(1, 1, activation="sigmoid", name="mask")])
    report = seg.diagnose(model, IMAGES, BINARY[..., None])
    assert report.ok and any(f.check == "loss" and f.level == "warning" for f in report.findings)
    report = seg.diagnose(model, IMAGES, BINARY[..., None], loss="categorical_crossentropy")
    assert "head/loss" in {f.check for f in report.errors}


def test_a_custom_loss_function_gets_a_warning_and_still_a_probe():
    def my_loss(y_true, y_pred):
        return ops.mean(ops.square(ops.cast(y_true, "float32") - y_pred))

    model = compiled(encoder_decoder([layers.Conv2D(1, 1, activation="sigmoid")]), my_loss)
    report = seg.diagnose(model, IMAGES, BINARY[..., None])
    warning = next(f for f in report.warnings if f.check == "loss")
    assert "my_loss" in warning.title and "custom loss function" in warning.title
    assert "initial_loss" in report.figures


def test_a_dataset_of_batches_is_read_like_arrays():
    ds = tf.data.Dataset.from_tensor_slices((IMAGES, BINARY[..., None].astype("float32"))).batch(4)
    model = compiled(encoder_decoder([layers.Conv2D(1, 1, activation="sigmoid", name="mask")]),
                     "categorical_crossentropy")
    report = seg.diagnose(model, ds)
    assert "head/loss" in {f.check for f in report.errors}
    assert "12 masks sampled" in " ".join(f.title for f in report.findings)


def test_one_image_grayscale_without_a_channel_axis_and_short_class_names():
    model = compiled(encoder_decoder([layers.Conv2D(3, 1, name="logits")]),
                     keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    assert seg.diagnose(model, IMAGES[0], THREE[0, ..., None]).ok
    report = seg.diagnose(model, IMAGES, THREE, class_names=["background", "cat"])
    assert report.ok and "class_2" in report.tables["class histogram (sampled masks)"]
    gray = compiled(encoder_decoder([layers.Conv2D(2, 1)], inputs=keras.Input((S, S, 1))),
                    keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    assert seg.diagnose(gray, IMAGES[..., 0], BINARY).ok


def test_inputs_the_model_cannot_take_are_an_error_not_a_crash():
    model = compiled(encoder_decoder([layers.Conv2D(2, 1)]), "sparse_categorical_crossentropy")
    report = seg.diagnose(model, IMAGES[..., :1], BINARY)
    assert [f.check for f in report.errors] == ["inputs"]
    assert "(None, 32, 32, 3)" in report.errors[0].fix
    report = seg.diagnose(model, "not an array", None)
    assert [f.check for f in report.errors] == ["inputs"]


def test_seg_own_model_and_loss_pass():
    from seg.losses import SegmentationLoss
    from seg.models import build_model

    model = build_model(num_classes=3, in_channels=3, decoder="deconv", base_filters=4, depth=2)
    report = seg.diagnose(model, IMAGES, THREE, loss=SegmentationLoss("auto", num_classes=3))
    assert report.ok and not report.warnings, str(report)
    assert report.figures["initial_cross_entropy"] == pytest.approx(np.log(3), abs=0.05)


# --- the callback in a plain model.fit ------------------------------------------------------

def _squares(n, seed):
    """Images with a bright square; the mask is the square."""
    rng = np.random.default_rng(seed)
    masks = np.zeros((n, S, S), "int32")
    for m in masks:
        y, x = rng.integers(0, S - 12, 2)
        m[y:y + 12, x:x + 12] = 1
    images = np.repeat(masks[..., None], 3, -1).astype("float32") * 0.8
    return images + rng.normal(0, 0.05, images.shape).astype("float32"), masks


def _events(folder):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    acc = EventAccumulator(str(folder), size_guidance={"tensors": 0})
    acc.Reload()
    return acc


@pytest.mark.slow
def test_the_monitor_flags_a_forced_one_channel_categorical_model_and_not_a_sound_one(tmp_path):
    x, y = _squares(48, 0)
    vx, vy = _squares(8, 1)
    keras.utils.set_random_seed(0)
    broken = compiled(encoder_decoder([layers.Conv2D(1, 1, activation="sigmoid", name="mask")]),
                      "categorical_crossentropy")
    monitor = seg.SegmentationMonitor((vx, vy[..., None]), log_dir=tmp_path / "broken",
                                      num_images=2)
    broken.fit(x, y[..., None], epochs=3, batch_size=8, verbose=0, callbacks=[monitor])
    assert monitor.constant_output is True
    assert any(a.startswith("constant output") for a in monitor.alarms)
    assert monitor.alarms[0].epoch == 1  # proven before the first step: flagged at once
    assert "head/loss" in {f.check for f in monitor.report.errors}

    keras.utils.set_random_seed(0)
    sound = encoder_decoder([layers.Conv2D(2, 1, name="logits")])
    sound.compile(keras.optimizers.Adam(1e-2),
                  loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    good = seg.SegmentationMonitor(tf.data.Dataset.from_tensor_slices((vx, vy)).batch(4),
                                   log_dir=tmp_path / "sound", num_images=2,
                                   class_names=["background", "square"])
    sound.fit(x, y, epochs=6, batch_size=8, verbose=0, callbacks=[good])
    assert good.constant_output is False and good.alarms == [], good.alarms
    assert good.report.ok

    for run, constant in (("broken", True), ("sound", False)):
        acc = _events(tmp_path / run)
        tags = set(acc.Tags()["tensors"])
        assert {"predictions", "diagnostics/majority_share", "diagnostics/alarms",
                "diagnostics/report"} <= tags, tags
        shares = [float(tf.make_ndarray(e.tensor_proto)) for e in
                  acc.Tensors("diagnostics/majority_share")]
        assert len(shares) == (3 if constant else 6)
        alarms = [tf.make_ndarray(e.tensor_proto).item().decode()
                  for e in acc.Tensors("diagnostics/alarms")]
        assert ("constant" in alarms[-1]) is constant, alarms
        assert all(a != b for a, b in zip(alarms, alarms[1:], strict=False)), alarms  # changes only
        assert len(acc.Tensors("predictions")) == len(shares)
    assert "pred_share/square" in " ".join(_events(tmp_path / "sound").Tags()["tensors"])


def test_the_report_in_the_text_tab_keeps_its_fix_line_whole():
    """TensorBoard's TEXT tab cuts a code block's long lines: they are wrapped, indented."""
    from seg.monitor import _wrapped

    fix = "          fix: " + " ".join(f"model.key_{k}=null" for k in range(20))
    text = _wrapped("head/loss check\n" + fix)
    lines = text.splitlines()
    assert max(map(len, lines)) <= 96 and lines[0] == "head/loss check"
    assert all(line.startswith(" " * 12) for line in lines[2:])
    assert " ".join(text.split()) == " ".join(("head/loss check\n" + fix).split())


def test_the_monitor_reads_outputs_without_a_channel_axis(tmp_path):
    x, y = _squares(16, 0)
    model = seed_model()
    monitor = seg.SegmentationMonitor((x[:4], y[:4]), log_dir=tmp_path, num_images=2,
                                      png_dir=tmp_path / "png")
    model.fit(x, y.astype("float32"), epochs=1, batch_size=8, verbose=0, callbacks=[monitor])
    assert "class axis" in {f.check for f in monitor.report.errors}
    assert (tmp_path / "png" / "epoch_001.png").exists()
    assert monitor.collapse.num_classes == 2 and monitor.collapse.from_logits is False


# --- scripts/diagnose.py --model ------------------------------------------------------------

MODULE = '''
import keras
from keras import layers


def seed():
    model = keras.Sequential([keras.Input((32, 32, 3)),
        layers.Conv2D(8, 3, activation="relu", padding="same"), layers.MaxPooling2D(2),
        layers.Conv2DTranspose(8, 2, strides=2),
        layers.Conv2D(1, 1, activation="sigmoid"), layers.Reshape((32, 32))])
    model.compile("adam", loss="categorical_crossentropy")
    return model


def uncompiled():
    inputs = keras.Input((None, None, 3))
    x = layers.Conv2D(8, 3, padding="same", activation="relu")(inputs)
    return keras.Model(inputs, layers.Conv2D(2, 1, name="logits")(x))
'''


@pytest.mark.slow
def test_diagnose_script_takes_a_module_function_or_a_keras_file(tmp_path):
    import subprocess
    import sys

    from conftest import ROOT

    (tmp_path / "my_model.py").write_text(MODULE)
    data = ["data.num_classes=2", "data.num_train=32", "data.num_val=8", "data.image_size=32"]

    def script(*args):
        return subprocess.run([sys.executable, "scripts/diagnose.py", *args, *data], cwd=ROOT,
                              capture_output=True, text=True, timeout=300)

    broken = script("--model", f"{tmp_path / 'my_model.py'}:seed")
    assert broken.returncode == 1, broken.stderr[-2000:]
    assert "the last layer `reshape" in broken.stdout and "drops the channel axis" in broken.stdout

    import importlib.util

    spec = importlib.util.spec_from_file_location("my_model", tmp_path / "my_model.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    model = module.uncompiled()
    model.compile("adam", loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    model.save(tmp_path / "sound.keras")
    sound = script("--model", str(tmp_path / "sound.keras"))
    assert sound.returncode == 0, sound.stdout[-3000:] + sound.stderr[-2000:]
    assert "0 error(s)" in sound.stdout and "SparseCategoricalCrossentropy" in sound.stdout

    named = script("--model", f"{tmp_path / 'my_model.py'}:uncompiled", "--loss",
                   "sparse_categorical_crossentropy")  # from_logits=False on logits
    assert named.returncode == 1 and "logits fed to a loss with from_logits=false" in named.stdout

    for args, words in ((["--model", str(tmp_path / "missing.keras")], "missing.keras"),
                        (["--model", f"{tmp_path / 'my_model.py'}:nope"], "no function 'nope'"),
                        (["--loss", "ce"], "--loss and --from-logits go with --model")):
        refused = script(*args)
        assert refused.returncode == 2 and words in refused.stderr, refused.stderr[-2000:]
        assert "Traceback" not in refused.stderr


@pytest.mark.slow
def test_keras_example_script_writes_both_panels(tmp_path):
    import subprocess
    import sys

    from conftest import ROOT

    proc = subprocess.run([sys.executable, "scripts/keras_example.py", "--out", str(tmp_path),
                           "--epochs", "1", "--num", "32"], cwd=ROOT, capture_output=True,
                          text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "the last layer `reshape` drops the channel axis" in proc.stdout
    assert "categorical_crossentropy: loss per epoch [0.0], constant_output=True" in proc.stdout
    for name in ("keras_yellow_image_panel.png", "keras_fixed_panel.png"):
        assert (tmp_path / name).stat().st_size > 10_000


# --- found by an adversarial campaign -------------------------------------------------------

def test_campaign_cases_diagnose_reads_as_fit_does():
    sigmoid = lambda: encoder_decoder([layers.Conv2D(1, 1, activation="sigmoid", name="p")])  # noqa: E731
    # num_classes=1 for a binary task; a BCE loss given by name with masks without channel axis
    assert seg.diagnose(compiled(sigmoid(), "binary_crossentropy"), IMAGES, BINARY,
                        num_classes=1).ok
    # label-smoothed one-hot masks into categorical cross-entropy
    smooth = one_hot(THREE, 3) * 0.9 + 0.1 / 3
    report = seg.diagnose(compiled(encoder_decoder([layers.Conv2D(3, 1, activation="softmax")]),
                                   "categorical_crossentropy"), IMAGES, smooth)
    assert report.ok and "initial_loss" in report.figures, str(report)
    # NaN in an image outside the probe batch
    images = IMAGES.copy()
    images[10, 3, 3, 0] = np.nan
    report = seg.diagnose(compiled(sigmoid(), "binary_crossentropy"), images, BINARY)
    assert any("NaN" in f.title and "[10]" in f.title for f in report.errors), str(report)


def test_a_perfect_model_on_rare_foreground_is_no_yellow_image():
    from seg.monitor import alarms_for, output_stats

    truth = np.zeros((1, 64, 64), int)
    truth[0, :5, :5] = 1  # 0.6% foreground
    probs = np.eye(2)[truth] * 0.9 + 0.05
    stats = output_stats(probs, truth, num_classes=2, ignore_index=None)
    assert stats["majority_share"] > 0.99
    assert alarms_for(stats, class_names=["bg", "fg"], constant_share=0.98,
                      constant_spread=0.02, vanished_share=0.1) == []


def test_the_monitor_takes_multi_output_models_and_any_number_of_class_names(tmp_path):
    x, y = _squares(16, 0)
    inputs = keras.Input((S, S, 3))
    feat = layers.Conv2D(8, 3, padding="same", activation="relu")(inputs)
    main = layers.Conv2D(2, 1, name="main")(feat)
    aux = layers.Conv2D(2, 1, name="aux")(feat)
    model = keras.Model(inputs, [main, aux])
    loss = keras.losses.SparseCategoricalCrossentropy(from_logits=True)
    model.compile("adam", loss=[loss, loss])
    for names in (["background"], ["background", "square", "extra", "more"]):
        monitor = seg.SegmentationMonitor((x[:4], y[:4]), log_dir=tmp_path / str(len(names)),
                                          num_images=2, class_names=names)
        model.fit(x, [y, y], epochs=1, batch_size=8, verbose=0, callbacks=[monitor])
        assert monitor.collapse.class_names[:1] == ["background"]
        assert len(monitor.collapse.class_names) == 2


def test_diagnose_model_feeds_masks_in_the_model_pixels_layout(compose):
    """scripts/diagnose.py --model on a [B, H*W, C] model (image-segmentation-keras's layout):
    the config's masks are reshaped (and one-hot encoded) to the model's layout."""
    from seg.preflight import diagnose_model

    cfg = compose("data.num_train=16", "data.num_val=8", "data.image_size=32",
                  "diagnostics.label_audit_samples=8")
    inputs = keras.Input((S, S, 3))
    x = layers.Conv2D(8, 3, padding="same", activation="relu")(inputs)
    x = layers.Reshape((S * S, 4))(layers.Conv2D(4, 1)(x))
    model = keras.Model(inputs, layers.Activation("softmax")(x))
    model.compile("adam", loss="categorical_crossentropy")
    report = diagnose_model(cfg, model)
    assert report.ok, str(report)
    assert {"head/loss", "labels"} <= {f.check for f in report.findings if f.level == "ok"}
