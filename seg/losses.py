"""Per-pixel segmentation losses matched to the head, with ignore_index and class weights.

One head, one loss family:
  - C >= 2 channels: softmax over the channels, sparse categorical cross-entropy.
  - 1 channel (binary): sigmoid, binary cross-entropy on "pixel is class 1".
"auto" (the default) is that cross-entropy plus soft Dice over the classes (as in nnU-Net): with
80% background, plain cross-entropy can leave a rare class unlearned for many epochs (seen
here: one of two default runs never learned rectangles), while the Dice term weighs every class
equally from the first step.
"lovasz" is the Lovasz-softmax loss (Berman et al., CVPR 2018), the convex extension of the
Jaccard loss: it optimises the IoU itself, whose value it equals on hard predictions;
"ce_lovasz" adds it to the cross-entropy.
Keras' own categorical / binary / sparse categorical cross-entropies are also available by
name so broken set-ups can be reproduced; the checks in seg.diagnostics refuse the ones that
cannot train (for example categorical cross-entropy on one channel, which is constant).
"""

from __future__ import annotations

import warnings

import keras
import tensorflow as tf
from keras import ops

OWN = ("ce", "dice", "focal", "ce_dice", "lovasz", "ce_lovasz")
KERAS = ("categorical_crossentropy", "binary_crossentropy", "sparse_categorical_crossentropy")
NAMES = ("auto",) + OWN + KERAS
_EPS = 1e-7


@keras.saving.register_keras_serializable(package="seg")
class SegmentationLoss(keras.losses.Loss):
    """Mean per-pixel loss over the pixels whose label is not ignore_index.

    Args:
        kind: one of NAMES ("auto" means "ce_dice": the cross-entropy matched to the head, plus
            soft Dice; "ce" is the cross-entropy alone).
        num_classes: classes in the masks. ignore_index: label excluded from the loss.
        from_logits: whether y_pred are logits (True) or probabilities.
        class_weights: optional per-class weights (length num_classes).
        focal_gamma: focusing parameter of the focal loss.
    """

    def __init__(self, kind: str = "auto", num_classes: int = 2, ignore_index: int = 255,
                 from_logits: bool = True, class_weights=None, focal_gamma: float = 2.0,
                 name: str | None = None, **kwargs):
        if kind not in NAMES:
            raise ValueError(f"loss.name={kind!r}: use one of {list(NAMES)}")
        if class_weights is not None and len(class_weights) != num_classes:
            raise ValueError(f"loss.class_weights has {len(class_weights)} values for "
                             f"{num_classes} classes")
        super().__init__(name=name or kind, **kwargs)
        self.kind = "ce_dice" if kind == "auto" else kind
        self.num_classes, self.ignore_index = int(num_classes), int(ignore_index)
        self.from_logits, self.focal_gamma = bool(from_logits), float(focal_gamma)
        self.class_weights = None if class_weights is None else [float(w) for w in class_weights]

    def __call__(self, y_true, y_pred, sample_weight=None):
        # call() reduces to a scalar itself (masked means, Dice over the batch), which Keras
        # passes through unscaled; under a distribution strategy each replica's share must be
        # 1/replicas of it, as Keras' own reductions do, or the summed gradients (and the
        # logged loss) grow with the number of replicas.
        loss = super().__call__(y_true, y_pred, sample_weight)
        replicas = tf.distribute.get_strategy().num_replicas_in_sync
        return loss / replicas if replicas > 1 else loss

    def call(self, y_true, y_pred):
        y_pred = ops.cast(y_pred, "float32")
        y = ops.cast(y_true, "int32")
        if len(y.shape) == 4:
            y = y[..., 0]
        valid = ops.logical_and(ops.not_equal(y, self.ignore_index),
                                ops.logical_and(y >= 0, y < self.num_classes))
        y = ops.where(valid, y, 0)
        weight = ops.cast(valid, "float32")
        if self.class_weights is not None:
            weight = weight * ops.take(ops.convert_to_tensor(self.class_weights), y)
        channels = y_pred.shape[-1]
        if self.kind in KERAS:
            return _weighted_mean(self._keras_loss(y, y_pred, channels), weight)
        if channels == 1:  # binary head: P(class 1) from one channel
            z = y_pred[..., 0]
            t = ops.cast(ops.equal(y, 1), "float32")
            if self.from_logits:
                ce = ops.relu(z) - z * t + ops.log1p(ops.exp(-ops.abs(z)))
                p1 = ops.sigmoid(z)
            else:
                p1 = ops.clip(z, _EPS, 1 - _EPS)
                ce = -(t * ops.log(p1) + (1 - t) * ops.log(1 - p1))
            probs = ops.stack([1 - p1, p1], axis=-1)
            onehot = ops.one_hot(y, 2)
        else:
            if self.from_logits:
                log_probs = ops.log_softmax(y_pred, axis=-1)
            else:
                log_probs = ops.log(ops.clip(y_pred, _EPS, 1.0))
            onehot = ops.one_hot(y, channels)
            ce = -ops.sum(onehot * log_probs, axis=-1)
            probs = ops.exp(log_probs)
        loss = 0.0
        if self.kind in ("ce", "ce_dice", "ce_lovasz"):
            loss = _weighted_mean(ce, weight)
        if self.kind == "focal":
            loss = _weighted_mean(ce * (1 - ops.exp(-ce)) ** self.focal_gamma, weight)
        if self.kind in ("dice", "ce_dice"):
            loss = loss + _dice_loss(probs, onehot, weight)
        if self.kind in ("lovasz", "ce_lovasz"):
            loss = loss + _lovasz_loss(probs, onehot, weight)
        return loss

    def _keras_loss(self, y, y_pred, channels):
        """Keras' cross-entropies exactly as a user would call them (pixels x channels)."""
        if self.kind == "sparse_categorical_crossentropy":
            return keras.losses.sparse_categorical_crossentropy(
                y, y_pred, from_logits=self.from_logits)
        onehot = (ops.cast(ops.equal(y, 1), "float32")[..., None] if channels == 1
                  else ops.one_hot(y, channels))
        if self.kind == "categorical_crossentropy":
            with warnings.catch_warnings():  # its one-channel warning is our preflight's error
                warnings.simplefilter("ignore")
                return keras.losses.categorical_crossentropy(onehot, y_pred,
                                                             from_logits=self.from_logits)
        return keras.losses.binary_crossentropy(onehot, y_pred, from_logits=self.from_logits)

    def get_config(self):
        return {**super().get_config(), "kind": self.kind, "num_classes": self.num_classes,
                "ignore_index": self.ignore_index, "from_logits": self.from_logits,
                "class_weights": self.class_weights, "focal_gamma": self.focal_gamma}


