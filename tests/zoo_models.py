"""A zoo of segmentation models people really write in Keras, for tests/test_zoo.py.

Each factory re-types (compactly, ported to Keras 3, widths and input size shrunk so that it runs
in about a second on a CPU) a public Keras segmentation model; its docstring names the source.
No weights are downloaded (weights=None everywhere). The data are synthetic and learnable: bright
squares on a dark background, whose mask is the square (one square per foreground class).

`CASES` lists every model with its data and the verdict seg.diagnose must give:
  sound    no error finding at all (warnings allowed);
  broken   an error whose check/title/why holds every word group of `words` (one word of each
           group), whose fix holds one of `fix_words`; `fixed` is the case after that fix;
  scaling  images 0..255 fed to a model that does not rescale them: any error must be about
           the scaling itself (a warning, or no finding, is fine).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import keras
import numpy as np
import tensorflow as tf
from keras import layers, ops

S = 32  # image side
N = 8  # images in a verdict batch


# --- data ----------------------------------------------------------------------------------

def squares(n: int, *, size: int = S, classes: int = 2, channels: int = 3, seed: int = 0):
    """Images in [0, 1] with one bright square per foreground class; class-index masks."""
    rng = np.random.default_rng(seed)
    side = max(size // 3, 3)
    masks = np.zeros((n, size, size), np.int32)
    for m in masks:
        for k in range(1, classes):
            y, x = rng.integers(0, size - side, 2)
            m[y:y + side, x:x + side] = k
    images = rng.normal(0.1, 0.04, (n, size, size, channels))
    for k in range(1, classes):
        if channels == 1:
            images[masks == k, 0] += 0.8 * k / (classes - 1)
        else:
            images[masks == k, (k - 1) % channels] += 0.8
    return np.clip(images, 0, 1).astype("float32"), masks


def one_hot(masks, c: int):
    return np.eye(c, dtype="float32")[masks]


def _resized(n, seed, classes, channels, method):
    """Images and masks made at half size and resized to S, the masks with `method`."""
    images, masks = squares(n, size=S // 2, classes=classes, channels=channels, seed=seed)
    images = tf.image.resize(images, (S, S), "bilinear").numpy()
    masks = tf.image.resize(masks[..., None].astype("float32"), (S, S), method).numpy()
    return images.astype("float32"), masks


FORMATS = {
    "channel": lambda m, c: m[..., None].astype("float32"),  # [N, H, W, 1] 0/1 floats
    "index": lambda m, c: m,  # [N, H, W] class indices
    "index1": lambda m, c: m[..., None].astype("uint8"),  # [N, H, W, 1] as read from a PNG
    "onehot": lambda m, c: one_hot(m, c),
    "flat_onehot": lambda m, c: one_hot(m, c).reshape(len(m), -1, c),  # [N, H*W, C]
    "flat_background": lambda m, c: (m == 0).reshape(len(m), -1, 1).astype("float32"),
    "x255": lambda m, c: (m * 255)[..., None].astype("float32"),  # 0/255 PNG masks
    "plus1": lambda m, c: (m + 1)[..., None].astype("uint8"),  # trimaps 1, 2, 3
    "index_u8": lambda m, c: m.astype("uint8"),  # [N, H, W] uint8, as cv2.imread(..., 0) gives
    "flat_index": lambda m, c: m.reshape(len(m), -1),  # [N, H*W] class indices
    "flat_index1": lambda m, c: m.reshape(len(m), -1, 1),  # [N, H*W, 1] class indices
    "x255_u8": lambda m, c: (m * 255)[..., None].astype("uint8"),  # 0/255 PNG masks, uint8
    "onehot_plus1": lambda m, c: one_hot(m, c + 1),  # to_categorical(trimap) without y -= 1
    "quarter": lambda m, c: m[:, ::4, ::4],  # [N, H/4, W/4] (nearest down-sampling)
}


def data(*, classes: int = 2, channels: int = 3, fmt: str = "channel", scale: float = 1.0,
         resize: str | None = None, uint8: bool = False,
         dataset: str | None = None) -> Callable[[int, int], tuple]:
    """A function (n, seed) -> (images, masks) in the given mask format; images * scale.

    `uint8`: the images as uint8 0..255 (as read from JPEG files); `dataset`: "batched" or
    "unbatched" gives (a tf.data.Dataset of (image, mask), None) instead of the arrays."""
    def make(n: int = N, seed: int = 0):
        if resize:
            images, masks = _resized(n, seed, classes, channels, resize)
            images = images * scale
        else:
            images, masks = squares(n, classes=classes, channels=channels, seed=seed)
            images, masks = images * scale, FORMATS[fmt](masks, classes)
        if uint8:
            images = np.round(images * 255).astype("uint8")
        if dataset:
            ds = tf.data.Dataset.from_tensor_slices((images, masks))
            return (ds.batch(4) if dataset == "batched" else ds), None
        return images, masks
    make.classes = classes
    make.dataset = dataset
    return make


def compiled(model, loss, optimizer="adam", **kwargs):
    model.compile(optimizer=optimizer, loss=loss, **kwargs)
    return model


def sparse_logits():
    return keras.losses.SparseCategoricalCrossentropy(from_logits=True)


# --- zhixuhao/unet ------------------------------------------------------------------------

def zhixuhao_unet(*, head=1, activation="sigmoid", loss="binary_crossentropy", reshape=False,
                  rescale=False, base=4):
    """zhixuhao/unet model.py `unet()`: grayscale input, 4 poolings, Dropout(0.5) on the two
    deepest blocks, "up-conv" = UpSampling2D + Conv2D(k=2), concatenate skips, a Conv2D(2, 3,
    relu) then Conv2D(1, 1, sigmoid), Adam(1e-4) with binary_crossentropy (widths 64..1024
    shrunk to base..16*base, input 256 -> 32).

    Variants: `activation`/`head`/`loss` as users change them; `reshape` adds the
    Reshape((H, W)) people put at the end to match [N, H, W] masks; `rescale` puts
    Rescaling(1/255) after the input.
    """
    def conv(f, k=3):
        return layers.Conv2D(f, k, activation="relu", padding="same", kernel_initializer="he_normal")

    inputs = keras.Input((S, S, 1))
    x = layers.Rescaling(1 / 255, name="rescale")(inputs) if rescale else inputs
    skips = []
    for d in range(4):
        x = conv(base * 2 ** d)(conv(base * 2 ** d)(x))
        if d == 3:
            x = layers.Dropout(0.5)(x)
        skips.append(x)
        x = layers.MaxPooling2D(2)(x)
    x = layers.Dropout(0.5)(conv(base * 16)(conv(base * 16)(x)))
    for d in reversed(range(4)):
        up = conv(base * 2 ** d, 2)(layers.UpSampling2D(2)(x))
        x = layers.concatenate([skips[d], up], axis=3)
        x = conv(base * 2 ** d)(conv(base * 2 ** d)(x))
    x = conv(2)(x)
    out = layers.Conv2D(head, 1, activation=activation, name="conv10")(x)
    if reshape:
        out = layers.Reshape((S, S), name="reshape")(out)
    return compiled(keras.Model(inputs, out, name="zhixuhao_unet"), loss,
                    keras.optimizers.Adam(1e-4), metrics=["accuracy"])


# --- keras.io: Image segmentation with a U-Net-like architecture ---------------------------

def keras_io_oxford_unet(num_classes=3, *, activation="softmax",
                         loss="sparse_categorical_crossentropy"):
    """keras-team/keras-io examples/vision/oxford_pets_image_segmentation.py `get_model()`:
    entry Conv2D(strides=2) + BatchNorm, Xception-style residual blocks (SeparableConv2D,
    BatchNormalization, MaxPooling2D(3, strides=2) + a 1x1 strided residual projection), a
    decoder of Conv2DTranspose + UpSampling2D with residual projections, then
    Conv2D(num_classes, 3, activation="softmax"); rmsprop and sparse_categorical_crossentropy.
    Widths 32/64/128/256 -> 8/8/16/32, input 160 -> 32.
    """
    inputs = keras.Input((S, S, 3))
    x = layers.Conv2D(8, 3, strides=2, padding="same")(inputs)
    x = layers.Activation("relu")(layers.BatchNormalization()(x))
    previous = x
    for filters in (8, 16, 32):
        for _ in range(2):
            x = layers.Activation("relu")(x)
            x = layers.BatchNormalization()(layers.SeparableConv2D(filters, 3, padding="same")(x))
        x = layers.MaxPooling2D(3, strides=2, padding="same")(x)
        x = layers.add([x, layers.Conv2D(filters, 1, strides=2, padding="same")(previous)])
        previous = x
    for filters in (32, 16, 8, 8):
        for _ in range(2):
            x = layers.Activation("relu")(x)
            x = layers.BatchNormalization()(layers.Conv2DTranspose(filters, 3, padding="same")(x))
        x = layers.UpSampling2D(2)(x)
        residual = layers.Conv2D(filters, 1, padding="same")(layers.UpSampling2D(2)(previous))
        x = layers.add([x, residual])
        previous = x
    outputs = layers.Conv2D(num_classes, 3, activation=activation, padding="same", name="classes")(x)
    return compiled(keras.Model(inputs, outputs, name="oxford_unet"), loss, "rmsprop")


# --- TensorFlow's segmentation tutorial ----------------------------------------------------

def tf_tutorial_unet(output_channels=3, *, loss=None, last_strided=True):
    """tensorflow/docs site/en/tutorials/images/segmentation.ipynb `unet_model()`: a
    MobileNetV2 encoder (here weights=None, alpha=0.35; the tutorial's freezing of the
    pretrained encoder is dropped since it has no pretrained weights) wrapped as a nested
    `down_stack` model of 5 activations, pix2pix.upsample blocks (Conv2DTranspose(k=3,
    strides=2, no bias, N(0, 0.02)) + BatchNorm + ReLU, 512/256/128/64 -> 32/16/16/8) with
    Concatenate skips, a last Conv2DTranspose(output_channels, 3, strides=2) giving logits,
    SparseCategoricalCrossentropy(from_logits=True). Input 128 -> 32.

    `last_strided=False`: the last layer made a Conv2D(output_channels, 1), so the output
    stays at half the masks' size.
    """
    base = keras.applications.MobileNetV2(input_shape=(S, S, 3), include_top=False,
                                          weights=None, alpha=0.35)
    names = ["block_1_expand_relu", "block_3_expand_relu", "block_6_expand_relu",
             "block_13_expand_relu", "block_16_project"]
    down_stack = keras.Model(base.input, [base.get_layer(n).output for n in names],
                             name="down_stack")

    def upsample(filters, size):
        return keras.Sequential([
            layers.Conv2DTranspose(filters, size, strides=2, padding="same", use_bias=False,
                                   kernel_initializer=keras.initializers.RandomNormal(0, 0.02)),
            layers.BatchNormalization(), layers.ReLU()])

    inputs = keras.Input((S, S, 3))
    skips = down_stack(inputs)
    x = skips[-1]
    for up, skip in zip([upsample(f, 3) for f in (32, 16, 16, 8)], reversed(skips[:-1])):
        x = layers.Concatenate()([up(x), skip])
    last = (layers.Conv2DTranspose(output_channels, 3, strides=2, padding="same", name="last")
            if last_strided else layers.Conv2D(output_channels, 1, name="last"))
    return compiled(keras.Model(inputs, last(x), name="tf_tutorial_unet"),
                    sparse_logits() if loss is None else loss)


# --- divamgupta/image-segmentation-keras ---------------------------------------------------

def divamgupta_unet_mini(n_classes=3):
    """divamgupta/image-segmentation-keras keras_segmentation/models/unet.py `unet_mini()` with
    model_utils.py `get_segmentation_model()`: Conv2D/Dropout(0.2) blocks, two poolings,
    UpSampling2D + concatenate, a Conv2D(n_classes, 1) whose output is Reshape((H*W, -1)) then
    Activation('softmax'); trained (train.py) with categorical_crossentropy on one-hot targets
    of shape [N, H*W, n_classes]. Widths 32/64/128 -> 8/16/32, input 360x480 -> 32x32.
    """
    def conv(f):
        return layers.Conv2D(f, 3, activation="relu", padding="same")

    img_input = keras.Input((S, S, 3))
    conv1 = conv(8)(layers.Dropout(0.2)(conv(8)(img_input)))
    conv2 = conv(16)(layers.Dropout(0.2)(conv(16)(layers.MaxPooling2D(2)(conv1))))
    conv3 = conv(32)(layers.Dropout(0.2)(conv(32)(layers.MaxPooling2D(2)(conv2))))
    up1 = layers.concatenate([layers.UpSampling2D(2)(conv3), conv2], axis=-1)
    conv4 = conv(16)(layers.Dropout(0.2)(conv(16)(up1)))
    up2 = layers.concatenate([layers.UpSampling2D(2)(conv4), conv1], axis=-1)
    conv5 = conv(8)(layers.Dropout(0.2)(conv(8)(up2)))
    o = layers.Conv2D(n_classes, 1, padding="same", name="seg_logits")(conv5)
    o = layers.Reshape((S * S, -1), name="flatten_pixels")(o)
    o = layers.Activation("softmax", name="softmax")(o)
    return compiled(keras.Model(img_input, o, name="unet_mini"), "categorical_crossentropy",
                    metrics=["accuracy"])


# --- qubvel/segmentation_models-like library layout ----------------------------------------

def sm_unet(classes=1, activation="sigmoid", loss="binary_crossentropy"):
    """qubvel/segmentation_models segmentation_models/models/unet.py `Unet()`/`build_unet()`
    with the default vgg16 backbone and decoder_block_type='upsampling': the backbone
    (encoder) is a keras.Model (here nested, called on the input, returning block5_pool and
    the skip features block5_conv3..block1_conv2), a center block after its last MaxPooling,
    DecoderUpsamplingX2Block (UpSampling2D, Concatenate, two Conv3x3BnReLU), then
    Conv2D(classes, 3, name='final_conv') and Activation(activation, name=activation).
    Widths 64..512 -> 4..16, decoder_filters (256, 128, 64, 32, 16) -> (16, 16, 8, 8, 4).
    """
    def conv_bn_relu(f, name):
        def apply(x):
            x = layers.Conv2D(f, 3, padding="same", use_bias=False,
                              kernel_initializer="he_uniform", name=f"{name}_conv")(x)
            return layers.Activation("relu", name=f"{name}_relu")(
                layers.BatchNormalization(name=f"{name}_bn")(x))
        return apply

    enc_in = keras.Input((S, S, 3))
    x, feats = enc_in, {}
    for b, (f, n) in enumerate(zip((4, 8, 8, 16, 16), (2, 2, 3, 3, 3)), 1):
        for i in range(n):
            x = layers.Conv2D(f, 3, activation="relu", padding="same", name=f"block{b}_conv{i + 1}")(x)
            feats[b] = x
        x = layers.MaxPooling2D(2, name=f"block{b}_pool")(x)
    backbone = keras.Model(enc_in, [x] + [feats[b] for b in (5, 4, 3, 2, 1)], name="vgg16")

    inputs = keras.Input((S, S, 3))
    x, *skips = backbone(inputs)
    x = conv_bn_relu(16, "center_block2")(conv_bn_relu(16, "center_block1")(x))
    for i, (f, skip) in enumerate(zip((16, 16, 8, 8, 4), skips)):
        x = layers.UpSampling2D(2, name=f"decoder_stage{i}_upsampling")(x)
        x = layers.Concatenate(name=f"decoder_stage{i}_concat")([x, skip])
        x = conv_bn_relu(f, f"decoder_stage{i}b")(conv_bn_relu(f, f"decoder_stage{i}a")(x))
    x = layers.Conv2D(classes, 3, padding="same", name="final_conv")(x)
    x = layers.Activation(activation, name=activation, dtype="float32")(x)
    return compiled(keras.Model(inputs, x, name="sm_unet_vgg16"), loss)


# --- karolzak/keras-unet -------------------------------------------------------------------

def karolzak_custom_unet(num_classes=1, output_activation="sigmoid", loss="binary_crossentropy",
                         upsample_mode="deconv"):
    """karolzak/keras-unet keras_unet/models/custom_unet.py `custom_unet()`: conv2d_block =
    two Conv2D(he_normal, no bias) + BatchNormalization with SpatialDropout2D(0.3) between,
    num_layers=4 poolings with doubling filters, upsample by Conv2DTranspose(2, strides=2)
    ('deconv') or UpSampling2D ('simple'), concatenate, and Conv2D(num_classes, 1,
    activation=output_activation). filters 16 -> 4.
    """
    def block(x, filters, dropout):
        x = layers.BatchNormalization()(layers.Conv2D(filters, 3, activation="relu", padding="same",
                                                      kernel_initializer="he_normal",
                                                      use_bias=False)(x))
        if dropout:
            x = layers.SpatialDropout2D(dropout)(x)
        return layers.BatchNormalization()(layers.Conv2D(filters, 3, activation="relu",
                                                         padding="same", use_bias=False,
                                                         kernel_initializer="he_normal")(x))

    inputs = keras.Input((S, S, 3))
    x, down, filters = inputs, [], 4
    for _ in range(4):
        x = block(x, filters, 0.3)
        down.append(x)
        x = layers.MaxPooling2D(2)(x)
        filters *= 2
    x = block(x, filters, 0.3)
    for conv in reversed(down):
        filters //= 2
        x = (layers.Conv2DTranspose(filters, 2, strides=2, padding="same")(x)
             if upsample_mode == "deconv" else layers.UpSampling2D(2)(x))
        x = block(layers.concatenate([x, conv]), filters, 0.0)
    outputs = layers.Conv2D(num_classes, 1, activation=output_activation, name="output")(x)
    return compiled(keras.Model(inputs, outputs, name="custom_unet"), loss)


# --- keras.io DeepLabV3+ ------------------------------------------------------------------

def resnet_ish(x):
    """A ResNet50-style encoder cut down for speed: the stem (Conv2D 7x7/2 + BN + ReLU +
    MaxPooling 3/2) and one bottleneck block (1x1, 3x3, 1x1 + a projected shortcut) per stage,
    with keras.applications.resnet's layer names; returns the conv2 (/4) and conv4 (/16)
    features keras.io's DeepLabV3+ reads (`conv2_block3_2_relu`, `conv4_block6_2_relu`)."""
    def bottleneck(x, filters, stride, name):
        shortcut = layers.BatchNormalization(name=f"{name}_0_bn")(
            layers.Conv2D(4 * filters, 1, strides=stride, name=f"{name}_0_conv")(x))
        for i, (k, f, s) in enumerate(((1, filters, stride), (3, filters, 1)), 1):
            x = layers.Conv2D(f, k, strides=s, padding="same", name=f"{name}_{i}_conv")(x)
            x = layers.Activation("relu", name=f"{name}_{i}_relu")(
                layers.BatchNormalization(name=f"{name}_{i}_bn")(x))
        features = x
        x = layers.BatchNormalization(name=f"{name}_3_bn")(
            layers.Conv2D(4 * filters, 1, name=f"{name}_3_conv")(x))
        return layers.Activation("relu", name=f"{name}_out")(layers.Add()([shortcut, x])), \
            features

    x = layers.ZeroPadding2D(3, name="conv1_pad")(x)
    x = layers.Conv2D(8, 7, strides=2, name="conv1_conv")(x)
    x = layers.Activation("relu", name="conv1_relu")(layers.BatchNormalization(name="conv1_bn")(x))
    x = layers.MaxPooling2D(3, strides=2, padding="same", name="pool1_pool")(x)
    x, low = bottleneck(x, 4, 1, "conv2_block3")
    x, _ = bottleneck(x, 8, 2, "conv3_block4")
    _, high = bottleneck(x, 8, 2, "conv4_block6")
    return low, high


