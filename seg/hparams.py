"""A run's settings and final figures in TensorBoard's HPARAMS tab, and the custom dashboard.

Every run writes its hyperparameters into its tb/validation folder when training starts (so
runs that are still going are listed), named by its settings (`decoder=deconv,seed=1`), and its
final figures under `hparams/` when it ends. The columns come from an explicit experiment
config (the plugin's hparams_config), written by a run on its own or by a sweep's first job:
without one TensorBoard makes a metric column of every scalar tag and shows the first five,
which were monitor shares rather than val mIoU. The custom-scalars layout (the CUSTOM SCALARS
tab) puts the charts that answer "which run wins" first.
"""

from __future__ import annotations

import contextlib
import os
import re
from dataclasses import dataclass, field
from pathlib import Path

import tensorflow as tf
from tensorboard.plugins.custom_scalar import layout_pb2
from tensorboard.plugins.custom_scalar import summary as custom_scalars
from tensorboard.plugins.hparams import api as hp
from tensorboard.plugins.hparams import plugin_data_pb2
from tensorboard.plugins.hparams import summary_v2 as hp_summary

from seg.config import HPARAM_KEYS, flatten
from seg.tags import class_tags


SKIP_OVERRIDES = ("sweep",)  # +sweep=NAME only launches the sweep
# the config sections a run's result depends on (diagnostics and logging only watch it)
CONFIG_SECTIONS = ("data", "model", "decoder", "loss", "trainer")
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


def of_config(cfg: dict) -> dict:
    """Every key of a resolved config's data, model, decoder, loss and trainer sections and the
    seed, as the hparams plugin takes them: whatever set a value (the command line, an
    experiment file, a plan, a sweep), any two runs can be compared on it."""
    out = {"seed": _scalar(cfg.get("seed"))} if "seed" in cfg else {}
    for section in CONFIG_SECTIONS:
        if isinstance(cfg.get(section), dict):
            out.update({k: _scalar(v) for k, v in flatten(cfg[section], f"{section}.").items()})
    return out


def hparams_of(cfg: dict, overrides: list[str] = (), parameters: int | None = None) -> dict:
    """The hyperparameters of a run: every key of its config (of_config), HPARAM_KEYS and the
    keys the overrides set among them.

    Overrides of config groups (+decoder=deconv, +experiment=isbi_membrane) are logged under the
    group's name with the chosen option.
    """
    out = of_config(cfg)
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
        with contextlib.suppress(KeyError):
            out[key] = _scalar(lookup(cfg, key))
    if parameters is not None:
        out["model.parameters"] = int(parameters)
    return out


def compact(key: str, value) -> str:
    """One setting as a part of a run's name: a config group's option alone (decoder=deconv ->
    `deconv`, experiment=yellow_image -> `yellow_image`), any other key by its last part
    (`seed=1`, `learning_rate=0.003`)."""
    if "." not in key and key != "seed":
        return str(value)
    return f"{key.rsplit('.', 1)[-1]}={value}"


def first_columns(cfg: dict, keys) -> list[str]:
    """The hparams that show the given override keys: a config group chosen by name
    (+decoder=deconv) is shown by its name key (decoder.name)."""
    out = []
    for key in keys:
        try:
            leaf = lookup(cfg, key)
        except KeyError:
            out.append(key)
            continue
        out.append(f"{key}.name" if isinstance(leaf, dict) else key)
    return out


@dataclass
class Trial:
    """How a run appears in the HPARAMS tab.

    name: the row's name (the trial ID): the settings that tell it apart, `decoder=deconv,seed=1`.
    first: hyperparameters listed first (a sweep's swept keys); TensorBoard shows five.
    root: a sweep's folder: only its first job writes the experiment config (into its own
        tb/validation, so that it adds no run to TensorBoard's lists); None: a run on its own.
    """

    name: str
    first: list[str] = field(default_factory=list)
    root: Path | None = None


def metric_columns(class_names: list[str]) -> list[hp.Metric]:
    """The HPARAMS tab's metric columns, in order: val mIoU, pixel accuracy, IoU per class by
    name, alarms, epochs, wall time, then Dice and the loss (TensorBoard shows the first five).
    The diagnostics' shares are not columns."""
    names = (["val_mean_iou", "val_pixel_accuracy"]
             + [f"val_iou/{t}" for t in class_tags(class_names)]
             + ["alarms", "epochs_completed", "wall_time_s", "val_dice", "val_loss"])
    return [hp.Metric(f"hparams/{n}", display_name=n) for n in names]


