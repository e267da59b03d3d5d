"""Checks of a model's output and head against its loss: a constant output, the class axis,
the output's size, the activation at the end and the loss it feeds."""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass, field

import keras
import numpy as np
import tensorflow as tf

from seg.diagnostics.fixes import ConfigFixes, KerasFixes
from seg.diagnostics.reading import (
    Head,
    LossInfo,
    all_layers,
    first_output,
    read_loss,
    size_changes,
)
from seg.diagnostics.report import Finding


@dataclass
class Context:
    """What the checks know about the set-up: the model's head, its loss, the classes."""

    head: Head
    loss: LossInfo
    num_classes: int
    ignore_index: int | None = None
    class_names: list[str] = field(default_factory=list)
    fixes: KerasFixes = field(default_factory=KerasFixes)
    image_max: float = 1.0  # the largest input value seen (255: images not scaled)
    scaled_by: str | None = None  # the model's own layer that scales its images, if any


def check_readable(ctx: Context, model) -> list[Finding]:
    """Warnings for what the checks had to guess: a subclassed model, a custom loss."""
    out = []
    if ctx.head.inferred:
        seen = ("softmax probabilities" if ctx.head.activation == "softmax" else
                "probabilities in [0, 1]" if ctx.head.activation else
                f"a constant ({ctx.head.constant:g} everywhere), which says nothing of its "
                "activation" if ctx.head.constant is not None else "logits")
        note = ctx.head.note or "the activation could not be read"
        out.append(Finding("warning", "model", f"{note}"
                           f"; the output looks like {seen}",
                           "the head/loss checks use that guess",
                           "build the model with the functional API (keras.Model(inputs, "
                           "outputs)) so every layer can be followed"))
    if ctx.loss.family in ("unknown", "none"):
        out.append(Finding("warning", "loss", ctx.loss.note or f"the loss {ctx.loss.name} "
                           "cannot be read",
                           "the head/loss and from_logits checks cannot judge it; the probes "
                           "still measure its value and gradient" if ctx.loss.family != "none"
                           else "without a loss only the model and the masks are checked",
                           "pass loss= (a Keras loss name or object) to check it"))
    return out


def _output_gradient(model, x) -> float:
    """The norm of the gradient of a random projection of the output with respect to every
    trainable weight: 0 when no weight can change the output (an activation over one
    channel, a saturated one), > 0 for a head that starts at zero but can learn."""
    with tf.GradientTape() as tape, warnings.catch_warnings():
        warnings.simplefilter("ignore")
        out = tf.cast(first_output(model(x, training=False)), tf.float32)
        weights = tf.random.stateless_normal(tf.shape(out), seed=(7, 11))
        value = tf.reduce_sum(out * weights)
    grads = tape.gradient(value, model.trainable_variables)
    return math.sqrt(sum(float(tf.reduce_sum(tf.square(tf.cast(g, tf.float32))))
                         for g in grads if g is not None))


def check_constant(ctx: Context, model, x) -> list[Finding]:
    """The yellow image measured, whatever produced it: an output that is one value for every
    pixel of several different images and that no weight can move."""
    head = ctx.head
    if head.constant is None or len(x) < 2 or float(np.ptp(x, axis=0).max()) == 0:
        return []  # one image, or identical images: a constant output proves nothing
    try:
        gradient = _output_gradient(model, x)
    except Exception:  # noqa: BLE001 (a model tf cannot differentiate: judge by value alone)
        gradient = 0.0
    value = head.constant
    if gradient > 1e-12:
        return [Finding("ok", "constant output", f"the output starts at {value:g} everywhere "
                        f"(a zero-initialised head), and its gradient ({gradient:.2g}) lets "
                        "training move it")]
    one = value == 1.0 and (head.channels or 1) == 1
    title = (f"the output is {value:g} for every pixel of all {len(x)} images, whatever the "
             "input" + (" (what a softmax over one channel gives)" if one else ""))
    why = ("a network whose output is the same for every image cannot segment: this is the "
           "'yellow image' before training, and no weight can change it (the gradient of the "
           "output with respect to every weight is 0)")
    if one:
        why += ("; softmax normalises over the channels, and over one channel it is "
                "exp(z)/exp(z) = 1 for every pixel")
        fix = ctx.fixes.softmax_one_channel(ctx)
    else:
        scale = (f"; the images go up to {ctx.image_max:g}: scale them to [0, 1]"
                 if ctx.image_max > 2 and not ctx.scaled_by else "")
        fix = ("find the layer after which the output stops depending on the input: an "
               "activation over a single channel, an activation that saturates, a "
               f"multiplication by zero{scale}")
    return [Finding("error", "constant output", title, why, fix)]


