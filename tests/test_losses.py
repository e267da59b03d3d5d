import math

import numpy as np
import pytest
import tensorflow as tf

from seg.losses import SegmentationLoss


def softmax(z):
    e = np.exp(z - z.max(-1, keepdims=True))
    return e / e.sum(-1, keepdims=True)


Y = np.array([[[0, 1], [2, 255]]])  # one ignored pixel
Z = np.array([[[[2.0, 0.0, -1.0], [0.5, 1.5, 0.0]], [[0.0, 0.0, 3.0], [9.0, -9.0, 0.0]]]],
             np.float32)


def test_cross_entropy_matches_hand_computation_and_skips_ignored_pixels():
    p = softmax(Z.astype(np.float64))
    expected = -np.mean([np.log(p[0, 0, 0, 0]), np.log(p[0, 0, 1, 1]), np.log(p[0, 1, 0, 2])])
    assert float(SegmentationLoss("ce", num_classes=3)(Y, Z)) == pytest.approx(expected, 1e-5)
    changed = Z.copy()
    changed[0, 1, 1] = [-50, 50, 0]  # the ignored pixel's prediction does not matter
    assert float(SegmentationLoss("ce", num_classes=3)(Y, changed)) == pytest.approx(expected, 1e-5)


def test_uniform_logits_give_ln_c_and_auto_is_cross_entropy_plus_dice():
    z = np.zeros((1, 2, 2, 3), np.float32)
    assert float(SegmentationLoss("ce", num_classes=3)(Y, z)) == pytest.approx(math.log(3), 1e-6)
    auto = SegmentationLoss("auto", num_classes=3)
    assert auto.kind == "ce_dice"
    assert float(auto(Y, Z)) == pytest.approx(float(SegmentationLoss("ce_dice", num_classes=3)(Y, Z)))


def test_class_weights_weight_each_pixel():
    p = softmax(Z.astype(np.float64))
    ce = np.array([-np.log(p[0, 0, 0, 0]), -np.log(p[0, 0, 1, 1]), -np.log(p[0, 1, 0, 2])])
    w = np.array([1.0, 2.0, 0.5])
    loss = SegmentationLoss("ce", num_classes=3, class_weights=list(w))
    assert float(loss(Y, Z)) == pytest.approx((w * ce).sum() / w.sum(), 1e-5)


def test_binary_one_channel_cross_entropy_from_logits_and_from_probabilities():
    y = np.array([[[0, 1], [1, 255]]])
    z = np.array([[[[-1.0], [2.0]], [[0.5], [7.0]]]], np.float32)
    s = 1 / (1 + np.exp(-z[0, ..., 0].astype(np.float64)))
    expected = -np.mean([np.log(1 - s[0, 0]), np.log(s[0, 1]), np.log(s[1, 0])])
    assert float(SegmentationLoss("ce", num_classes=2)(y, z)) == pytest.approx(expected, 1e-5)
    probs = SegmentationLoss("ce", num_classes=2, from_logits=False)(y, s[None, ..., None])
    assert float(probs) == pytest.approx(expected, 1e-5)


def test_dice_loss_hand_computed():
    y = np.array([[[0, 1]]])
    probs = np.array([[[[1.0, 0.0], [0.5, 0.5]]]], np.float32)
    # class 0: inter 1, denom 1.5 + 1; class 1: inter 0.5, denom 0.5 + 1; smooth 1
    d0, d1 = (2 * 1 + 1) / (2.5 + 1), (2 * 0.5 + 1) / (1.5 + 1)
    loss = SegmentationLoss("dice", num_classes=2, from_logits=False)(y, probs)
    assert float(loss) == pytest.approx(1 - (d0 + d1) / 2, 1e-5)


def test_focal_with_gamma_zero_is_cross_entropy_and_down_weights_easy_pixels():
    ce = float(SegmentationLoss("ce", num_classes=3)(Y, Z))
    assert float(SegmentationLoss("focal", num_classes=3, focal_gamma=0.0)(Y, Z)) == pytest.approx(ce, 1e-6)
    assert float(SegmentationLoss("focal", num_classes=3)(Y, Z)) < ce


def test_ce_dice_is_the_sum():
    total = SegmentationLoss("ce_dice", num_classes=3)(Y, Z)
    parts = SegmentationLoss("ce", num_classes=3)(Y, Z) + SegmentationLoss("dice", num_classes=3)(Y, Z)
    assert float(total) == pytest.approx(float(parts), 1e-6)


def test_lovasz_equals_one_minus_miou_on_hard_predictions_and_ignores_void():
    """The Lovasz extension is exact on vertices: for one-hot probabilities the loss is
    1 - mean IoU over the classes present (ignored pixels left out), and it has a gradient."""
    rng = np.random.default_rng(0)
    y = rng.integers(0, 3, (2, 12, 12))
    y[0, :3] = 255
    pred = rng.integers(0, 3, (2, 12, 12))
    loss = SegmentationLoss("lovasz", num_classes=3, from_logits=False)(y, np.eye(3)[pred])
    valid = y != 255
    ious = [((pred == c) & (y == c) & valid).sum() / (((pred == c) | (y == c)) & valid).sum()
            for c in range(3)]
    assert float(loss) == pytest.approx(1 - np.mean(ious), 1e-5)
    z = tf.Variable(rng.normal(size=(2, 12, 12, 3)).astype(np.float32))
    with tf.GradientTape() as tape:
        total = SegmentationLoss("ce_lovasz", num_classes=3)(y, z)
    assert float(tf.norm(tape.gradient(total, z))) > 0
    assert float(total) == pytest.approx(float(SegmentationLoss("ce", num_classes=3)(y, z))
                                         + float(SegmentationLoss("lovasz", num_classes=3)(y, z)),
                                         1e-5)


def test_categorical_crossentropy_over_one_channel_is_constant_with_zero_gradient():
    y = np.array([[[0, 1], [1, 0]]])
    z = tf.Variable(np.random.default_rng(0).random((1, 2, 2, 1)).astype(np.float32))
    loss_fn = SegmentationLoss("categorical_crossentropy", num_classes=2, from_logits=False)
    with tf.GradientTape() as tape:
        loss = loss_fn(y, z)
    assert float(loss) < 1e-6
    assert float(tf.reduce_max(tf.abs(tape.gradient(loss, z)))) == 0.0


def test_unknown_loss_and_bad_class_weights_are_named():
    with pytest.raises(ValueError, match="loss.name='dicee'"):
        SegmentationLoss("dicee")
    with pytest.raises(ValueError, match="class_weights"):
        SegmentationLoss("ce", num_classes=3, class_weights=[1.0, 2.0])


def test_loss_round_trips_through_config():
    loss = SegmentationLoss("focal", num_classes=3, ignore_index=7, class_weights=[1, 2, 3])
    again = SegmentationLoss.from_config(loss.get_config())
    assert float(again(Y, Z)) == pytest.approx(float(loss(Y, Z)))
