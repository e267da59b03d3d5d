"""A run's settings and final figures in TensorBoard's HPARAMS tab.

Every run writes its hyperparameters into its own tb/ folder when training starts (so runs that
are still going are listed) and its final figures under `hparams/` when it ends. TensorBoard
pointed at a sweep folder then shows one row per job, with the settings that differ as columns.
"""

from __future__ import annotations

from pathlib import Path

import tensorflow as tf
from tensorboard.plugins.hparams import api as hp

from seg.config import HPARAM_KEYS

SKIP_OVERRIDES = ("sweep",)  # +sweep=NAME only launches the sweep
FINAL_METRICS = ("val_mean_iou", "val_pixel_accuracy", "val_dice", "val_loss",
                 "epochs_completed", "wall_time_s")


def lookup(cfg: dict, dotted: str):
    """cfg["a"]["b"] for "a.b"; KeyError when a part is missing."""
    value = cfg
    for part in dotted.split("."):
        if not isinstance(value, dict) or part not in value:
            raise KeyError(dotted)
        value = value[part]
    return value


def _scalar(value):
    """A value the hparams plugin takes: bool, int, float or str (None and lists as text)."""
    if isinstance(value, (bool, int, float, str)):
        return value
    return "null" if value is None else str(value)


def hparams_of(cfg: dict, overrides: list[str] = (), parameters: int | None = None) -> dict:
    """The hyperparameters of a run: HPARAM_KEYS plus every key the overrides set.

    Overrides of config groups (+decoder=deconv, +experiment=isbi_membrane) are logged under the
    group's name with the chosen option.
    """
    out = {}
    keys = list(HPARAM_KEYS)
    for override in overrides:
        key, _, value = override.lstrip("+~").partition("=")
        if key.startswith("hydra.") or key in keys or key in SKIP_OVERRIDES:
            continue
        try:
            leaf = lookup(cfg, key)
        except KeyError:  # a group that is not a config section, such as experiment=...
            out[key] = value
            continue
        if not isinstance(leaf, dict):  # a section chosen as a group (+decoder=deconv) is
            keys.append(key)            # logged through its keys (decoder.name)
    for key in keys:
        try:
            out[key] = _scalar(lookup(cfg, key))
        except KeyError:
            pass
    if parameters is not None:
        out["model.parameters"] = int(parameters)
    return out


def log_hparams(log_dir: str | Path, hparams: dict, trial_id: str | None = None):
    """Write the run's hyperparameters (the session start) into log_dir."""
    writer = tf.summary.create_file_writer(str(log_dir))
    with writer.as_default():
        hp.hparams(hparams, trial_id=trial_id)
    writer.close()


def log_final(log_dir: str | Path, metrics: dict, step: int):
    """Write the final figures as hparams/<name> scalars, the HPARAMS tab's metric columns."""
    writer = tf.summary.create_file_writer(str(log_dir))
    with writer.as_default(step=step):
        for name in FINAL_METRICS:
            if isinstance(metrics.get(name), (int, float)):
                tf.summary.scalar(f"hparams/{name}", float(metrics[name]))
        for name, iou in zip(metrics.get("class_names", []), metrics.get("val_iou_per_class", [])):
            tf.summary.scalar(f"hparams/val_iou/{name}", float(iou))
        alarms = metrics.get("diagnostics", {})
        tf.summary.scalar("hparams/alarms", float(bool(alarms.get("constant_output"))
                                                  or bool(alarms.get("class_vanished"))))
    writer.close()
