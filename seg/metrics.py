"""Segmentation metrics from a confusion matrix, ignore-aware, for multi-channel and
1-channel heads.

Every metric here is Keras' MeanIoU (its confusion matrix, its ignore_class handling and its
distributed reduction) with two additions: predictions from a 1-channel head are thresholded
instead of arg-maxed, and `statistic` picks what is read off the matrix.
"""

from __future__ import annotations

import keras
import numpy as np
from keras import ops

STATISTICS = ("mean_iou", "iou", "pixel_accuracy", "dice")


def predicted_classes(y_pred, from_logits: bool = True):
    """Class index per pixel: argmax over channels, or a threshold for a 1-channel head."""
    if y_pred.shape[-1] == 1:
        return ops.cast(y_pred[..., 0] > (0.0 if from_logits else 0.5), "int32")
    return ops.cast(ops.argmax(y_pred, axis=-1), "int32")


@keras.saving.register_keras_serializable(package="seg")
class SegmentationMetric(keras.metrics.MeanIoU):
    """One statistic of the ignore-aware confusion matrix.

    Args:
        num_classes: classes in the masks. ignore_index: label that is not counted.
        statistic: mean_iou | iou (needs class_id) | pixel_accuracy | dice (mean over classes
            present in the prediction or the ground truth).
        from_logits: how to threshold a 1-channel head (0 for logits, 0.5 for probabilities).
    """

    def __init__(self, num_classes: int, ignore_index: int = 255, statistic: str = "mean_iou",
                 class_id: int | None = None, from_logits: bool = True, name: str | None = None,
                 dtype=None):
        if statistic not in STATISTICS:
            raise ValueError(f"statistic={statistic!r}: use one of {STATISTICS}")
        super().__init__(num_classes=num_classes, ignore_class=ignore_index,
                         name=name or statistic, dtype=dtype)
        self.ignore_index, self.statistic = ignore_index, statistic
        self.class_id, self.from_logits = class_id, from_logits

    def update_state(self, y_true, y_pred, sample_weight=None):
        y_true = ops.cast(y_true, "int32")
        if len(y_true.shape) == 4:
            y_true = y_true[..., 0]
        return super().update_state(y_true, predicted_classes(y_pred, self.from_logits),
                                    sample_weight)

    def result(self):
        cm = ops.cast(self.total_cm, "float32")  # rows: true class, columns: predicted class
        tp = ops.diagonal(cm)
        true, pred = ops.sum(cm, axis=1), ops.sum(cm, axis=0)
        if self.statistic == "mean_iou":
            return super().result()
        if self.statistic == "iou":
            return ops.divide_no_nan(tp[self.class_id],
                                     true[self.class_id] + pred[self.class_id] - tp[self.class_id])
        if self.statistic == "pixel_accuracy":
            return ops.divide_no_nan(ops.sum(tp), ops.sum(cm))
        present = ops.cast((true + pred) > 0, "float32")
        dice = ops.divide_no_nan(2 * tp, true + pred)
        return ops.divide_no_nan(ops.sum(dice * present), ops.sum(present))

    def get_config(self):
        config = super().get_config()
        for key in ("ignore_class", "sparse_y_true", "sparse_y_pred", "axis"):
            config.pop(key, None)
        return {**config, "ignore_index": self.ignore_index, "statistic": self.statistic,
                "class_id": self.class_id, "from_logits": self.from_logits}


def make_metrics(num_classes: int, ignore_index: int, from_logits: bool) -> list:
    """The logged metrics: mean_iou, pixel_accuracy, dice and iou_<k> for every class k."""
    kw = {"num_classes": num_classes, "ignore_index": ignore_index, "from_logits": from_logits}
    return ([SegmentationMetric(statistic="mean_iou", name="mean_iou", **kw),
             SegmentationMetric(statistic="pixel_accuracy", name="pixel_accuracy", **kw),
             SegmentationMetric(statistic="dice", name="dice", **kw)]
            + [SegmentationMetric(statistic="iou", class_id=k, name=f"iou_{k}", **kw)
               for k in range(num_classes)])


def confusion_matrix(y_true: np.ndarray, y_pred: np.ndarray, num_classes: int,
                     ignore_index: int) -> np.ndarray:
    """NumPy confusion matrix (rows true, columns predicted) over non-ignored pixels."""
    keep = (y_true != ignore_index) & (y_true >= 0) & (y_true < num_classes)
    idx = y_true[keep].astype(np.int64) * num_classes + y_pred[keep].astype(np.int64)
    return np.bincount(idx, minlength=num_classes ** 2).reshape(num_classes, num_classes)
