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
}


def data(*, classes: int = 2, channels: int = 3, fmt: str = "channel", scale: float = 1.0,
         resize: str | None = None) -> Callable[[int, int], tuple]:
    """A function (n, seed) -> (images, masks) in the given mask format; images * scale."""
    def make(n: int = N, seed: int = 0):
        if resize:
            images, masks = _resized(n, seed, classes, channels, resize)
            return images * scale, masks
        images, masks = squares(n, classes=classes, channels=channels, seed=seed)
        return images * scale, FORMATS[fmt](masks, classes)
    make.classes = classes
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

SOUND = [c for c in CASES if c.verdict == "sound"]
BROKEN = [c for c in CASES if c.verdict == "broken"]
SCALING = [c for c in CASES if c.verdict == "scaling"]
# the fixed models not already in CASES (a fix that gives a sound model back is checked there)
FIXED = list({id(c.fixed): c.fixed for c in BROKEN if c.fixed not in CASES}.values())
# every fixed model, once each: the ones that must train
TRAINED = list({id(c.fixed): c.fixed for c in BROKEN}.values())
