import keras
import numpy as np
import pytest
import tensorflow as tf

from seg.models import BilinearUpsampleInit, build_unet, level_sizes

SIZES = [(64, 64), (33, 47), (5, 7), (100, 36), (360, 480)]


@pytest.mark.parametrize("decoder", ["upsample", "deconv"])
@pytest.mark.parametrize("size", SIZES, ids=lambda s: f"{s[0]}x{s[1]}")
def test_logits_have_exactly_the_input_size(decoder, size):
    model = build_unet(num_classes=3, in_channels=3, depth=3, base_filters=4, decoder=decoder)
    y = model(np.zeros((1, *size, 3), np.float32))
    assert tuple(y.shape) == (1, *size, 3)


@pytest.mark.parametrize("decoder", ["upsample", "deconv"])
def test_fixed_odd_input_size_and_depth_four(decoder):
    model = build_unet(num_classes=2, in_channels=1, depth=4, base_filters=4, decoder=decoder,
                       input_size=45, kernel_size=3)
    assert model.output_shape == (None, 45, 45, 2)
    assert tuple(model(np.zeros((2, 45, 45, 1), np.float32)).shape) == (2, 45, 45, 2)


def test_binary_head_has_one_channel_and_is_refused_for_multiclass():
    model = build_unet(num_classes=2, in_channels=3, base_filters=4, out_channels=1)
    assert model.output_shape[-1] == 1
    with pytest.raises(ValueError, match="out_channels=1 needs a binary task"):
        build_unet(num_classes=4, in_channels=3, out_channels=1)


def test_decoders_build_their_own_layers():
    up = build_unet(num_classes=2, in_channels=3, base_filters=4, decoder="upsample",
                    interpolation="bilinear")
    de = build_unet(num_classes=2, in_channels=3, base_filters=4, decoder="deconv")
    near = build_unet(num_classes=2, in_channels=3, base_filters=4, decoder="upsample")
    kinds = lambda m: {type(layer).__name__ for layer in m.layers}  # noqa: E731
    assert "BilinearUpsampling" in kinds(up) and "Conv2DTranspose" not in kinds(up)
    assert "UpSampling2D" in kinds(near) and "Conv2DTranspose" not in kinds(near)
    assert "Conv2DTranspose" in kinds(de) and not {"UpSampling2D", "BilinearUpsampling"} & kinds(de)


@pytest.mark.slow
def test_bilinear_upsampling_equals_keras_and_trains_on_images_of_unknown_size():
    """Keras' UpSampling2D(interpolation="bilinear") crashed model.fit when height and width
    are unknown (whole-image validation); seg's layer is the same resize and trains."""
    from seg.models.layers import BilinearUpsampling

    x = np.random.default_rng(0).random((2, 5, 7, 3)).astype(np.float32)
    keras_up = keras.layers.UpSampling2D(2, interpolation="bilinear")(x)
    np.testing.assert_allclose(BilinearUpsampling()(x), keras_up, atol=1e-6)
    model = build_unet(num_classes=2, in_channels=1, depth=2, base_filters=4,
                       decoder="upsample", interpolation="bilinear")
    model.compile(optimizer="adam",
                  loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    images = np.random.default_rng(1).random((2, 20, 28, 1)).astype(np.float32)
    spec = (tf.TensorSpec([None, None, None, 1]), tf.TensorSpec([None, None, None], tf.int32))
    data = tf.data.Dataset.from_generator(
        lambda: iter([(images, np.zeros((2, 20, 28), np.int32))]), output_signature=spec)
    history = model.fit(data, epochs=1, verbose=0)
    assert np.isfinite(history.history["loss"][0])


@pytest.mark.parametrize("option,match", [({"decoder": "pixelshufle"}, "decoder.name"),
                                          ({"norm": "bn"}, "model.norm"),
                                          ({"decoder": "deconv", "init": "xavier"}, "decoder.init")])
def test_unknown_options_are_named(option, match):
    with pytest.raises(ValueError, match=match):
        build_unet(num_classes=2, in_channels=3, **option)


def test_bilinear_initialised_deconv_is_bilinear_upsampling():
    x = np.random.default_rng(0).random((1, 8, 8, 2)).astype(np.float32)
    layer = keras.layers.Conv2DTranspose(2, 4, strides=2, padding="same", use_bias=False,
                                         kernel_initializer=BilinearUpsampleInit())
    y = np.asarray(layer(x))
    ref = tf.image.resize(x, (16, 16), method="bilinear").numpy()
    # Interior pixels match exactly; the border differs by zero padding vs edge clamping.
    np.testing.assert_allclose(y[:, 1:-1, 1:-1], ref[:, 1:-1, 1:-1], atol=1e-5)


@pytest.mark.parametrize("decoder", ["upsample", "deconv"])
def test_keras_round_trip(tmp_path, decoder):
    model = build_unet(num_classes=3, in_channels=3, base_filters=4, decoder=decoder, init="bilinear")
    x = np.random.default_rng(0).random((1, 21, 30, 3)).astype(np.float32)
    path = tmp_path / "m.keras"
    model.save(path)
    again = keras.saving.load_model(path)  # safe mode, no custom_objects needed
    np.testing.assert_allclose(np.asarray(again(x)), np.asarray(model(x)), atol=1e-6)


def test_level_sizes():
    assert level_sizes(100, 3) == {"input": 100, "padded": 104, "encoder": [104, 52, 26, 13],
                                   "decoder": [26, 52, 104], "output": 100}