def deeplab_v3_plus(num_classes=3, *, activation=None, loss=None, final_up=True):
    """keras-team/keras-io examples/vision/deeplabv3_plus.py `DeeplabV3Plus()`:
    resnet50.preprocess_input inside the model (it takes 0..255 images), a ResNet encoder
    (here `resnet_ish`, no weights, instead of ResNet50(weights="imagenet")),
    DilatedSpatialPyramidPooling (image pooling + dilations 1/6/12/18) on conv4_block6_2_relu,
    bilinear UpSampling2D x4, low-level conv2_block3_2_relu features (1x1, 48 -> 8 filters),
    two convolution_blocks, bilinear UpSampling2D to the input size, a Conv2D(num_classes, 1)
    of logits, SparseCategoricalCrossentropy(from_logits=True). Widths 256 -> 16, input 512 ->
    32.

    `final_up=False`: the last bilinear up-sampling undoes only half of the stride.
    """
    def conv_block(x, filters=16, kernel_size=3, dilation_rate=1, use_bias=False):
        x = layers.Conv2D(filters, kernel_size, dilation_rate=dilation_rate, padding="same",
                          use_bias=use_bias, kernel_initializer=keras.initializers.HeNormal())(x)
        return ops.nn.relu(layers.BatchNormalization()(x))

    def dspp(x):
        h, w = x.shape[-3], x.shape[-2]
        pool = conv_block(layers.AveragePooling2D(pool_size=(h, w))(x), kernel_size=1,
                          use_bias=True)
        pool = layers.UpSampling2D((h // pool.shape[1], w // pool.shape[2]),
                                   interpolation="bilinear")(pool)
        outs = [pool, conv_block(x, kernel_size=1)] + [
            conv_block(x, dilation_rate=r) for r in (6, 12, 18)]
        return conv_block(layers.Concatenate(axis=-1)(outs), kernel_size=1)

    model_input = keras.Input((S, S, 3))
    low, high = resnet_ish(keras.applications.resnet50.preprocess_input(model_input))
    x = dspp(high)
    input_a = layers.UpSampling2D((S // 4 // x.shape[1], S // 4 // x.shape[2]),
                                  interpolation="bilinear")(x)
    input_b = conv_block(low, 8, kernel_size=1)
    x = conv_block(conv_block(layers.Concatenate(axis=-1)([input_a, input_b])))
    factor = S // x.shape[1] if final_up else S // x.shape[1] // 2
    x = layers.UpSampling2D((factor, factor), interpolation="bilinear")(x)
    out = layers.Conv2D(num_classes, 1, padding="same", activation=activation, name="logits")(x)
    return compiled(keras.Model(model_input, out, name="deeplabv3plus"),
                    sparse_logits() if loss is None else loss, keras.optimizers.Adam(1e-3))


# --- a subclassed U-Net ---------------------------------------------------------------------

class SubclassedUNet(keras.Model):
    """The encoder/decoder/head keras.Model subclass of taipingeric/fusionlab
    fusionlab/segmentation/tfbase.py (`TFSegmentationModel.call`: encoder -> decoder ->
    head), with a two-level U-Net written as in the Keras subclassing guide: layers made in
    __init__, wired in call()."""

    def __init__(self, num_classes=2, head_activation=None, **kwargs):
        super().__init__(**kwargs)
        self.enc1 = [layers.Conv2D(8, 3, padding="same", activation="relu") for _ in range(2)]
        self.enc2 = [layers.Conv2D(16, 3, padding="same", activation="relu") for _ in range(2)]
        self.pool = layers.MaxPooling2D(2)
        self.up = layers.Conv2DTranspose(8, 2, strides=2, padding="same")
        self.dec = [layers.Conv2D(8, 3, padding="same", activation="relu") for _ in range(2)]
        self.head = layers.Conv2D(num_classes, 1, activation=head_activation)

    def call(self, x, training=None):
        for conv in self.enc1:
            x = conv(x)
        skip = x
        x = self.pool(x)
        for conv in self.enc2:
            x = conv(x)
        x = ops.concatenate([self.up(x), skip], axis=-1)
        for conv in self.dec:
            x = conv(x)
        return self.head(x)


def subclassed_unet(num_classes=2, head_activation=None, loss=None):
    model = SubclassedUNet(num_classes, head_activation, name="my_unet")
    model(np.zeros((1, S, S, 3), "float32"))  # builds every layer
    return compiled(model, sparse_logits() if loss is None else loss)


# --- a softmax inside a Lambda ------------------------------------------------------------

def lambda_softmax_unet(channels=3, loss="sparse_categorical_crossentropy", fn="softmax"):
    """The per-pixel "depth softmax" applied in a Lambda layer, as in the answer to "Cross
    Entropy Loss for Semantic Segmentation Keras" (newbe.dev/cross-entropy-loss-for-semantic-
    segmentation-keras), here `layers.Lambda(lambda t: keras.ops.softmax(t))` after the 1x1
    head of a small U-Net (the zhixuhao layout, two levels)."""
    act = {"softmax": lambda t: ops.softmax(t), "sigmoid": lambda t: ops.sigmoid(t)}[fn]
    inputs = keras.Input((S, S, 3))
    e1 = layers.Conv2D(8, 3, padding="same", activation="relu")(inputs)
    e2 = layers.Conv2D(16, 3, padding="same", activation="relu")(layers.MaxPooling2D(2)(e1))
    u = layers.Conv2D(8, 2, padding="same", activation="relu")(layers.UpSampling2D(2)(e2))
    x = layers.Conv2D(8, 3, padding="same", activation="relu")(layers.concatenate([e1, u]))
    x = layers.Conv2D(channels, 1, name="scores")(x)
    x = layers.Lambda(act, name="depth_softmax")(x)
    return compiled(keras.Model(inputs, x, name="lambda_softmax_unet"), loss)


# --- GroupNormalization U-Net ---------------------------------------------------------------

def groupnorm_unet(loss=None):
    """The ResidualBlock of keras-team/keras-io examples/generative/ddpm.py (GroupNormalization
    (groups=8) + swish + Conv2D, a 1x1 residual when the width changes) in a two-level U-Net
    segmentation net with a 1-channel logit head and BinaryCrossentropy(from_logits=True)
    (GroupNormalization usage as in shaoanlu/GroupNormalization-keras README.md)."""
    def res_block(x, width):
        residual = x if x.shape[-1] == width else layers.Conv2D(width, 1)(x)
        x = layers.Activation("swish")(layers.GroupNormalization(groups=8)(x)) \
            if x.shape[-1] % 8 == 0 else x
        x = layers.Conv2D(width, 3, padding="same")(x)
        x = layers.Activation("swish")(layers.GroupNormalization(groups=8)(x))
        x = layers.Conv2D(width, 3, padding="same")(x)
        return layers.Add()([x, residual])

    inputs = keras.Input((S, S, 3))
    e1 = res_block(layers.Conv2D(8, 3, padding="same")(inputs), 8)
    e2 = res_block(layers.MaxPooling2D(2)(e1), 16)
    b = res_block(layers.MaxPooling2D(2)(e2), 16)
    d2 = res_block(layers.Concatenate()([layers.UpSampling2D(2)(b), e2]), 16)
    d1 = res_block(layers.Concatenate()([layers.UpSampling2D(2)(d2), e1]), 8)
    x = layers.Activation("swish")(layers.GroupNormalization(groups=8)(d1))
    out = layers.Conv2D(1, 1, name="logit")(x)
    loss = keras.losses.BinaryCrossentropy(from_logits=True) if loss is None else loss
    return compiled(keras.Model(inputs, out, name="groupnorm_unet"), loss)


# === second round ============================================================================

# --- losses people copy into their notebooks ------------------------------------------------

def dice_coef(y_true, y_pred, smooth=1.0):
    """MoleImg/Attention_UNet AttResUNet.py `dice_coef` (K.flatten/K.sum as keras.ops)."""
    y_true_f = ops.reshape(ops.cast(y_true, "float32"), (-1,))
    y_pred_f = ops.reshape(ops.cast(y_pred, "float32"), (-1,))
    intersection = ops.sum(y_true_f * y_pred_f)
    return (2.0 * intersection + smooth) / (ops.sum(y_true_f) + ops.sum(y_pred_f) + smooth)


def dice_coef_loss(y_true, y_pred):
    """MoleImg/Attention_UNet AttResUNet.py: `return -dice_coef(y_true, y_pred)`."""
    return -dice_coef(y_true, y_pred)


def jacard_coef_loss(y_true, y_pred):
    """MoleImg/Attention_UNet AttResUNet.py `jacard_coef_loss` (-IoU, smooth 1)."""
    y_true_f = ops.reshape(ops.cast(y_true, "float32"), (-1,))
    y_pred_f = ops.reshape(ops.cast(y_pred, "float32"), (-1,))
    intersection = ops.sum(y_true_f * y_pred_f)
    return -(intersection + 1.0) / (ops.sum(y_true_f) + ops.sum(y_pred_f) - intersection + 1.0)


def FocalLoss(targets, inputs, alpha=0.8, gamma=2):
    """herolava259/gr_project metrics/training/FocalLoss.py (the Kaggle "Loss Function
    Library - Keras & PyTorch" focal loss): BCE on flattened tensors, alpha * (1 - e^-BCE)^gamma."""
    inputs = ops.reshape(ops.cast(inputs, "float32"), (-1,))
    targets = ops.reshape(ops.cast(targets, "float32"), (-1,))
    bce = keras.losses.binary_crossentropy(targets[:, None], inputs[:, None])
    return ops.mean(alpha * ops.power(1 - ops.exp(-bce), gamma) * bce)


def bce_dice_loss(y_true, y_pred):
    """SebastianHafner/DDA_UrbanExtraction tensorflow_implementation/losses.py:
    binary_crossentropy(y_true, y_pred) + (1 - dice_coefficient)."""
    return keras.losses.binary_crossentropy(y_true, y_pred) + 1.0 - dice_coef(y_true, y_pred)


# --- Attention U-Net -------------------------------------------------------------------------

def attention_unet(*, head="sigmoid", loss=dice_coef_loss):
    """MoleImg/Attention_UNet AttResUNet.py `Attention_ResUNet()`: residual double_conv_layer
    (two Conv-BN-ReLU + a 1x1 shortcut, `layers.add`), gating_signal (1x1 Conv-BN-ReLU),
    attention_block (theta_x = Conv 2x2/2 of the skip, phi_g = 1x1 of the gate up-sampled by
    Conv2DTranspose, add, ReLU, psi = Conv 1x1 -> sigmoid, UpSampling2D, `expend_as` Lambda
    repeating it over the channels, multiply, 1x1 Conv + BN), UpSampling2D + concatenate;
    compiled with dice_coef_loss as its docstring says. Depth 4 -> 2, FILTER_NUM 32 -> 4.

    `head`: "sigmoid" a Conv2D(1, 1) + sigmoid; "bn_relu" the file's own head, Conv2D(1, 1) +
    BatchNormalization + Activation('relu').
    """
    def double_conv(x, size):
        conv = x
        for _ in range(2):
            conv = layers.Activation("relu")(layers.BatchNormalization()(
                layers.Conv2D(size, 3, padding="same")(conv)))
        shortcut = layers.BatchNormalization()(layers.Conv2D(size, 1, padding="same")(x))
        return layers.add([shortcut, conv])

    def gating_signal(x, size):
        return layers.Activation("relu")(layers.BatchNormalization()(
            layers.Conv2D(size, 1, padding="same")(x)))

    def attention_block(x, gating, inter):
        theta_x = layers.Conv2D(inter, 2, strides=2, padding="same")(x)
        phi_g = layers.Conv2D(inter, 1, padding="same")(gating)
        up_g = layers.Conv2DTranspose(inter, 3, strides=theta_x.shape[1] // gating.shape[1],
                                      padding="same")(phi_g)
        psi = layers.Conv2D(1, 1, padding="same")(layers.Activation("relu")(
            layers.add([up_g, theta_x])))
        psi = layers.UpSampling2D(x.shape[1] // psi.shape[1])(layers.Activation("sigmoid")(psi))
        rep = x.shape[3]
        psi = layers.Lambda(lambda t: ops.repeat(t, rep, axis=3))(psi)  # expend_as
        return layers.BatchNormalization()(layers.Conv2D(rep, 1, padding="same")(
            layers.multiply([psi, x])))

    inputs = keras.Input((S, S, 3))
    c1 = double_conv(inputs, 4)
    c2 = double_conv(layers.MaxPooling2D(2)(c1), 8)
    c3 = double_conv(layers.MaxPooling2D(2)(c2), 16)
    x = c3
    for skip, f in ((c2, 8), (c1, 4)):
        att = attention_block(skip, gating_signal(x, f), f)
        x = layers.concatenate([layers.UpSampling2D(2)(x), att], axis=3)
        x = double_conv(x, f)
    x = layers.Conv2D(1, 1, name="conv_final")(x)
    if head == "bn_relu":
        x = layers.Activation("relu", name="final_relu")(layers.BatchNormalization()(x))
    else:
        x = layers.Activation("sigmoid", name="final_sigmoid")(x)
    return compiled(keras.Model(inputs, x, name="AttentionResUNet"), loss)


# --- U-Net++ ---------------------------------------------------------------------------------

def unet_plus_plus(num_classes=1, activation="sigmoid", loss="binary_crossentropy", *,
                   deep_supervision=False, loss_weights=None):
    """yingkaisha/keras-unet-collection keras_unet_collection/_model_unet_plus_2d.py
    `unet_plus_2d()` (nested skips X_ij = conv_block(concat(X_i0..X_i,j-1, up(X_i+1,j-1)))),
    deep_supervision=True giving one Conv2D(n_labels, 1, activation) output per nested node, as
    a list, compiled with a list of losses and loss_weights. Depth 4 -> 3, filters 4/8/16,
    stack_num_down = stack_num_up = 1 (one Conv-BN-ReLU per node).
    """
    def conv_block(x, f):
        return layers.Activation("relu")(layers.BatchNormalization()(
            layers.Conv2D(f, 3, padding="same", use_bias=False)(x)))

    inputs = keras.Input((S, S, 3))
    widths = (4, 8, 16)
    nodes = {(0, 0): conv_block(inputs, 4)}
    for i in (1, 2):
        nodes[(i, 0)] = conv_block(layers.MaxPooling2D(2)(nodes[(i - 1, 0)]), widths[i])
    for j in (1, 2):
        for i in range(3 - j):
            parts = [nodes[(i, k)] for k in range(j)] + [
                layers.UpSampling2D(2)(nodes[(i + 1, j - 1)])]
            nodes[(i, j)] = conv_block(layers.concatenate(parts), widths[i])
    heads = [layers.Conv2D(num_classes, 1, activation=activation, name=f"xnet_output_{j}")(
        nodes[(0, j)]) for j in (1, 2)]
    if deep_supervision:
        model = keras.Model(inputs, heads, name="xnet_deep_supervision")
        return compiled(model, [loss] * len(heads), loss_weights=loss_weights)
    return compiled(keras.Model(inputs, heads[-1], name="xnet"), loss)


# --- ResUNet ---------------------------------------------------------------------------------

def resunet(*, loss="binary_crossentropy", rescale=False):
    """nikhilroxtomar/Deep-Residual-Unet (Deep Residual UNet.ipynb, as vendored in
    Janaprasath/.../src/Models/ResUNet.py `build_resunet`): a stem Conv-BN-ReLU-Conv with a 1x1
    shortcut, residual_block (BN-ReLU-Conv(strides) twice + a strided 1x1 shortcut, `x + s`),
    decoder_block (UpSampling2D, Concatenate, residual_block), Conv2D(1, 1, sigmoid). Filters
    64..512 -> 4/8, three residual levels -> one.

    `rescale`: Rescaling(1/255) after the input (the model takes uint8 0..255 images).
    """
    def bn_relu(x):
        return layers.Activation("relu")(layers.BatchNormalization()(x))

    def residual_block(x, f, strides=1):
        y = layers.Conv2D(f, 3, padding="same", strides=strides)(bn_relu(x))
        y = layers.Conv2D(f, 3, padding="same")(bn_relu(y))
        return y + layers.Conv2D(f, 1, padding="same", strides=strides)(x)

    def decoder_block(x, skip, f):
        return residual_block(layers.Concatenate()([layers.UpSampling2D(2)(x), skip]), f)

    inputs = keras.Input((S, S, 3))
    x = layers.Rescaling(1 / 255)(inputs) if rescale else inputs
    s1 = layers.Conv2D(4, 3, padding="same")(bn_relu(layers.Conv2D(4, 3, padding="same")(x)))
    s1 = s1 + layers.Conv2D(4, 1, padding="same")(x)
    b = residual_block(s1, 8, strides=2)
    x = decoder_block(b, s1, 4)
    out = layers.Conv2D(1, 1, padding="same", activation="sigmoid")(x)
    return compiled(keras.Model(inputs, out, name="RESUNET"), loss)


# --- LinkNet -----------------------------------------------------------------------------------

def linknet(classes=3, activation="softmax", loss=None):
    """qubvel/segmentation_models segmentation_models/models/linknet.py `build_linknet()` with
    DecoderUpsamplingX2Block (Conv1x1BnReLU(in/4), UpSampling2D, Conv3x3BnReLU(in/4),
    Conv1x1BnReLU(skip channels), Add(skip)), a head Conv2D(classes, 3) + Activation; the
    encoder here a small strided Conv-BN-ReLU stack (no backbone weights), the decoder built
    with decoder_use_batchnorm=False. The multiclass
    compile of the README (softmax, one-hot masks) with CategoricalFocalCrossentropy.
    """
    def conv_bn_relu(x, f, k=3, strides=1):
        return layers.Activation("relu")(layers.BatchNormalization()(
            layers.Conv2D(f, k, strides=strides, padding="same", use_bias=False)(x)))

    def conv_relu(x, f, k):  # Conv1x1BnReLU / Conv3x3BnReLU with use_batchnorm=False
        return layers.Conv2D(f, k, padding="same", activation="relu")(x)

    def decoder_block(x, skip, f):
        width = max(x.shape[-1] // 4, 2)
        x = conv_relu(layers.UpSampling2D(2)(conv_relu(x, width, 1)), width, 3)
        x = conv_relu(x, skip.shape[-1] if skip is not None else f, 1)
        return layers.Add()([x, skip]) if skip is not None else x

    inputs = keras.Input((S, S, 3))
    e1 = conv_bn_relu(inputs, 8, strides=2)  # /2
    e2 = conv_bn_relu(e1, 16, strides=2)  # /4
    e3 = conv_bn_relu(e2, 32, strides=2)  # /8
    x = decoder_block(e3, e2, 16)
    x = decoder_block(x, e1, 8)
    x = decoder_block(x, None, 8)
    x = layers.Conv2D(classes, 3, padding="same", name="final_conv")(x)
    x = layers.Activation(activation, name=activation)(x)
    loss = keras.losses.CategoricalFocalCrossentropy() if loss is None else loss
    return compiled(keras.Model(inputs, x, name="linknet"), loss)


# --- FPN -------------------------------------------------------------------------------------

def fpn(classes=3, *, last_upsample=True, loss="sparse_categorical_crossentropy"):
    """qubvel/segmentation_models segmentation_models/models/fpn.py `build_fpn()`: FPNBlock
    (1x1 Conv of the skip + UpSampling2D x2 of the coarser level, Add), per-level segmentation
    blocks (Conv3x3BnReLU, here one and use_batchnorm=False) up-sampled to 1/4 (nearest),
    Concatenate aggregation, Conv3x3ReLU, Conv2D(classes, 3), then `UpSampling2D(4, interpolation='bilinear')` back to
    the input size and Activation('softmax'). pyramid_filters 256 -> 8, segmentation 128 -> 8.

    `last_upsample=False`: the head stays at 1/4 (8x8), trained on masks down-sampled to 1/4.
    """
    def conv_bn_relu(x, f, strides=1):
        return layers.Activation("relu")(layers.BatchNormalization()(
            layers.Conv2D(f, 3, strides=strides, padding="same", use_bias=False)(x)))

    inputs = keras.Input((S, S, 3))
    c2 = conv_bn_relu(conv_bn_relu(inputs, 8, 2), 8, 2)  # /4
    c3 = conv_bn_relu(c2, 16, 2)  # /8
    c4 = conv_bn_relu(c3, 16, 2)  # /16
    p4 = layers.Conv2D(8, 1)(c4)
    p3 = layers.Add()([layers.UpSampling2D(2)(p4), layers.Conv2D(8, 1)(c3)])
    p2 = layers.Add()([layers.UpSampling2D(2)(p3), layers.Conv2D(8, 1)(c2)])
    def seg_block(p, up):  # use_batchnorm=False, one Conv3x3ReLU
        p = layers.Conv2D(8, 3, padding="same", activation="relu")(p)
        return layers.UpSampling2D(up)(p) if up > 1 else p

    heads = [seg_block(p, up) for p, up in ((p4, 4), (p3, 2), (p2, 1))]
    x = layers.Conv2D(8, 3, padding="same", activation="relu")(layers.Concatenate()(heads))
    x = layers.Conv2D(classes, 3, padding="same", name="final_conv")(x)
    if last_upsample:
        x = layers.UpSampling2D(4, interpolation="bilinear", name="final_upsampling")(x)
    x = layers.Activation("softmax", name="softmax")(x)
    return compiled(keras.Model(inputs, x, name="fpn"), loss)


# --- SegFormer head ---------------------------------------------------------------------------

def segformer(num_classes=3):
    """keras-team/keras-cv keras_cv/models/segmentation/segformer/segformer.py `SegFormer`:
    each pyramid level projected by Dense(projection_filters) and Resizing(H/4, W/4,
    'bilinear'), Concatenate, Conv 1x1 + BN + ReLU, Dropout(0.1), Conv2D(num_classes, 1,
    activation='softmax') at 1/4, then `keras.layers.Resizing(H, W, interpolation='bilinear')`
    to the input size. The MiT backbone is replaced by strided Conv-LayerNorm stages (/4, /8,
    /16); projection_filters 256 -> 8. Compiled with sparse_categorical_crossentropy.
    """
    inputs = keras.Input((S, S, 3))
    feats, x = [], inputs
    for f, s in ((8, 4), (16, 2), (16, 2)):  # overlapping patch embeddings
        x = layers.LayerNormalization()(layers.Conv2D(f, s + 1, strides=s, padding="same")(x))
        x = layers.Activation("gelu")(layers.Dense(f)(x))
        feats.append(x)
    h, w = feats[0].shape[1:3]
    outs = [layers.Resizing(h, w, interpolation="bilinear")(layers.Dense(8)(f)) for f in feats]
    seg = layers.Concatenate(axis=3)(outs[::-1])
    seg = layers.Activation("relu")(layers.BatchNormalization()(
        layers.Conv2D(8, 1, use_bias=False)(seg)))
    seg = layers.Dropout(0.1)(seg)
    seg = layers.Conv2D(num_classes, 1, activation="softmax", name="segformer_logits")(seg)
    out = layers.Resizing(S, S, interpolation="bilinear", name="resize_to_input")(seg)
    return compiled(keras.Model(inputs, out, name="segformer"), "sparse_categorical_crossentropy")


# --- SegNet (UpSampling2D instead of max-pooling indices) -------------------------------------

def segnet(n_classes=1, *, pixels=True, head="sigmoid", loss="binary_crossentropy"):
    """SegNet with UpSampling2D in place of the max-pooling indices (keras has no unpooling):
    s059ff/keras-segnet-camvid model.py `SegNet()` for one class (Conv2D(1, 1) ->
    Reshape((H*W, 1)) -> Activation('sigmoid') -> Reshape((H, W, 1))), and
    Skydipper/CNN-tests models/keras/SegNet.py `segnet(inputShape, nClasses)` for several
    (Conv2D(nClasses, 1) -> Reshape((H*W, nClasses)) -> softmax over the pixels' classes, here a
    `layers.Softmax(axis=-1)`). Conv-BN-ReLU encoder with 3 MaxPooling2D, widths 64..512 ->
    8..32.
    """
    def cbr(x, f, relu=True):
        x = layers.BatchNormalization()(layers.Conv2D(f, 3, padding="same")(x))
        return layers.Activation("relu")(x) if relu else x

    inputs = keras.Input((S, S, 3))
    x = inputs
    for f in (8, 16, 16):
        x = layers.MaxPooling2D(2)(cbr(x, f))
    x = cbr(x, 32)
    for f in (16, 16, 8):
        x = cbr(layers.UpSampling2D(2)(x), f)
    x = layers.Conv2D(n_classes, 1, padding="valid", name="classifier")(x)
    x = layers.Reshape((S * S, n_classes), name="to_pixels")(x)
    if head == "sigmoid":
        x = layers.Activation("sigmoid")(x)
    else:
        x = layers.Softmax(axis=-1, name="pixel_softmax")(x)
    if not pixels:
        x = layers.Reshape((S, S, n_classes), name="to_image")(x)
    return compiled(keras.Model(inputs, x, name="segnet"), loss)


# --- ENet ------------------------------------------------------------------------------------

def enet(nc=3, *, head="softmax", loss="sparse_categorical_crossentropy"):
    """PavlosMelissinos/enet-keras src/models/enet_naive_upsampling/{encoder,decoder}.py:
    initial_block (Conv 3x3/2 with 13 filters concatenated with MaxPooling2D of the input),
    bottlenecks (1x1 projection, 3x3 (or strided 2x2) conv, 1x1 expansion, BN + PReLU,
    SpatialDropout2D, added to a main branch that is max-pooled and 1x1-projected when the
    block down-samples), decoder bottlenecks with Conv2DTranspose up-sampling, and a last
    Conv2DTranspose(nc, 2, strides=2) to full size. Stage widths 64/128 -> 16/16.

    `head`: "softmax" (the repository's Activation('softmax')), None (logits, compiled with
    from_logits=True), "relu" (a Conv2DTranspose(nc, activation='relu') as last layer).
    """
    def bottleneck(x, out, downsample=False, dropout=0.01):
        internal = max(out // 4, 2)
        s = 2 if downsample else 1
        y = layers.Conv2D(internal, s, strides=s, use_bias=False)(x)
        y = layers.PReLU(shared_axes=[1, 2])(layers.BatchNormalization()(y))
        y = layers.Conv2D(internal, 3, padding="same")(y)
        y = layers.PReLU(shared_axes=[1, 2])(layers.BatchNormalization()(y))
        y = layers.BatchNormalization()(layers.Conv2D(out, 1, use_bias=False)(y))
        y = layers.SpatialDropout2D(dropout)(y)
        main = x
        if downsample:
            main = layers.MaxPooling2D(2)(main)
        if main.shape[-1] != out:
            main = layers.Conv2D(out, 1, use_bias=False)(main)
        return layers.PReLU(shared_axes=[1, 2])(layers.add([y, main]))

    def up_bottleneck(x, out):
        y = layers.Conv2DTranspose(out, 3, strides=2, padding="same")(x)
        return layers.Activation("relu")(layers.BatchNormalization()(y))

    inputs = keras.Input((S, S, 3))
    conv = layers.Conv2D(13, 3, strides=2, padding="same")(inputs)
    x = layers.concatenate([conv, layers.MaxPooling2D(2)(inputs)])  # 16 channels, /2
    x = bottleneck(x, 16, downsample=True)  # /4
    x = bottleneck(x, 16, dropout=0.1)
    x = bottleneck(up_bottleneck(x, 8), 8)  # /2
    activation = {"softmax": "softmax", "relu": "relu", None: None}[head]
    x = layers.Conv2DTranspose(nc, 2, strides=2, padding="same", activation=activation,
                               name="fullconv")(x)
    if head is None:
        loss = keras.losses.SparseCategoricalCrossentropy(from_logits=True)
    return compiled(keras.Model(inputs, x, name="enet"), loss)


# --- ERFNet ----------------------------------------------------------------------------------

def erfnet(num_classes=3, *, activation="linear", loss=None, mixed=False):
    """chentairan/ErfNet ErfNet.py `ERFNet._get_model()`: _downsampler_block (Conv 2x2/2 of
    noFilters - in channels concatenated with MaxPool2D, BN, ReLU), _non_bottleneck_1d (3x1
    and 1x3 convolutions, the second pair dilated, BN, Dropout, residual add, ReLU),
    _upsampler_block (Conv2DTranspose 3x3/2, BN, ReLU) and an output Conv2DTranspose(k=2,
    strides=2) — the file's own has 1 filter and activation='relu' with loss 'mse'. Here
    num_classes filters; `activation`: "relu" (the file's), "linear" (logits as a trailing
    `layers.Activation('linear')`, from_logits=True) or "softmax". `mixed`: built under
    keras.mixed_precision.set_global_policy('mixed_float16') with the last
    Activation('softmax', dtype='float32') of the mixed precision guide
    (tensorflow/docs site/en/guide/mixed_precision.ipynb). Widths 16/64/128 -> 8/16/32, 8 + 4
    non-bottlenecks -> 2 + 1.
    """
    def downsampler(x, f):
        conv = layers.Conv2D(f - x.shape[-1], 2, strides=2, padding="valid")(x)
        x = layers.concatenate([layers.MaxPooling2D(2)(x), conv])
        return layers.ReLU()(layers.BatchNormalization(epsilon=1e-3)(x))

    def non_bottleneck_1d(x, f, dropout, dil):
        y = layers.ReLU()(layers.Conv2D(f, (3, 1), padding="same")(x))
        y = layers.ReLU()(layers.BatchNormalization(epsilon=1e-3)(
            layers.Conv2D(f, (1, 3), padding="same")(y)))
        y = layers.ReLU()(layers.Conv2D(f, (3, 1), padding="same", dilation_rate=(dil, 1))(y))
        y = layers.BatchNormalization(epsilon=1e-3)(
            layers.Conv2D(f, (1, 3), padding="same", dilation_rate=(1, dil))(y))
        if dropout:
            y = layers.Dropout(dropout)(y)
        return layers.ReLU()(layers.add([y, x]))

    def upsampler(x, f):
        x = layers.Conv2DTranspose(f, 3, strides=2, padding="same")(x)
        return layers.ReLU()(layers.BatchNormalization(epsilon=1e-3)(x))

    if mixed:
        keras.mixed_precision.set_global_policy("mixed_float16")
    try:
        inputs = keras.Input((S, S, 3))
        x = downsampler(inputs, 8)
        x = non_bottleneck_1d(downsampler(x, 16), 16, 0.03, 1)
        x = non_bottleneck_1d(downsampler(x, 32), 32, 0.03, 2)
        x = non_bottleneck_1d(upsampler(x, 16), 16, 0, 1)
        x = upsampler(x, 8)
        if activation == "relu":
            out = layers.Conv2DTranspose(num_classes, 2, strides=2, padding="valid",
                                         activation="relu", name="output")(x)
        else:
            out = layers.Conv2DTranspose(num_classes, 2, strides=2, padding="valid",
                                         name="output")(x)
            out = layers.Activation(activation, dtype="float32", name="predictions")(out)
        model = keras.Model(inputs, out, name="erfnet")
    finally:
        keras.mixed_precision.set_global_policy("float32")
    if loss is None:
        loss = keras.losses.SparseCategoricalCrossentropy(from_logits=activation == "linear")
    return compiled(model, loss)


# --- a softmax applied on the output tensor (no layer) ---------------------------------------

def ops_softmax_unet(fn="ops"):
    """The Keras 3 functional API's "any keras.ops call on a symbolic tensor" (as keras-io
    examples/vision/deeplabv3_plus.py calls `ops.nn.relu` on one): a two-level U-Net whose
    Conv2D(3, 1) scores go through `keras.ops.softmax(x)` (`fn="ops"`) or
    `keras.activations.softmax(x)` (any other `fn`), sparse_categorical_crossentropy.
    `fn="relu"`: no softmax, the scores layer made Conv2D(3, 1, activation="relu").
    """
    inputs = keras.Input((S, S, 3))
    e1 = layers.Conv2D(8, 3, padding="same", activation="relu")(inputs)
    e2 = layers.Conv2D(16, 3, padding="same", activation="relu")(layers.MaxPooling2D(2)(e1))
    u = layers.Conv2DTranspose(8, 2, strides=2, padding="same")(e2)
    x = layers.Conv2D(8, 3, padding="same", activation="relu")(layers.concatenate([e1, u]))
    x = layers.Conv2D(3, 1, name="scores", activation="relu" if fn == "relu" else None)(x)
    if fn != "relu":
        x = ops.softmax(x, axis=-1) if fn == "ops" else keras.activations.softmax(x, axis=-1)
    return compiled(keras.Model(inputs, x, name=f"{fn}_softmax_unet"),
                    "sparse_categorical_crossentropy")


# --- several outputs -------------------------------------------------------------------------

def u2net_lite(n_classes=1, *, main_activation="sigmoid", as_dict=False):
    """The Keras U^2-Net of xuebinqin/U-2-Net issue #141 ("Keras model", U2NET_lite): side
    outputs d1..d6 from each decoder stage, up-sampled to the input size, and a fused
    d0 = Conv2D(n_classes, 1)(concatenate([d1..d6])), each through its own
    Activation(..., name='d<i>', dtype='float32'), returned as a list [d0, d1, ...] (the fused
    output first) and compiled with one loss per output and loss_weights, as keras-io
    examples/vision/basnet_segmentation.py trains its 8 side outputs. RSU blocks -> Conv-BN-ReLU
    pairs, 6 stages -> 3. `as_dict`: the outputs as a dict {'d0': .., 'd1': ..} with dict
    losses and loss_weights (the keras-io functional API guide's multi-output compile).
    """
    def rebnconv(x, f):
        return layers.Activation("relu")(layers.BatchNormalization()(
            layers.Conv2D(f, 3, padding="same")(x)))

    inputs = keras.Input((S, S, 3))
    h1 = rebnconv(rebnconv(inputs, 8), 8)
    h2 = rebnconv(rebnconv(layers.MaxPooling2D(2)(h1), 16), 16)
    h3 = rebnconv(layers.MaxPooling2D(2)(h2), 16)
    h2d = rebnconv(layers.concatenate([layers.UpSampling2D(2)(h3), h2]), 16)
    h1d = rebnconv(layers.concatenate([layers.UpSampling2D(2)(h2d), h1]), 8)
    d1 = layers.Conv2D(n_classes, 3, padding="same")(h1d)
    d2 = layers.UpSampling2D(2, interpolation="bilinear")(
        layers.Conv2D(n_classes, 3, padding="same")(h2d))
    d3 = layers.UpSampling2D(4, interpolation="bilinear")(
        layers.Conv2D(n_classes, 3, padding="same")(h3))
    d0 = layers.Conv2D(n_classes, 1)(layers.concatenate([d1, d2, d3]))
    outs = [layers.Activation(main_activation if i == 0 else "sigmoid", name=f"d{i}",
                              dtype="float32")(d) for i, d in enumerate((d0, d1, d2, d3))]
    weights = [1.0, 0.5, 0.3, 0.2]
    if as_dict:
        model = keras.Model(inputs, {f"d{i}": o for i, o in enumerate(outs)},
                            name="u2net_lite")
        return compiled(model, {f"d{i}": "binary_crossentropy" for i in range(4)},
                        loss_weights={f"d{i}": w for i, w in enumerate(weights)})
    return compiled(keras.Model(inputs, outs, name="u2net_lite"), ["binary_crossentropy"] * 4,
                    loss_weights=weights)


# --- a classifier head on a segmentation task ------------------------------------------------

def flatten_dense_fcn(num_classes=3, *, head="dense"):
    """The mistake of keras-team/keras issue #2526 ("FCN for image segmentation": an image
    classifier's Flatten + Dense head kept for per-pixel labels): a conv encoder to 1/4, then
    `Flatten()` and `Dense(num_classes, activation='softmax')`, one prediction per image;
    compiled with sparse_categorical_crossentropy on [N, H, W] masks. `head="conv"`: the
    fully convolutional fix, Conv2D(num_classes, 1) + UpSampling2D(4, 'bilinear') + softmax.
    """
    inputs = keras.Input((S, S, 3))
    x = layers.Conv2D(8, 3, padding="same", activation="relu")(inputs)
    x = layers.Conv2D(16, 3, strides=2, padding="same", activation="relu")(x)
    x = layers.Conv2D(16, 3, strides=2, padding="same", activation="relu")(x)
    if head == "dense":
        out = layers.Dense(num_classes, activation="softmax", name="predictions")(
            layers.Flatten()(x))
    else:
        x = layers.UpSampling2D(4, interpolation="bilinear")(layers.Conv2D(num_classes, 1)(x))
        out = layers.Activation("softmax", name="predictions")(x)
    return compiled(keras.Model(inputs, out, name="fcn_head"), "sparse_categorical_crossentropy")


# --- the cases ------------------------------------------------------------------------------

@dataclass(eq=False)
class Case:
    name: str
    build: Callable[[], keras.Model]
    data: Callable
    verdict: str  # sound | broken | scaling
    source: str
    words: list[tuple[str, ...]] = field(default_factory=list)  # broken: in one error
    fix_words: tuple[str, ...] = ()  # broken: one of them in that error's fix
    fixed: Case | None = None  # broken: the model and data after that fix
    forbid: tuple[str, ...] = ()  # words no warning may hold (advice that would be wrong)
    constant: bool = False  # the output is exactly constant (1.0) at initialisation
    targets: Callable | None = None  # masks -> what model.fit takes (several outputs)
    wrong: tuple[str, ...] = ()  # words no error may hold (a second error that would be wrong)

    def __repr__(self):
        return self.name


GRAY = data(channels=1)
BIN = data()
THREE = data(classes=3, fmt="index1")
THREE_IDX = data(classes=3, fmt="index")
THREE_RAW = data(classes=3, fmt="index1", scale=255.0)
SOFTMAX_1 = [("softmax over a single output channel", "softmax over one channel")]
CONSTANT_1 = [("constant",), ("1.0", "= 1", "exactly 1", "is 1 ")]
NON_INTEGER = [("non-integer", "not whole", "fractional", "not integer")]

# the sound models (a fix that gives one of them back names it as its `fixed`)
ZHIXUHAO = Case("zhixuhao unet", zhixuhao_unet, GRAY, "sound", "zhixuhao/unet model.py")
OXFORD = Case("keras.io oxford U-Net", keras_io_oxford_unet, THREE, "sound",
              "keras-team/keras-io examples/vision/oxford_pets_image_segmentation.py")
TF_TUTORIAL = Case("TF tutorial MobileNetV2 U-Net", tf_tutorial_unet, THREE, "sound",
                   "tensorflow/docs site/en/tutorials/images/segmentation.ipynb")
DIVAMGUPTA_2 = Case("divamgupta unet_mini, 2 classes", lambda: divamgupta_unet_mini(2),
                    data(classes=2, fmt="flat_onehot"), "sound",
                    "divamgupta/image-segmentation-keras issue #131 ('Two classes should work "
                    "fine')")
SM = Case("segmentation_models Unet(vgg16, classes=1, sigmoid)", sm_unet, BIN, "sound",
          "qubvel/segmentation_models segmentation_models/models/unet.py")
KAROLZAK = Case("keras-unet custom_unet (deconv, sigmoid)", karolzak_custom_unet, BIN, "sound",
                "karolzak/keras-unet keras_unet/models/custom_unet.py")
DEEPLAB = Case("keras.io DeepLabV3+ (preprocess_input inside, 0..255 images)", deeplab_v3_plus,
               THREE_RAW, "sound", "keras-team/keras-io examples/vision/deeplabv3_plus.py",
               forbid=("divide", "/ 255", "scale the images", "rescal"))
GROUPNORM = Case("GroupNormalization U-Net, 1 logit + BCE from_logits", groupnorm_unet, BIN,
                 "sound", "keras-team/keras-io examples/generative/ddpm.py ResidualBlock")
SUBCLASSED_SIGMOID = Case("subclassed U-Net, one sigmoid channel + binary_crossentropy",
                          lambda: subclassed_unet(1, "sigmoid", "binary_crossentropy"), BIN,
                          "sound", "taipingeric/fusionlab fusionlab/segmentation/tfbase.py")

CASES: list[Case] = [
    ZHIXUHAO,
    Case("zhixuhao unet, Rescaling(1/255) inside, 0..255 images",
         lambda: zhixuhao_unet(rescale=True), data(channels=1, scale=255.0), "sound",
         "zhixuhao/unet model.py with keras.io's Rescaling(1.0 / 255) entry block",
         forbid=("255", "divide", "scale the images", "rescal")),
    Case("zhixuhao unet fed 0..255 images without rescaling", zhixuhao_unet,
         data(channels=1, scale=255.0), "scaling",
         "zhixuhao/unet data.py adjustData (img / 255) skipped"),
    Case("zhixuhao unet, softmax over one channel", lambda: zhixuhao_unet(activation="softmax"),
         GRAY, "broken", "jocicmarko/ultrasound-nerve-segmentation issue #18",
         words=SOFTMAX_1, fix_words=("sigmoid",), fixed=ZHIXUHAO),
    Case("zhixuhao unet, categorical_crossentropy on one channel",
         lambda: zhixuhao_unet(loss="categorical_crossentropy"), GRAY, "broken",
         "zhixuhao/unet model.py compiled with categorical_crossentropy (seg's README report)",
         words=[("one output channel",), ("categorical_crossentropy",)],
         fix_words=("binary_crossentropy",), fixed=ZHIXUHAO),
    Case("zhixuhao unet, Reshape((H, W)) before categorical_crossentropy",
         lambda: zhixuhao_unet(reshape=True, loss="categorical_crossentropy"),
         data(channels=1, fmt="index"), "broken",
         "seg's README seed report: a Reshape to match [N, H, W] masks",
         words=[("class axis",), ("reshape",)], fix_words=("remove `reshape`",),
         fixed=Case("zhixuhao unet, no Reshape, binary_crossentropy, [N, H, W] masks",
                    zhixuhao_unet, data(channels=1, fmt="index"), "sound", "")),

    OXFORD,
    Case("keras.io oxford U-Net fed 0..255 images (as the tutorial does)", keras_io_oxford_unet,
         THREE_RAW, "scaling", "keras-io oxford_pets_image_segmentation.py (load_img, no scaling)"),
    Case("keras.io oxford U-Net, softmax into from_logits=True",
         lambda: keras_io_oxford_unet(loss=sparse_logits()), THREE, "broken",
         "keras-io oxford U-Net compiled with the TF tutorial's loss",
         words=[("from_logits",), ("softmax",)], fix_words=("remove the softmax",),
         fixed=Case("keras.io oxford U-Net, logits + from_logits=True",
                    lambda: keras_io_oxford_unet(activation=None, loss=sparse_logits()), THREE,
                    "sound", "")),
    Case("keras.io oxford U-Net, one-hot masks into sparse CE", keras_io_oxford_unet,
         data(classes=3, fmt="onehot"), "broken", "keras-io oxford U-Net with to_categorical masks",
         words=[("one-hot",), ("sparse_categorical_crossentropy",)], fix_words=("argmax",),
         fixed=Case("keras.io oxford U-Net, masks.argmax(-1)", keras_io_oxford_unet, THREE_IDX,
                    "sound", "")),
    Case("keras.io oxford U-Net, trimap labels 1..3 (no `y -= 1`)", keras_io_oxford_unet,
         data(classes=3, fmt="plus1"), "broken",
         "keras-io oxford_pets_image_segmentation.py ('Ground truth labels are 1, 2, 3')",
         words=[("outside [0, 3)",), ("[3]",)], fix_words=("map the raw values",), fixed=OXFORD),

    TF_TUTORIAL,
    Case("TF tutorial U-Net, logits into sparse_categorical_crossentropy (from_logits=False)",
         lambda: tf_tutorial_unet(loss="sparse_categorical_crossentropy"), THREE, "broken",
         "the TF tutorial compiled with the loss by name",
         words=[("from_logits=false",), ("logits",)], fix_words=("from_logits=true",),
         fixed=TF_TUTORIAL),
    Case("TF tutorial U-Net, OUTPUT_CLASSES = 1 with sparse CE", lambda: tf_tutorial_unet(1),
         BIN, "broken", "a TF-tutorial port with 'OUTPUT_CLASSES = 1 # little trick :)'",
         words=[("one output channel",), ("sparsecategoricalcrossentropy",)],
         fix_words=("binarycrossentropy(from_logits=true)",),
         fixed=Case("TF tutorial U-Net, 1 logit + BinaryCrossentropy(from_logits=True)",
                    lambda: tf_tutorial_unet(1, loss=keras.losses.BinaryCrossentropy(
                        from_logits=True)), BIN, "sound", "")),
    Case("TF tutorial U-Net, last layer not strided (half-size output)",
         lambda: tf_tutorial_unet(last_strided=False), THREE, "broken",
         "the TF tutorial with its last Conv2DTranspose made a 1x1 Conv2D",
         words=[("output size",), ("the output is 16x16",)], fix_words=("up-sampling",),
         fixed=TF_TUTORIAL),
    Case("TF tutorial U-Net, masks resized bilinearly", tf_tutorial_unet,
         data(classes=3, resize="bilinear"), "broken",
         "tensorflow/docs pull #2159 (tf.image.resize of the mask without NEAREST)",
         words=NON_INTEGER, fix_words=("nearest",),
         fixed=Case("TF tutorial U-Net, masks resized with nearest", tf_tutorial_unet,
                    data(classes=3, resize="nearest"), "sound", "")),

    Case("divamgupta unet_mini, Reshape(H*W, C) + softmax, one-hot [N, H*W, C]",
         divamgupta_unet_mini, data(classes=3, fmt="flat_onehot"), "sound",
         "divamgupta/image-segmentation-keras models/unet.py + models/model_utils.py"),
    DIVAMGUPTA_2,
    Case("divamgupta unet_mini, n_classes=1 (softmax over one channel)",
         lambda: divamgupta_unet_mini(1), data(classes=2, fmt="flat_background"), "broken",
         "divamgupta/image-segmentation-keras issue #131; ultrasound-nerve-segmentation #18",
         words=SOFTMAX_1, fix_words=("n_classes=2",), fixed=DIVAMGUPTA_2),

    SM,
    Case("segmentation_models Unet(classes=3, softmax), categorical CE on one-hot",
         lambda: sm_unet(3, "softmax", "categorical_crossentropy"), data(classes=3, fmt="onehot"),
         "sound", "qubvel/segmentation_models README (multiclass: activation='softmax')"),
    Case("segmentation_models Unet(classes=1, activation='softmax')",
         lambda: sm_unet(1, "softmax"), BIN, "broken",
         "qubvel/segmentation_models models/unet.py with activation='softmax' for 1 class",
         words=SOFTMAX_1, fix_words=("sigmoid",), fixed=SM),
    Case("segmentation_models Unet(classes=3, softmax), class-index masks into categorical CE",
         lambda: sm_unet(3, "softmax", "categorical_crossentropy"), THREE_IDX, "broken",
         "qubvel/segmentation_models multiclass Unet fed integer masks",
         words=[("class-index",), ("categorical_crossentropy",)],
         fix_words=("sparsecategoricalcrossentropy",),
         fixed=Case("segmentation_models Unet(classes=3), sparse CE",
                    lambda: sm_unet(3, "softmax", keras.losses.SparseCategoricalCrossentropy()),
                    THREE_IDX, "sound", "")),

    KAROLZAK,
    Case("keras-unet custom_unet (upsample_mode='simple')",
         lambda: karolzak_custom_unet(upsample_mode="simple"), BIN, "sound",
         "karolzak/keras-unet keras_unet/models/custom_unet.py"),
    Case("keras-unet custom_unet, num_classes=1, output_activation='softmax'",
         lambda: karolzak_custom_unet(output_activation="softmax"), BIN, "broken",
         "karolzak/keras-unet custom_unet docstring ('sigmoid' or 'softmax')",
         words=SOFTMAX_1, fix_words=("sigmoid",), fixed=KAROLZAK),
    Case("keras-unet custom_unet, 0/255 masks", karolzak_custom_unet, data(fmt="x255"), "broken",
         "hlamba28/UNET-TGS issue #8 (masks not divided by 255)",
         words=[("outside [0, 2)",), ("[255]",)], fix_words=("divide them by 255", "// 255"),
         fixed=KAROLZAK),

    DEEPLAB,
    Case("keras.io DeepLabV3+, masks resized bilinearly (read_image as written)",
         deeplab_v3_plus, data(classes=3, resize="bilinear", scale=255.0), "broken",
         "keras-io deeplabv3_plus.py read_image(mask=True): tf_image.resize, default bilinear",
         words=NON_INTEGER, fix_words=("nearest",),
         fixed=Case("keras.io DeepLabV3+, masks resized with nearest", deeplab_v3_plus,
                    data(classes=3, resize="nearest", scale=255.0), "sound", "")),
    Case("keras.io DeepLabV3+, softmax head with from_logits=True",
         lambda: deeplab_v3_plus(activation="softmax"), THREE_RAW, "broken",
         "keras-io deeplabv3_plus.py with activation='softmax' added to the head",
         words=[("from_logits",), ("softmax",)], fix_words=("remove the softmax",),
         fixed=DEEPLAB),
    Case("keras.io DeepLabV3+, last up-sampling x2 short (half-size output)",
         lambda: deeplab_v3_plus(final_up=False), THREE_RAW, "broken",
         "keras-io deeplabv3_plus.py with the final UpSampling2D size miscomputed",
         words=[("output size",), ("the output is 16x16",)], fix_words=("up-sampling",),
         fixed=DEEPLAB),

    Case("subclassed U-Net, logits + sparse CE from_logits", subclassed_unet, data(fmt="index"),
         "sound", "taipingeric/fusionlab fusionlab/segmentation/tfbase.py"),
    Case("subclassed U-Net, softmax over one channel (output exactly 1.0)",
         lambda: subclassed_unet(1, "softmax", "binary_crossentropy"), BIN, "broken",
         "a fusionlab-style subclass with Conv2D(1, activation='softmax')",
         words=CONSTANT_1, fix_words=("sigmoid",), constant=True, fixed=SUBCLASSED_SIGMOID),
    Case("subclassed U-Net, categorical_crossentropy on one sigmoid channel",
         lambda: subclassed_unet(1, "sigmoid", "categorical_crossentropy"), BIN, "broken",
         "a fusionlab-style subclass compiled with categorical_crossentropy",
         words=[("one output channel",), ("categorical_crossentropy",)],
         fix_words=("binary_crossentropy",), fixed=SUBCLASSED_SIGMOID),

    Case("Lambda(keras.ops.softmax) over 3 channels", lambda_softmax_unet, THREE_IDX, "sound",
         "newbe.dev/cross-entropy-loss-for-semantic-segmentation-keras (depth_softmax Lambda)"),
    Case("Lambda(keras.ops.softmax) over one channel (output exactly 1.0)",
         lambda: lambda_softmax_unet(1, "binary_crossentropy"), BIN, "broken",
         "the depth_softmax Lambda with a single output channel",
         words=CONSTANT_1, fix_words=("sigmoid",), constant=True,
         fixed=Case("Lambda(keras.ops.sigmoid) over one channel",
                    lambda: lambda_softmax_unet(1, "binary_crossentropy", "sigmoid"), BIN,
                    "sound", "")),

    GROUPNORM,
    Case("GroupNormalization U-Net, logit into binary_crossentropy (from_logits=False)",
         lambda: groupnorm_unet("binary_crossentropy"), BIN, "broken",
         "a ddpm-ResidualBlock U-Net compiled with loss='binary_crossentropy'",
         words=[("from_logits=false",), ("logits",)], fix_words=("from_logits=true",),
         fixed=GROUPNORM),
]

# --- second round: the cases --------------------------------------------------------------

BIN_U8 = data(fmt="index1")  # [N, H, W, 1] uint8 0/1
THREE_ONEHOT = data(classes=3, fmt="onehot")
RELU = [("relu",)]
FOUR = [("one-hot", "channels", "classes"), ("4",)]
ATTENTION = Case("Attention ResUNet, sigmoid head + dice_coef_loss", attention_unet, BIN, "sound",
                 "MoleImg/Attention_UNet AttResUNet.py (usage docstring: loss=dice_coef_loss)")
ATTENTION_BCE = Case("Attention ResUNet, sigmoid head + binary_crossentropy",
                     lambda: attention_unet(loss="binary_crossentropy"), BIN, "sound", "")
UNETPP = Case("U-Net++ (keras-unet-collection unet_plus_2d), sigmoid + BCE", unet_plus_plus,
              BIN, "sound", "yingkaisha/keras-unet-collection _model_unet_plus_2d.py")
LINKNET = Case("LinkNet (segmentation_models), softmax + CategoricalFocalCrossentropy, one-hot",
               linknet, THREE_ONEHOT, "sound",
               "qubvel/segmentation_models segmentation_models/models/linknet.py")
SEGNET_FLAT = Case("SegNet, Reshape((H*W, C)) + Softmax(axis=-1), sparse CE on [N, H*W] masks",
                   lambda: segnet(3, head="softmax", loss="sparse_categorical_crossentropy"),
                   data(classes=3, fmt="flat_index"), "sound",
                   "Skydipper/CNN-tests models/keras/SegNet.py")
ENET_SOFTMAX = Case("ENet (naive upsampling), softmax + sparse CE", enet, THREE_IDX, "sound",
                    "PavlosMelissinos/enet-keras src/models/enet_naive_upsampling")
ENET_2 = Case("ENet, 2 classes, softmax + sparse CE on [N, H, W, 1] uint8 0/1 masks",
              lambda: enet(2), BIN_U8, "sound", "")
U2NET = Case("U^2-Net lite, 4 outputs (fused first), list of BCE losses + loss_weights",
             u2net_lite, BIN, "sound",
             "xuebinqin/U-2-Net issue #141 (Keras U2NET_lite); keras-io basnet_segmentation.py",
             targets=lambda y: [y] * 4)
FCN_CONV = Case("conv encoder, Conv2D(C, 1) + bilinear UpSampling2D(4) + softmax",
                lambda: flatten_dense_fcn(head="conv"), THREE_IDX, "sound", "")
OPS_SOFTMAX = Case("keras.ops.softmax on the output tensor", ops_softmax_unet, THREE_IDX,
                  "sound", "keras-io deeplabv3_plus.py style ops on symbolic tensors")
DS_FIXED = Case("ResUNet, tf.data batched, masks mapped / 255",
                resunet, data(dataset="batched"), "sound", "")

CASES += [
    ATTENTION,
    Case("Attention ResUNet, jacard_coef_loss", lambda: attention_unet(loss=jacard_coef_loss),
         BIN, "sound", "MoleImg/Attention_UNet AttResUNet.py jacard_coef_loss"),
    Case("Attention ResUNet, the file's own Conv2D(1) + BN + ReLU head, binary_crossentropy",
         lambda: attention_unet(head="bn_relu", loss="binary_crossentropy"), BIN, "broken",
         "MoleImg/Attention_UNet AttResUNet.py head; vanvalenlab/deepcell-tf issue #624 "
         "(ReLU on a 1-channel output)",
         words=RELU, fix_words=("sigmoid",), fixed=ATTENTION_BCE),

    UNETPP,
    Case("U-Net++ deep supervision: 2 outputs, list of losses, loss_weights",
         lambda: unet_plus_plus(deep_supervision=True, loss_weights=[0.5, 1.0]), BIN, "sound",
         "yingkaisha/keras-unet-collection unet_plus_2d(deep_supervision=True)",
         targets=lambda y: [y, y],
         # the layers only the second output reads do learn, from its loss
         forbid=("will not learn", "no gradient")),
    Case("U-Net++ with keras.losses.BinaryFocalCrossentropy",
         lambda: unet_plus_plus(loss=keras.losses.BinaryFocalCrossentropy()), BIN, "sound",
         "keras-unet-collection U-Net++ compiled with Keras' BinaryFocalCrossentropy"),
    Case("U-Net++, Conv2D(1, 1, activation='softmax') for 2 classes",
         lambda: unet_plus_plus(activation="softmax"), BIN, "broken",
         "mlyg/unified-focal-loss issue #10 (U-Net++ port); ultrasound-nerve-segmentation #18",
         words=CONSTANT_1, fix_words=("sigmoid",), constant=True, fixed=UNETPP),

    Case("ResUNet, bce_dice_loss function", lambda: resunet(loss=bce_dice_loss), BIN, "sound",
         "nikhilroxtomar/Deep-Residual-Unet + SebastianHafner/DDA_UrbanExtraction losses.py"),
    Case("ResUNet, keras.losses.Dice", lambda: resunet(loss=keras.losses.Dice()), BIN, "sound",
         "nikhilroxtomar/Deep-Residual-Unet compiled with Keras 3's Dice loss"),
    Case("ResUNet, FocalLoss function, [N, H, W, 1] uint8 masks", lambda: resunet(loss=FocalLoss),
         BIN_U8, "sound", "herolava259/gr_project metrics/training/FocalLoss.py"),
    Case("ResUNet, Rescaling(1/255) inside, uint8 0..255 images",
         lambda: resunet(rescale=True), data(uint8=True), "sound",
         "nikhilroxtomar/Deep-Residual-Unet with keras.io's Rescaling(1.0 / 255) entry",
         forbid=("divide", "/ 255", "scale the images", "rescal")),
    Case("ResUNet, unbatched tf.data.Dataset of (image, mask)", resunet,
         data(dataset="unbatched"), "sound",
         "tf.data.Dataset.from_tensor_slices((images, masks)) without .batch()"),
    Case("ResUNet, batched tf.data.Dataset with 0/255 masks", resunet,
         data(fmt="x255", dataset="batched"), "broken",
         "hlamba28/UNET-TGS issue #8 (masks not divided by 255), fed as a tf.data pipeline",
         words=[("outside [0, 2)", "255")], fix_words=("255",), fixed=DS_FIXED),

    LINKNET,
    Case("LinkNet, to_categorical of 1..3 trimaps (4 one-hot channels) for 3 classes",
         linknet, data(classes=3, fmt="onehot_plus1"), "broken",
         "keras-io oxford pets trimaps one-hot encoded with to_categorical(y) (no y -= 1)",
         words=FOUR, fix_words=("to_categorical(masks, 3)", "num_classes=3", "0..2", "-= 1"),
         fixed=LINKNET),

    Case("FPN (segmentation_models), bilinear UpSampling2D(4) head, [N, H, W] int masks", fpn,
         THREE_IDX, "sound", "qubvel/segmentation_models segmentation_models/models/fpn.py"),
    Case("FPN head left at 1/4, masks at 1/4 too", lambda: fpn(last_upsample=False),
         data(classes=3, fmt="quarter"), "sound",
         "qubvel/segmentation_models fpn.py without last_upsample, masks down-sampled to match"),
    Case("FPN, batched tf.data.Dataset", fpn, data(classes=3, fmt="index", dataset="batched"),
         "sound", "segmentation_models FPN fed a tf.data pipeline"),

    Case("SegFormer head: softmax at 1/4 + Resizing to the input, uint8 [N, H, W] masks",
         segformer, data(classes=3, fmt="index_u8"), "sound",
         "keras-team/keras-cv keras_cv/models/segmentation/segformer/segformer.py"),

    Case("SegNet (UpSampling2D for indices), Reshape + sigmoid + Reshape back",
         lambda: segnet(1, pixels=False), BIN, "sound", "s059ff/keras-segnet-camvid model.py"),
    SEGNET_FLAT,
    Case("SegNet, Reshape((H*W, C)) + Softmax(axis=-1), sparse CE on [N, H*W, 1] masks",
         lambda: segnet(3, head="softmax", loss="sparse_categorical_crossentropy"),
         data(classes=3, fmt="flat_index1"), "sound", "Skydipper/CNN-tests models/keras/SegNet.py"),
    Case("SegNet, Reshape((H*W, C)) + Softmax(axis=-1), categorical CE on [N, H*W, C] one-hot",
         lambda: segnet(3, head="softmax", loss="categorical_crossentropy"),
         data(classes=3, fmt="flat_onehot"), "sound",
         "Skydipper/CNN-tests models/keras/SegNet.py with to_categorical masks reshaped"),
    Case("SegNet, Reshape((H*W, C)) model given [N, H, W] masks",
         lambda: segnet(3, head="softmax", loss="sparse_categorical_crossentropy"), THREE_IDX,
         "broken", "divamgupta/image-segmentation-keras issues #33, #353 (masks not reshaped)",
         words=[("reshape", "pixels", "h*w", "1024")],
         fix_words=("reshape(", "h*w", "1024"), fixed=SEGNET_FLAT),

    ENET_SOFTMAX,
    Case("ENet, logits + SparseCategoricalCrossentropy(from_logits=True)",
         lambda: enet(head=None), THREE_IDX, "sound", "PavlosMelissinos/enet-keras"),
    Case("ENet, last Conv2DTranspose(nc, activation='relu') + sparse CE",
         lambda: enet(head="relu"), THREE_IDX, "broken",
         "chentairan/ErfNet ErfNet.py output layer (activation='relu'); deepcell-tf #624",
         words=RELU, fix_words=("softmax", "from_logits=true"), fixed=ENET_SOFTMAX),
    Case("ENet, 2 classes, sparse CE with [N, H, W, 1] 0/255 masks", lambda: enet(2),
         data(fmt="x255_u8"), "broken",
         "MIScnn issue #93 / liut969/Whole-Heart-Segmentation #1 (label 255 outside [0, 2))",
         words=[("outside [0, 2)",), ("255",)], fix_words=("divide them by 255", "// 255"),
         fixed=ENET_2),

    Case("ERFNet, trailing Activation('linear') + from_logits=True", erfnet, THREE_IDX, "sound",
         "chentairan/ErfNet ErfNet.py"),
    Case("ERFNet, mixed_float16 with Activation('softmax', dtype='float32')",
         lambda: erfnet(activation="softmax", mixed=True), THREE_IDX, "sound",
         "chentairan/ErfNet + tensorflow/docs site/en/guide/mixed_precision.ipynb"),
    Case("ERFNet, the file's relu output layer with num_classes channels + sparse CE",
         lambda: erfnet(activation="relu"), THREE_IDX, "broken",
         "chentairan/ErfNet ErfNet.py (Conv2DTranspose(..., activation='relu') output)",
         words=RELU, fix_words=("softmax", "from_logits=true"),
         fixed=Case("ERFNet, softmax output + sparse CE", lambda: erfnet(activation="softmax"),
                    THREE_IDX, "sound", "")),

    OPS_SOFTMAX,
    Case("U-Net, last layer Conv2D(num_classes, 1, activation='relu') + sparse CE",
         lambda: ops_softmax_unet("relu"), THREE_IDX, "broken",
         "vanvalenlab/deepcell-tf issue #624 (ReLU as the semantic head's activation)",
         words=RELU, fix_words=("softmax", "from_logits=true"), fixed=OPS_SOFTMAX),
    Case("keras.activations.softmax on the output tensor", lambda: ops_softmax_unet("act"),
         data(classes=3, fmt="index1"), "sound", "keras.activations.softmax(x) in a functional model"),

    U2NET,
    Case("U^2-Net lite, dict outputs, dict losses + loss_weights",
         lambda: u2net_lite(as_dict=True), BIN, "sound",
         "xuebinqin/U-2-Net issue #141; keras-io guides/functional_api.py (dict losses)",
         targets=lambda y: {f"d{i}": y for i in range(4)}),
    Case("U^2-Net lite, fused output d0 with softmax over one channel",
         lambda: u2net_lite(main_activation="softmax"), BIN, "broken",
         "xuebinqin/U-2-Net issue #141 Activation('softmax', name='d0') with n_classes=1",
         words=CONSTANT_1, fix_words=("sigmoid",), constant=True, fixed=U2NET,
         targets=lambda y: [y] * 4),

    Case("Flatten + Dense(num_classes) head (one prediction per image)", flatten_dense_fcn,
         THREE_IDX, "broken", "keras-team/keras issue #2526 (FCN for image segmentation)",
         words=[("flatten", "dense", "not an image", "per image", "output shape", "(n, 3)",
                 "shape")],
         fix_words=("conv2d", "1x1", "fully convolutional"), fixed=FCN_CONV,
         wrong=("outside [0, 2)",)),  # the Dense head has 3 classes: labels 0..2 are right
]

SOUND = [c for c in CASES if c.verdict == "sound"]
BROKEN = [c for c in CASES if c.verdict == "broken"]
SCALING = [c for c in CASES if c.verdict == "scaling"]
# the fixed models not already in CASES (a fix that gives a sound model back is checked there)
FIXED = list({id(c.fixed): c.fixed for c in BROKEN if c.fixed not in CASES}.values())
# every fixed model, once each: the ones that must train
TRAINED = list({id(c.fixed): c.fixed for c in BROKEN}.values())
