"""Probes on one batch: the initial loss against ln C, the gradient reaching every layer, and
optionally a few steps of overfitting. The weights are restored afterwards."""

from __future__ import annotations

import math
import warnings
from typing import TYPE_CHECKING

import keras
import numpy as np
import tensorflow as tf

from seg.diagnostics.reading import LossInfo, first_output, layer_of
from seg.diagnostics.report import Finding, Report

if TYPE_CHECKING:
    from seg.diagnostics.model import Context

try:  # compile()'s wrapper of a loss function (aligns the masks' rank with the output's)
    from keras.src.losses.losses import LossFunctionWrapper
except ImportError:  # pragma: no cover (another Keras layout: the function is called bare)
    LossFunctionWrapper = None


def probe_into(report: Report, model, loss, x, y, ctx: Context, **kwargs):
    """The probes' findings, table and figures into the report, where the loss can run."""
    blocked = {f.check for f in report.errors} & {"output size", "class axis", "targets",
                                                  "labels"}
    if y is None or ctx.loss.family == "none":
        report.findings.append(Finding("warning", "probes", "initial-loss and gradient probes "
                                       "skipped: " + ("no masks" if y is None else "no loss"),
                                       fix="pass masks and loss= (or compile the model)"))
    elif blocked & {"output size", "targets"}:
        report.findings.append(Finding("warning", "probes", "initial-loss and gradient probes "
                                       "skipped: the loss cannot be computed on these shapes",
                                       fix="fix the errors above first"))
    elif _sparse_without_room(ctx, y):
        report.findings.append(Finding("warning", "probes", "initial-loss and gradient probes "
                                       "skipped: the sparse loss has no channel for label 1 "
                                       "(see head/loss), Keras stops on it",
                                       fix="fix the errors above first"))
    elif "labels" not in blocked:
        try:
            findings, table, figures = probe(model, loss, x, y, ctx,
                                             compare_initial=not blocked, **kwargs)
        except Exception as e:  # noqa: BLE001 (diagnose never crashes)
            report.findings.append(Finding(
                "warning", "probes", f"the probes could not run: {type(e).__name__}: "
                f"{str(e).splitlines()[0][:300] if str(e) else ''}",
                "the loss or the gradient could not be computed on one batch",
                "see the findings above; check that model.fit runs one step"))
            return
        if any(f.check == "constant output" for f in report.errors):
            findings = [_moves_nothing(f) if f.check == "gradients" and f.level == "ok" else f
                        for f in findings]
        report.findings += findings
        report.tables["gradients"] = table
        report.figures.update(figures)


def _sparse_without_room(ctx: Context, y) -> bool:
    """A sparse loss over one output channel with labels above 0: Keras raises on them."""
    return (ctx.loss.family == "sparse" and (ctx.head.channels or 1) == 1
            and bool(np.nanmax(np.asarray(y, np.float64)) >= 1))


def _images_scale(model, loss_fn, x, y, loss0: float, expected: float) -> bool:
    """Whether scaling the images to [0, 1] brings the initial loss nearer ln C, measured on
    the batch (after a BatchNorm the scale of the input barely matters). The caller restores
    the weights (training mode moves BatchNorm's statistics)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        scaled = float(loss_fn(y, first_output(model(x / np.float32(np.nanmax(x)),
                                                     training=True))))  # as loss0 was
    return math.isfinite(scaled) and abs(scaled - expected) < 0.5 * abs(loss0 - expected)


def _moves_nothing(found: Finding) -> Finding:
    """The gradient probe's all-clear beside an output that no weight can change."""
    return Finding("warning", "gradients", found.title.replace("every layer receives",
                                                               "the loss sends"),
                   "the loss's gradient reaches the weights, but the output is the same "
                   "whatever they are: training changes the weights and never the prediction",
                   "see the constant-output finding")


def _loss_callable(loss, info: LossInfo):
    """loss(y_true, y_pred) -> scalar, for a loss name, object or function."""
    fn = keras.losses.get(loss) if isinstance(loss, str) else loss
    if not isinstance(fn, keras.losses.Loss) and LossFunctionWrapper is not None:
        fn = LossFunctionWrapper(fn)  # what compile() does: the masks' rank aligned

    def call(y, pred):
        if info.family in ("categorical", "binary", "dice") and info.kind is None:
            y = tf.cast(y, pred.dtype)  # Keras' one-hot losses multiply y_true with y_pred
        return tf.reduce_mean(tf.cast(fn(y, pred), tf.float32))
    return call