def _hw(shape) -> str:
    return "x".join(str(d) for d in shape)


def check_output_shape(ctx: Context, model, x, masks) -> list[Finding]:
    """The output's spatial size against the masks', and whether it keeps a class axis."""
    head, loss = ctx.head, ctx.loss
    shape, mask_shape = head.shape, tuple(np.shape(masks))
    if head.layout == "pixels":
        return _pixels_shape(ctx, mask_shape)
    if len(shape) > 4:
        return [Finding("warning", "output size", f"an output of rank {len(shape)} "
                        f"{shape[1:]}: a layout seg cannot read, so its class axis and size are "
                        "not checked", "seg reads [batch, height, width, classes] and [batch, "
                        "height x width, classes]", "check the output against the masks by hand")]
    if len(shape) < 3:
        return [Finding("error", "output size", f"the output {shape[1:]} is not an image",
                        "a segmentation model predicts every pixel: [batch, height, width, "
                        "classes]", "remove the Flatten/Dense at the end; end in a 1x1 Conv2D")]
    target = mask_shape[1:3]
    if shape[1:3] != target:
        if len(shape) == 4 and shape[2:4] == target:
            return [Finding(
                "error", "class axis", f"the output {shape[1:]} has its {shape[1]} channels "
                "first (channels_first), the masks are "
                f"{_hw(target)}", f"Keras' losses take the last axis as the classes: "
                f"{loss.name} would compare rows with classes", "keep channels last (data_format="
                "'channels_last', the default) or Permute((2, 3, 1)) at the end")]
        return [_size_finding(ctx, model, x, shape[1:3], target)]
    out = []
    if len(shape) == 3 and (loss.normalises or head.activation == "softmax"):
        what = loss.name if loss.normalises else "softmax"
        width = shape[-1]
        by = head.dropped_by
        if by:
            where = "the last layer" if head.after_head[:1] == [by] else "the layer"
            title = f"{where} `{by}` drops the channel axis: {what} now normalises over the " \
                    f"width ({width} values)"
        else:
            title = (f"the output {shape[1:]} has no channel axis: {what} normalises over the "
                     f"width ({width} values)")
        channels = head.dropped_channels or 1
        keep = f"remove `{by}` so the output keeps its channel axis ({_hw(shape[1:])}x" \
               f"{channels})" if by else "keep a channel axis at the end of the model"
        then = ("and train the one sigmoid channel with loss='binary_crossentropy'"
                if channels == 1 else "and use keras.losses.SparseCategoricalCrossentropy("
                "from_logits=True) with integer masks (no activation at the end)")
        out.append(Finding(
            "error", "class axis", title,
            f"Keras' cross-entropies and softmax take the last axis as the classes. Without a "
            f"channel axis the last axis is the image's width, so the {width} pixels of each row "
            f"compete as if they were {width} classes: the loss is not a per-pixel loss, and it "
            "says nothing about the class of each pixel",
            f"{keep} {then}"))
    elif len(shape) == 4 and head.activation == "softmax" and head.softmax_axis not in (-1, 3):
        axis = {1: "height", 2: "width", 0: "batch"}.get(head.softmax_axis % 4, "?")
        out.append(Finding(
            "error", "class axis", f"softmax over axis {head.softmax_axis} ({axis}) in "
            f"{head.where}", f"the probabilities must sum to 1 over the classes (the last axis); "
            f"over the {axis} every pixel competes with its neighbours",
            f"Softmax(axis=-1) in {head.where}"))
    return out