def log_experiment(log_dir: str | Path, hparams: dict, class_names: list[str],
                   first: list[str] = ()):
    """Write the experiment config (hparams_config): the hyperparameter columns and the metric
    columns (metric_columns).

    TensorBoard orders the hyperparameter columns by whether they differ between runs, then by
    name, and shows the first five: the `first` ones (a sweep's swept keys) are marked as the
    ones that differ, so they lead.
    """
    summary = hp_summary.hparams_config_pb(hparams=[hp.HParam(k) for k in hparams],
                                           metrics=metric_columns(class_names))
    mark_differing(summary, first)
    writer = tf.summary.create_file_writer(str(log_dir))
    with writer.as_default():
        tf.summary.experimental.write_raw_pb(summary.SerializeToString(), step=0)
    writer.close()


def mark_differing(summary, keys):
    """Mark the hyperparameters `keys` of an experiment config (a Summary proto) as the ones
    that differ: TensorBoard lists those first and shows five."""
    content = summary.value[0].metadata.plugin_data
    data = plugin_data_pb2.HParamsPluginData.FromString(content.content)
    for info in data.experiment.hparam_infos:
        info.differs = info.name in keys
    content.content = data.SerializeToString()


def claim(root: Path) -> bool:
    """True for the first job of a sweep to ask (the one that writes its experiment config):
    making a folder is atomic, also for parallel jobs and on shared file systems."""
    try:
        os.makedirs(root / ".hparams_config")
        return True
    except FileExistsError:
        return False


def layout(class_names: list[str]) -> layout_pb2.Layout:
    """The custom dashboard: what answers "which run wins" first (train vs validation mIoU,
    loss, learning rate), then IoU per class by name, then the collapse monitors; each chart
    draws every run."""
    def chart(title, *tags):
        return layout_pb2.Chart(title=title, multiline=layout_pb2.MultilineChartContent(
            tag=[f"^{re.escape(t)}$" for t in tags]))

    tags = class_tags(class_names)

    return layout_pb2.Layout(category=[
        layout_pb2.Category(title="Which run wins", chart=[
            chart("mIoU (train and validation)", "IoU/mean"),
            chart("Loss (train and validation)", "Loss"),
            chart("Learning rate", "learning_rate"),
            chart("Pixel accuracy (train and validation)", "pixel_accuracy")]),
        layout_pb2.Category(title="IoU per class", chart=[
            chart(f"IoU: {name}", f"IoU/per_class/{tag}")
            for name, tag in zip(class_names, tags, strict=False)]),
        layout_pb2.Category(title="Collapse monitors (the 'yellow image')", chart=[
            chart("Majority-class share of the prediction", "diagnostics/majority_share"),
            chart("Output spread (0: a constant picture)", "diagnostics/output_spread"),
            chart("Output entropy", "diagnostics/output_entropy"),
            chart("Open alarms", "diagnostics/alarm_count"),
            chart("Predicted share per class",
                  *[f"diagnostics/pred_share/{t}" for t in tags])]),
    ])


def log_start(log_dir: str | Path, hparams: dict, trial: Trial, class_names: list[str]):
    """A run's start in log_dir (its tb/validation): the session (the HPARAMS row), the custom
    dashboard's layout (TensorBoard merges every run's, without repeats) and, for a run on its
    own or the first job of a sweep, the experiment config."""
    if trial.root is None or claim(Path(trial.root)):
        log_experiment(log_dir, hparams, class_names, trial.first)
    writer = tf.summary.create_file_writer(str(log_dir))
    with writer.as_default():
        hp.hparams(hparams, trial_id=trial.name)
        tf.summary.experimental.write_raw_pb(
            custom_scalars.pb(layout(class_names)).SerializeToString(), step=0)
    writer.close()


def log_final(log_dir: str | Path, metrics: dict, step: int):
    """Write the final figures as hparams/<name> scalars, the HPARAMS tab's metric columns."""
    writer = tf.summary.create_file_writer(str(log_dir))
    with writer.as_default(step=step):
        for name in FINAL_METRICS:
            if isinstance(metrics.get(name), (int, float)):
                tf.summary.scalar(f"hparams/{name}", float(metrics[name]))
        for tag, iou in zip(class_tags(metrics.get("class_names", [])),
                            metrics.get("val_iou_per_class", []), strict=False):
            tf.summary.scalar(f"hparams/val_iou/{tag}", float(iou))
        alarms = metrics.get("diagnostics", {})
        tf.summary.scalar("hparams/alarms", float(bool(alarms.get("constant_output"))
                                                  or bool(alarms.get("class_vanished"))))
    writer.close()