def _layer_gradients(model, loss_fn, x, y, loss):
    with tf.GradientTape() as tape, warnings.catch_warnings():
        warnings.simplefilter("ignore")  # Keras' own one-channel warning: the report says more
        outputs = keras.tree.flatten(model(x, training=True))
        pred = outputs[0]
        value = loss_fn(y, pred)
    ce_part = None
    if getattr(loss, "kind", None) in ("ce", "ce_dice", "ce_lovasz"):  # starts at ln(C)
        ce_part = float(type(loss).from_config({**loss.get_config(), "kind": "ce"})(y, pred))
    grads = tape.gradient(value, model.trainable_variables)
    norms: dict[str, float] = {}
    other_outputs = set()  # layers of a multi-output model that only feed the other outputs
    for var, g in zip(model.trainable_variables, grads, strict=False):
        layer = layer_of(var, model)
        if g is None and len(outputs) > 1:  # not connected to the first output: its loss is
            other_outputs.add(layer)         # another's, which the probe does not compute
            continue
        norms[layer] = norms.get(layer, 0.0) + (0.0 if g is None else float(tf.norm(g)) ** 2)
    return float(value), ce_part, {k: math.sqrt(v) for k, v in norms.items()
                                   if k not in other_outputs}


def probe(model, loss, x, y, ctx: Context, *, compare_initial: bool = True,
          overfit_steps: int = 0, learning_rate: float = 1e-3) -> tuple[list[Finding], str, dict]:
    """Initial loss against its expected value, gradient norms per layer, optional overfit.

    Weights (and batch-norm statistics) are restored afterwards.
    """
    loss_fn = _loss_callable(loss, ctx.loss)
    saved = model.get_weights()
    try:
        loss0, ce0, norms = _layer_gradients(model, loss_fn, x, y, loss)
        classes = 2 if (ctx.head.channels or 1) == 1 or ctx.loss.family == "binary" \
            else ctx.head.channels
        expected = math.log(classes)
        figures = {"initial_loss": loss0, "expected_initial_loss": expected}
        if ce0 is not None:
            figures["initial_cross_entropy"] = ce0
        initial = _initial_loss(ctx, loss0, ce0, classes, compare_initial,
                                scales=lambda: _images_scale(model, loss_fn, x, y, loss0,
                                                             expected))
        gradients = _gradient_findings(norms, ctx, figures)
        if initial and initial[-1].level == "error" and gradients[0].level == "ok":
            gradients = [_gradient_of_a_constant_loss(ctx, loss0, figures)]
        out = initial + gradients
        if overfit_steps:
            out.append(_overfit(model, loss_fn, x, y, overfit_steps, learning_rate, loss0,
                                figures, ctx))
    finally:
        model.set_weights(saved)
    table = "gradient norm per layer or block (one batch, at initialisation)\n"
    return out, table + _gradient_table(norms), figures


def _initial_loss(ctx: Context, loss0: float, ce0: float | None, classes: int,
                  compare: bool, scales) -> list[Finding]:
    """The initial loss judged against ln C: non-finite and near-zero are errors, far off a
    warning (with advice to scale the images only where `scales()` measures that it helps)."""
    info, channels = ctx.loss, ctx.head.channels or 1
    expected = math.log(classes)
    zero_is_wrong = (info.family in ("categorical", "sparse", "binary")
                     or info.kind in ("ce", "focal", "ce_dice", "ce_lovasz"))
    if not math.isfinite(loss0):
        return [Finding("error", "initial loss", f"the loss is {loss0} before training",
                        "a non-finite loss at initialisation means broken inputs or labels",
                        "check the images for NaN/Inf and the masks' values against the loss")]
    if not (compare and zero_is_wrong):
        return []
    if loss0 < 0.05 * expected:
        return [Finding(
            "error", "initial loss",
            f"initial loss {loss0:.3g}, expected about ln({classes}) = {expected:.3f}",
            "the loss is already (near) zero before any training: it does not depend on the "
            "prediction, so there is nothing to learn from",
            "see the head/loss check: match the loss to the head")]
    ce = ce0 if ce0 is not None else loss0
    what = "cross-entropy" if ce0 is not None else "loss"
    total = f", {loss0:.3f} with Dice" if ce0 is not None and loss0 != ce0 else ""
    focal = "focal" in info.name.lower() or info.kind == "focal"  # scaled down
    comparable = (ce0 is not None or info.normalises or info.family == "binary") and not focal
    if not comparable:
        return [Finding("ok", "initial loss", f"{what} {ce:.3f} at initialisation (not compared "
                        f"with ln({classes}): {info.name} is not a plain cross-entropy)")]
    if abs(ce - expected) <= 0.5 * expected:
        return [Finding("ok", "initial loss", f"{what} {ce:.3f} (expected about ln({classes}) = "
                        f"{expected:.3f}){total}")]
    scale = ctx.image_max > 2 and not ctx.scaled_by and scales()
    return [Finding(
        "warning", "initial loss", f"initial {what} {ce:.3f}, expected about {expected:.3f} for "
        f"an untrained {channels}-channel head",
        "an untrained head should give every class about the same probability; a far-off "
        "initial loss is a head that starts over-confident (it still trains, slower at first), "
        "or points at label or activation problems",
        f"the images go up to {ctx.image_max:g}: scale them to [0, 1] (images / 255) or "
        "standardise them (measured: the loss on scaled images is near ln C)" if scale else
        "check the label audit and the head/loss check; a head that starts over-confident "
        "needs nothing")]