def _pixels_shape(ctx: Context, mask_shape: tuple) -> list[Finding]:
    """A [B, H*W, C] output (pixels x classes): the masks must have the same layout."""
    head = ctx.head
    pixels, channels = head.shape[1], head.shape[-1]
    h, w = head.image_hw
    if len(mask_shape) >= 2 and mask_shape[1] == pixels:
        return []
    by = f"`{head.folded_by}` " if getattr(head, "folded_by", None) else ""
    if len(mask_shape) >= 3 and mask_shape[1] * mask_shape[2] == pixels:
        one_hot = ctx.loss.targets == "one_hot"
        return [Finding(
            "error", "targets", f"the output is pixels x classes {head.shape[1:]} ({by}flattens "
            f"{h}x{w}), the masks are images {mask_shape[1:]}",
            "the loss compares the masks with the output element by element; they must have "
            "its layout", "reshape the masks to the model's layout: "
            + (f"keras.utils.to_categorical(masks, {channels}).reshape(len(masks), {pixels}, "
               f"{channels})" if one_hot else f"masks.reshape(len(masks), {pixels})"))]
    return [Finding("error", "output size", f"the output has {pixels} pixels ({h}x{w}), the "
                    f"masks {mask_shape[1:]}", "a per-pixel loss needs one prediction for every "
                    "mask pixel", f"give masks of shape [N, {pixels}, {channels}] (one-hot) or "
                    f"[N, {pixels}] (class indices)")]


def _size_finding(ctx, model, x, got, want) -> Finding:
    changes = size_changes(model, x)
    listed = ", ".join(f"`{name}` {_hw(a)} -> {_hw(b)}" for name, a, b in changes)
    ratio = [g / w for g, w in zip(got, want, strict=False)]
    title = f"the output is {_hw(got)} but the masks are {_hw(want)}"
    exact = ratio[0] == ratio[1] and math.log2(ratio[0]).is_integer()
    if exact:
        title += f" (x{ratio[0]:g})"
    why = ("a per-pixel loss needs one prediction for every mask pixel: Keras stops with a shape "
           "error, or broadcasts the masks and learns nonsense")
    if listed:
        why += f". The size changes at: {listed}"
    if exact and ratio[0] < 1:
        n = int(-math.log2(ratio[0]))
        last = changes[-1][0] if changes else "the last up-sampling"
        fix = (f"add {n} more x2 up-sampling step(s) after `{last}`"
               " (Conv2DTranspose(filters, 2, strides=2, padding='same') or UpSampling2D), so "
               "the decoder undoes every down-sampling; or resize the masks")
    elif exact:
        fix = "remove the extra up-sampling step(s), or resize the masks"
    else:
        valid = [name for name, a, b in changes if 0 < a[0] - b[0] < 8 and a[0] > b[0]]
        fix = (f"use padding='same' in {', '.join(f'`{v}`' for v in valid[:6])} (padding='valid'"
               " shrinks every convolution's output by kernel_size - 1 pixels), or crop the "
               "masks to the output" if valid else
               "make the output the masks' size (pad the input to a multiple of the total "
               "stride and crop the output back), or resize the masks")
    return Finding("error", "output size", title, why, fix)


def check_head(ctx: Context) -> list[Finding]:
    """Refuse heads and losses that cannot train together (the classic yellow image)."""
    out = _activation_findings(ctx) + _from_logits_findings(ctx) + _channel_findings(ctx)
    if out:
        return out
    head, loss = ctx.head, ctx.loss
    chans = f"{head.channels} output channel(s)" if head.channels else "no channel axis"
    act = head.activation or "logits"
    if loss.family == "none":
        return [Finding("ok", "head", f"{chans}, {act} ({head.where}); no loss to check it "
                        "against")]
    return [Finding("ok", "head/loss", f"{chans}, {act} ({head.where}), loss {loss.name}, "
                    f"from_logits={loss.from_logits}")]