def _weighted_mean(values, weight):
    return ops.sum(values * weight) / ops.maximum(ops.sum(weight), _EPS)


def _dice_loss(probs, onehot, weight, smooth: float = 1.0):
    """1 - soft Dice averaged over classes, counting only pixels with weight > 0."""
    w = weight[..., None]
    inter = ops.sum(probs * onehot * w, axis=(0, 1, 2))
    denom = ops.sum(probs * w, axis=(0, 1, 2)) + ops.sum(onehot * w, axis=(0, 1, 2))
    return 1.0 - ops.mean((2 * inter + smooth) / (denom + smooth))


def _lovasz_loss(probs, onehot, weight):
    """Lovasz-softmax over the batch: per class, the errors |onehot - p| sorted in decreasing
    order, dotted with the Jaccard loss's increments along that order; averaged over the
    classes present in the batch. Ignored pixels get error 0 and no label, so they sort last
    and add nothing (a fixed shape, no boolean indexing: it compiles with XLA)."""
    channels = probs.shape[-1]
    valid = ops.cast(ops.reshape(weight, [-1]) > 0, "float32")
    p = ops.reshape(probs, [-1, channels])
    t = ops.reshape(onehot, [-1, channels]) * valid[:, None]
    losses, present = [], []
    for c in range(channels):
        errors = ops.abs(t[:, c] - p[:, c]) * valid
        order = ops.flip(ops.argsort(errors))
        errors, fg = ops.take(errors, order), ops.take(t[:, c], order)
        total = ops.sum(fg)
        jaccard = 1.0 - (total - ops.cumsum(fg)) / ops.maximum(total + ops.cumsum(1.0 - fg), 1.0)
        grad = ops.concatenate([jaccard[:1], jaccard[1:] - jaccard[:-1]])
        losses.append(ops.sum(errors * ops.stop_gradient(grad)))
        present.append(ops.cast(total > 0, "float32"))
    losses, present = ops.stack(losses), ops.stack(present)
    return ops.sum(losses * present) / ops.maximum(ops.sum(present), 1.0)
