import numpy as np
import pytest

from seg.metrics import SegmentationMetric, confusion_matrix, make_metrics


def results(y, pred, num_classes=3, from_logits=True):
    out = {}
    for m in make_metrics(num_classes, 255, from_logits):
        m.update_state(y, pred)
        out[m.name] = float(m.result())
    return out


def test_hand_computed_values_with_an_ignored_pixel():
    y = np.array([[[0, 1], [2, 255]]])
    pred = np.zeros((1, 2, 2, 3), np.float32)
    pred[0, 0, 0, 0] = pred[0, 0, 1, 1] = pred[0, 1, 0, 1] = pred[0, 1, 1, 2] = 1
    r = results(y, pred)  # predicted 0, 1, 1 (and 2 on the ignored pixel)
    assert r["iou_0"] == pytest.approx(1.0)
    assert r["iou_1"] == pytest.approx(0.5)
    assert r["iou_2"] == pytest.approx(0.0)
    assert r["mean_iou"] == pytest.approx(0.5)
    assert r["pixel_accuracy"] == pytest.approx(2 / 3)
    assert r["dice"] == pytest.approx((1 + 2 / 3 + 0) / 3)


def test_one_channel_head_is_thresholded():
    y = np.array([[[0, 1, 1, 0]]])
    logits = np.array([[[[-2.0], [3.0], [-0.1], [0.2]]]], np.float32)
    r = results(y, logits, num_classes=2)
    assert r["pixel_accuracy"] == pytest.approx(0.5)
    assert r["iou_1"] == pytest.approx(1 / 3)
    probs = 1 / (1 + np.exp(-logits))
    assert results(y, probs, num_classes=2, from_logits=False) == pytest.approx(r)


def test_metrics_accumulate_over_batches_and_reset():
    m = SegmentationMetric(num_classes=2, statistic="pixel_accuracy")
    m.update_state(np.array([[[1, 1]]]), np.array([[[[0.0, 1.0], [0.0, 1.0]]]], np.float32))
    m.update_state(np.array([[[0, 0]]]), np.array([[[[0.0, 1.0], [0.0, 1.0]]]], np.float32))
    assert float(m.result()) == pytest.approx(0.5)
    m.reset_state()
    assert float(m.result()) == 0.0


def test_numpy_confusion_matrix():
    cm = confusion_matrix(np.array([0, 1, 2, 255, 1]), np.array([0, 1, 1, 2, 0]), 3, 255)
    assert cm.tolist() == [[1, 0, 0], [1, 1, 0], [0, 1, 0]]


def test_metric_round_trips_through_config():
    m = SegmentationMetric(num_classes=4, ignore_index=9, statistic="iou", class_id=2)
    again = SegmentationMetric.from_config(m.get_config())
    assert (again.statistic, again.class_id, again.ignore_index) == ("iou", 2, 9)