def _activation_findings(ctx: Context) -> list[Finding]:
    """The activation at the end against the channels and the loss."""
    head, loss, fixes = ctx.head, ctx.loss, ctx.fixes
    channels = head.channels if head.channels is not None else 1
    act, where = head.activation, head.where
    out = []
    if act is not None and act not in ("sigmoid", "softmax", "log_softmax"):
        out.append(Finding("error", "head", f"{where} ends in {act}: not a segmentation head",
                           "the head must give logits (no activation) or per-class "
                           "probabilities (sigmoid, softmax)", fixes.head_activation(ctx)))
    if channels == 1 and head.channels is not None and act == "softmax":
        out.append(Finding(
            "error", "head", f"softmax over a single output channel in {where}",
            "softmax normalises across channels; over one channel it is exp(z)/exp(z) = 1, so "
            "the prediction is exactly 1 for every pixel, whatever the input and the weights: a "
            "constant picture (the 'yellow image'). " + _softmax_one_channel_loss(loss),
            fixes.softmax_one_channel(ctx)))
    if channels == 1 and head.channels is not None and loss.normalises:
        out.append(Finding("error", "head/loss",
                           f"one output channel trained with {loss.name} ({where})",
                           _one_channel_categorical_why(loss, act),
                           fixes.one_channel_categorical(ctx)))
    if channels > 1 and act == "sigmoid" and loss.normalises:
        out.append(Finding(
            "warning", "head/loss", f"sigmoid over {channels} channels ({where}) with loss "
            f"{loss.name}", "per-channel sigmoids do not sum to 1 across classes, so a "
            "cross-entropy over classes sees unnormalised probabilities", fixes.sigmoid_many(ctx)))
    if channels > 1 and loss.family == "binary" and loss.targets == "indices":
        out.append(Finding(
            "warning", "head/loss", f"binary cross-entropy over {channels} exclusive classes",
            "binary cross-entropy scores each channel independently (multi-label); for "
            "exclusive classes the classes compete in softmax cross-entropy", fixes.bce_many(ctx)))
    if loss.family == "dice" and act is None:
        out.append(Finding(
            "warning", "head/loss", f"{loss.name} on logits ({where} has no activation)",
            "Dice compares probabilities with the masks; on raw logits its value is "
            "meaningless", f"end {where} in softmax (or sigmoid) for {loss.name}"))
    return out


def _from_logits_findings(ctx: Context) -> list[Finding]:
    """Probabilities into a loss that expects logits, and the reverse."""
    head, loss, fixes = ctx.head, ctx.loss, ctx.fixes
    act, where = head.activation, head.where
    if loss.family not in ("categorical", "sparse", "binary", "matched"):
        return []
    if head.probabilities and loss.from_logits:
        channels = head.channels if head.channels is not None else 1
        return [Finding(
            "error", "from_logits",
            f"probabilities ({act} in {where}) fed to a loss with from_logits=true",
            f"the loss applies {'sigmoid' if channels == 1 else 'softmax'} again to values in "
            "[0, 1]; the squashed outputs differ little between classes, gradients shrink and the "
            "prediction drifts toward a constant", fixes.probabilities_to_logits_loss(ctx))]
    if act is None and loss.from_logits is False:
        return [Finding(
            "error", "from_logits", "logits fed to a loss with from_logits=false",
            f"{where} has no activation, but the loss reads its raw logits as probabilities: "
            "Keras clips them into [1e-7, 1 - 1e-7], so every logit outside (0, 1) gets no "
            "gradient and the rest are pushed into (0, 1), where they no longer separate the "
            "classes: the prediction drifts toward one class",
            fixes.logits_to_probability_loss(ctx))]
    return []


def _channel_findings(ctx: Context) -> list[Finding]:
    """The head's channels against the number of classes."""
    head = ctx.head
    channels = head.channels if head.channels is not None else 1
    classes = 2 if channels == 1 else channels
    if head.channels is None or ctx.num_classes == classes:
        return []
    return [Finding(
        "error", "head", f"{channels} output channel(s) in {head.where} for "
        f"num_classes={ctx.num_classes}",
        f"a head needs one channel per class (or one channel for two classes): labels "
        f"{classes} and above have no channel to be predicted in",
        f"give {head.where} {ctx.num_classes} filters, or check num_classes")]


