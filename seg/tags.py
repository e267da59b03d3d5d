"""TensorBoard tag names: the interface between seg's writers and the pages a person reads.

TensorBoard's Time Series groups tags by their part up to the first "/" and orders the groups
by character code, capitals before lower case: IoU (the mean, then per class by name) and Loss
come first, then learning_rate, pixel_accuracy, dice and diagnostics/... Every writer of a
class's figure (epoch scalars, monitors, hparams columns, the custom dashboard's charts) names
it through class_tags, so the charts find what the writers wrote.
"""

from __future__ import annotations

import re


def class_tags(class_names: list[str]) -> list[str]:
    """Each class's name as a tag part, as readable as the name: TensorFlow keeps a summary's
    tag as given (spaces and any script included); only "/", which would open a sub-group,
    becomes "_". Names that then coincide get their class index appended, so no two classes
    share a tag."""
    safe = [str(n).replace("/", "_").strip() or "_" for n in class_names]
    return [f"{s}_{k}" if safe.count(s) > 1 else s for k, s in enumerate(safe)]


def epoch_tag(name: str, class_names: list[str] | None = None) -> str:
    """The tag of a figure in Keras' epoch logs (without its val_ prefix): mean_iou ->
    IoU/mean, iou_<k> -> IoU/per_class/<class>, loss -> Loss, the monitor's figures ->
    diagnostics/..., anything else (learning_rate, pixel_accuracy, dice, a user's metric) as
    it is."""
    if name == "mean_iou":
        return "IoU/mean"
    per_class = re.fullmatch(r"iou_(\d+)", name)
    if per_class:
        k = int(per_class.group(1))
        tags = class_tags(class_names or [])
        return f"IoU/per_class/{tags[k] if k < len(tags) else k}"
    if name == "loss":
        return "Loss"
    if name == "alarms":  # the monitor's count; the alarms' text is diagnostics/alarms
        return "diagnostics/alarm_count"
    if name in ("majority_share", "output_spread", "output_entropy"):
        return f"diagnostics/{name}"
    return name
