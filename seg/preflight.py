"""The checks before training, from a config: seg.diagnose on the model and data it builds."""

from __future__ import annotations

from pathlib import Path

import keras
import numpy as np
import tensorflow as tf

from seg import console, diagnostics, recipe
from seg.config import ConfigError
from seg.data import pipeline
from seg.diagnostics import reading as introspect
from seg.diagnostics.fixes import ConfigFixes
from seg.losses import SegmentationLoss
from seg.models import levels_of
from seg.monitor import log_report
from seg.parts import Parts, check_sections, data_errors_named, open_data, prepare, sized


def diagnose(cfg: dict, parts: Parts | None = None) -> diagnostics.Report:
    """Every check before training and the probes on one batch, for a config.

    The checks are seg.diagnose's, on the model and loss this config builds (the same path as
    for any Keras model), with the fixes in config keys, plus what only the config knows: the
    shape plan of the padding, a frozen random encoder and the file audit of the data.
    """
    # the model's first run: TensorFlow's notices about the CPU's kernels kept off the console
    with pipeline.labels_unchecked(), console.filtered_stderr():
        return _diagnose(cfg, parts or prepare(cfg))


def _diagnose(cfg: dict, parts: Parts) -> diagnostics.Report:
    cfg = parts.resolved(cfg)  # the advice judges what `auto` became, never suggests it again
    source, diag = parts.source, cfg["diagnostics"]
    samples = source.sample_masks(diag["label_audit_samples"])
    sizes = [(parts.image_size, parts.image_size)] + sorted({m.shape for _, m in samples})
    model_cfg, data = cfg["model"], cfg["data"]
    with data_errors_named():
        images, masks = next(iter(parts.train_ds))
    report = diagnostics.diagnose(
        parts.model, np.asarray(images), np.asarray(masks), loss=parts.loss,
        num_classes=data["num_classes"], ignore_index=data["ignore_index"],
        class_names=source.class_names, probes=diag["probes"],
        overfit_steps=diag["overfit_steps"], learning_rate=float(cfg["trainer"]["learning_rate"]),
        label_samples=samples, fixes=ConfigFixes(cfg))
    report.title = "seg preflight checks"
    depth = levels_of(model_cfg["encoder"], model_cfg["depth"], parts.model)
    plan_findings, plan = diagnostics.shape_plan(sizes, depth=depth, decoder=cfg["decoder"]["name"])
    report.findings += plan_findings
    report.tables["shape plan"] = plan
    report.findings += recipe.recipe_findings(
        cfg, [m for _, m in samples], depth=depth, steps=parts.steps,
        batch=parts.batch_size, num_val=source.num_val,
        auto=frozenset(parts.computed.get("auto", {})))
    report.findings += diagnostics.check_encoder(
        encoder=model_cfg["encoder"], encoder_weights=model_cfg["encoder_weights"],
        freeze_encoder=model_cfg["freeze_encoder"],
        unfreeze_after=cfg["trainer"]["unfreeze_encoder_after"],
        notes=getattr(parts.model, "seg_notes", ()))
    if source.audit is not None:  # the file audit of scripts/check_data.py, on a sample
        skip = cfg["data"].get("on_bad_sample") == "skip"
        audited = source.audit(diag["label_audit_samples"])
        for problem in audited.problems:
            level = "warning" if skip or problem.level == "warning" else "error"
            report.findings.append(diagnostics.Finding(
                level, f"data: {problem.kind}", problem.detail,
                fix="" if level == "warning" else "fix or remove the file "
                "(python scripts/check_data.py scans every file), or data.on_bad_sample=skip"))
        if not audited.problems:
            report.findings.append(diagnostics.Finding(
                "ok", "data", f"{sum(audited.counts.values())} sampled pairs decode and match"))
    return report