def _softmax_one_channel_loss(loss: LossInfo) -> str:
    """What the loss does beside a softmax over one channel (measured in Keras 3, tests)."""
    if loss.family == "binary":
        return ("Keras' binary cross-entropy reads the logits behind the softmax, so the loss "
                "falls and the weights change, but the prediction stays 1 everywhere.")
    if loss.family == "categorical":
        return ("The loss is 0 from the first step; Keras differentiates through the logits "
                "behind the softmax, so a gradient that carries nothing of the masks moves the "
                "weights, and the prediction stays 1 everywhere.")
    if loss.family == "sparse":
        return ("Sparse cross-entropy over one channel has room for class 0 only: label 1 "
                "stops training with 'label value 1 outside the valid range' (NaN on a GPU).")
    return "Nothing the loss does can change the prediction."


def _one_channel_categorical_why(loss: LossInfo, act: str | None) -> str:
    """Why one channel under a categorical loss cannot train, as Keras 3 really behaves."""
    if loss.family == "sparse":
        return ("sparse categorical cross-entropy over one channel has room for class 0 only: "
                "label 1 is out of range, and Keras stops with 'Received a label value of 1 "
                "which is outside the valid range of [0, 1)' (on a GPU the loss is NaN). "
                "Nothing trains.")
    zero = ("categorical cross-entropy renormalises the prediction over the channels; with one "
            "channel every pixel's probability is exactly 1, so the loss is 0 whatever the "
            "network predicts and carries nothing of the masks. ")
    if act is None and loss.from_logits is False:
        return zero + ("On raw logits Keras clips and renormalises, and the gradient is 0 as "
                       "well: nothing trains, with any decoder, and the output stays at its "
                       "random start.")
    return zero + ("Keras still differentiates the cross-entropy through the logits (kept "
                   "beside the sigmoid, or given with from_logits=True): that gradient, 1 - mask "
                   "per pixel, pushes every logit down, so after a few steps the prediction is "
                   "one class everywhere (the 'yellow image'), with any decoder.")


def check_head_and_loss(*, num_classes: int, out_channels: int | None,
                        head_activation: str | None, loss: str, from_logits: bool) -> list[Finding]:
    """check_head for a configured head (seg's config keys): no model needed."""
    from seg.losses import SegmentationLoss

    channels = out_channels or num_classes
    head = Head(shape=(1, 1, 1, channels), channels=channels, activation=head_activation,
                activation_layer=f"head_{head_activation}" if head_activation else None,
                head_layer="head")
    info = read_loss(SegmentationLoss(loss, num_classes=num_classes, from_logits=from_logits))
    return check_head(Context(head, info, num_classes, fixes=ConfigFixes()))


def check_transposed(ctx: Context, model) -> list[Finding]:
    """Warn about every transposed convolution whose kernel does not divide by its stride."""
    deconvs = [layer for layer in all_layers(model)
               if isinstance(layer, keras.layers.Conv2DTranspose)]
    if not deconvs:
        return [Finding("ok", "decoder", "no transposed convolution: no checkerboard risk from "
                        "learned upsampling")]
    uneven = [(d.name, d.kernel_size[i], d.strides[i]) for d in deconvs for i in (0, 1)
              if d.strides[i] > 1 and d.kernel_size[i] % d.strides[i]]
    uneven = list(dict.fromkeys(uneven))
    if uneven:
        listed = ", ".join(f"`{n}` (kernel {k}, stride {s})" for n, k, s in uneven[:6])
        k, s = uneven[0][1], uneven[0][2]
        return [Finding(
            "warning", "decoder",
            f"transposed convolution with kernel_size={k} and stride {s}: {listed}",
            f"{k} is not a multiple of {s}: output pixels receive unequal numbers of kernel taps "
            "(uneven overlap), which prints a checkerboard pattern into the prediction (Odena et "
            "al., 2016)", ctx.fixes.checkerboard(ctx, uneven))]
    return [Finding("ok", "decoder", f"{len(deconvs)} transposed convolution(s), every kernel a "
                    "multiple of its stride (even overlap)")]