def _gradient_of_a_constant_loss(ctx: Context, loss0: float, figures: dict) -> Finding:
    """The gradient probe beside a loss that is 0 everywhere: where its gradient comes from."""
    return Finding(
        "warning", "gradients", f"the loss is {loss0:.2g}, yet a gradient reaches the head "
        f"`{ctx.head.head_layer}` (norm {figures['head_gradient_norm']:.2g})",
        "it does not come from the masks: Keras differentiates the one-channel cross-entropy "
        "through the activation's logits, where the gradient of a constant loss is not zero; it "
        "pushes every pixel towards one class", "see the head/loss findings")


def _gradient_table(norms: dict[str, float], rows: int = 16) -> str:
    """One row per layer; past `rows` layers, one per block (the name before its first '_':
    enc0, dec1, head), with the block's combined norm and its layer count."""
    if len(norms) <= rows:
        return "\n".join(f"  {name:<32} {value:.3e}" for name, value in norms.items())
    blocks: dict[str, list[float]] = {}
    for name, value in norms.items():
        blocks.setdefault(name.split("_")[0], []).append(value)
    return "\n".join(f"  {name:<20} {math.sqrt(sum(v * v for v in values)):.3e}  "
                     f"({len(values)} layer{'s' if len(values) > 1 else ''})"
                     for name, values in blocks.items())


def _gradient_findings(norms: dict[str, float], ctx: Context, figures: dict) -> list[Finding]:
    if ctx.head.head_layer in norms:
        head_layer = ctx.head.head_layer
    else:  # unknown: the layer nearest the output that gets the most gradient
        head_layer = max(norms, key=norms.get) if norms else None
    head = norms.get(head_layer, 0.0)
    figures["head_gradient_norm"] = head
    total = math.sqrt(sum(v * v for v in norms.values()))
    if not math.isfinite(total):
        return [Finding("error", "gradients", "non-finite gradients at initialisation",
                        "a NaN or Inf gradient destroys the weights on the first step",
                        "check the inputs for NaN/Inf and the loss")]
    if head < 1e-12 or head < 1e-6 * total:
        ratio = f", {head / total:.1g} of the network's total {total:.2g}" if head >= 1e-12 \
            else ""
        return [Finding(
            "error", "gradients", ("zero" if head < 1e-12 else "vanishing") + " gradient at the "
            f"head `{head_layer}` (norm {head:.2g}{ratio})",
            "no gradient (or a vanishing one) reaches the output layer, so no layer can learn: "
            "this is the "
            "yellow image before it happens (a constant loss, an activation that saturates "
            "or a loss that ignores the prediction)", ctx.fixes.head_gradient(ctx))]
    largest = max(norms.values(), default=0.0)
    dead = [k for k, v in norms.items() if v <= 1e-9 * largest]  # 0, or a billionth of the most
    if dead:
        listed = ", ".join(f"`{d}`" for d in dead[:8]) + (f" and {len(dead) - 8} more"
                                                          if len(dead) > 8 else "")
        return [Finding("warning", "gradients", "no gradient (none, or under a billionth of the "
                        f"largest layer's) reaches {len(dead)} of "
                        f"{len(norms)} layers with weights: {listed}",
                        "these layers will not learn: something between them and the loss "
                        "blocks the gradient (a ReLU dead for every pixel, a stop_gradient, an "
                        "argmax or rounding, a branch that never reaches the output)",
                        "look at what lies between these layers and the output; check for "
                        "frozen or disconnected layers")]
    return [Finding("ok", "gradients", f"every layer receives a gradient (head `{head_layer}` "
                    f"{head:.2e}, total {total:.2e})")]


def _overfit(model, loss_fn, x, y, steps, learning_rate, loss0, figures, ctx) -> Finding:
    optimizer = keras.optimizers.Adam(learning_rate)

    @tf.function
    def step():
        with tf.GradientTape() as tape:
            loss = loss_fn(y, model(x, training=True))
        optimizer.apply(tape.gradient(loss, model.trainable_variables), model.trainable_variables)
        return loss

    losses = [float(step()) for _ in range(steps)]
    figures["overfit_final_loss"] = losses[-1]
    bad = next((i for i, v in enumerate(losses) if not math.isfinite(v)), None)
    if bad is not None:
        return Finding("error", "overfit one batch", f"the loss became {losses[bad]} at step "
                       f"{bad + 1} of {steps} at learning rate {learning_rate}",
                       "the updates diverge: the weights blow up and the output collapses",
                       ctx.fixes.learning_rate(ctx))
    if losses[-1] > 0.7 * loss0:
        return Finding("error", "overfit one batch", f"{steps} steps on one batch took the loss "
                       f"from {loss0:.3f} to {losses[-1]:.3f} only",
                       "a model that cannot memorise one batch cannot learn the dataset; the "
                       "learning rate is off or the gradient does not reach the weights",
                       ctx.fixes.learn_rate_or_loss(ctx))
    return Finding("ok", "overfit one batch", f"loss {loss0:.3f} -> {losses[-1]:.3f} in "
                   f"{steps} steps")