def diagnose_model(cfg: dict, model: keras.Model, loss=None, from_logits: bool | None = None
                   ) -> diagnostics.Report:
    """seg.diagnose for a model seg did not build, on the data of a config (its data section).

    Training crops of the model's input size (or data.image_size) without augmentation, in
    [0, 1]; grayscale data is repeated for a 3-channel model. A one-hot loss gets one-hot
    masks (what a user's pipeline would feed it). `loss`: a Keras loss name, a seg loss name
    (auto, ce, dice, ...) or None for the compiled one; from_logits for a loss given by name.
    """
    check_sections(cfg)
    data, diag = cfg["data"], cfg["diagnostics"]
    source, pipe = open_data(data)
    shape = model.input_shape if hasattr(model, "input_shape") else (None, None, None, None)
    size = shape[1] if shape[1] and shape[1] == shape[2] else pipe["image_size"]
    if size == "auto":  # data.image_size=auto: the crop the objects ask for
        size = sized(cfg, source)[0]["data"]["image_size"]
    want = shape[-1]
    if want not in (None, source.channels) and not (want == 3 and source.channels == 1):
        raise ConfigError(f"the model takes {want} input channels, the data has "
                          f"{source.channels}: set data.channels={want} (or use a model for "
                          f"{source.channels} channels)")
    loss = _named_loss(loss, from_logits, data) if isinstance(loss, str) else loss
    ds = pipeline.training(source.train, num_examples=source.num_train, batch_size=8,
                           image_size=size, augment_data=False, ignore_index=pipe["ignore_index"],
                           seed=cfg["seed"]).take(max(diag["label_audit_samples"] // 8, 1))
    if want == 3 and source.channels == 1:
        ds = ds.map(lambda x, y: (tf.repeat(x, 3, axis=-1), y))
    info = introspect.read_loss(loss if loss is not None else introspect.compiled_loss(model))
    out_shape = getattr(model, "output_shape", None)
    rank = len(out_shape) if isinstance(out_shape, tuple) else 0
    channels = out_shape[-1] if rank in (3, 4) else None
    if info.targets == "one_hot" and channels and channels > 1:
        ds = ds.map(lambda x, y: (x, tf.one_hot(y, channels)))
    if rank == 3 and channels and out_shape[1] not in (None, size):  # [B, H*W, C]: pixels
        ds = ds.map(lambda x, y: (x, tf.reshape(y, tf.concat([tf.shape(y)[:1], [-1],
                                                             tf.shape(y)[3:]], 0))))
    with pipeline.labels_unchecked(), console.filtered_stderr():
        return diagnostics.diagnose(
            model, ds, loss=loss, num_classes=data["num_classes"],
            ignore_index=data["ignore_index"], class_names=source.class_names,
            probes=diag["probes"], overfit_steps=diag["overfit_steps"],
            learning_rate=float(cfg["trainer"]["learning_rate"]),
            label_samples=source.sample_masks(diag["label_audit_samples"]))


def _named_loss(name: str, from_logits: bool | None, data: dict):
    """A loss by name: seg's (auto, ce, dice, ...) as a SegmentationLoss, Keras' by its name."""
    from seg.losses import NAMES, OWN

    if name in ("auto",) + OWN:
        return SegmentationLoss(name, num_classes=data["num_classes"],
                                ignore_index=data["ignore_index"],
                                from_logits=True if from_logits is None else from_logits)
    try:
        fn = keras.losses.get(name)
    except (ValueError, TypeError):
        raise ConfigError(f"--loss {name}: not a Keras or seg loss name (seg's: {list(NAMES)})") \
            from None
    if from_logits is None:
        return name
    cls = "".join(p.capitalize() for p in fn.__name__.split("_"))
    try:
        return keras.losses.get({"class_name": cls, "config": {"from_logits": from_logits}})
    except (ValueError, TypeError):
        raise ConfigError(f"--loss {name}: Keras has no {cls} class taking from_logits") from None


def preflight(cfg: dict, parts: Parts, out: Path, chief: bool) -> diagnostics.Report:
    """The checks before training (on every worker: all refuse, or none); the chief saves and
    prints the report. PreflightError refuses a broken set-up with diagnostics.preflight=error."""
    mode = cfg["diagnostics"]["preflight"]
    if mode == "off":
        return diagnostics.Report()
    report = diagnose(cfg, parts)
    refuse = bool(report.errors) and mode == "error"
    if chief:
        if not refuse and not (out / "diagnostics" / "preflight.txt").exists():  # not again
            log_report(out / "tb" / "validation", report)        # on resume
        report.save(out / "diagnostics")
        # a refusal's errors come once, in its message; the rest of the report here
        print(report.text(skip_errors=refuse), flush=True)
    if refuse:
        raise diagnostics.PreflightError(
            report.text(errors_only=True) + "\n\nTraining refused before the first step. To "
            "train anyway (for example to watch the collapse), set diagnostics.preflight=warn.")
    if report.errors:
        print(f"seg: training anyway despite {len(report.errors)} preflight error(s) "
              "(diagnostics.preflight=warn); the monitors will watch for a collapse.", flush=True)
    return report
