"""Checks before training: refuse set-ups that produce a constant ("yellow") or broken output.

Each check returns Findings that say what is wrong, why it breaks training, and the fix.
preflight() runs them all and the probes on one real batch; it never changes the model's
weights (probes restore them).
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass, field
from pathlib import Path

import keras
import numpy as np
import tensorflow as tf

from seg.models import level_sizes

CATEGORICAL = ("categorical_crossentropy", "sparse_categorical_crossentropy")
LEVELS = ("error", "warning", "ok")


class PreflightError(RuntimeError):
    """The checks before training found a set-up that cannot train; the message explains."""


@dataclass
class Finding:
    level: str  # error | warning | ok
    check: str
    title: str
    why: str = ""
    fix: str = ""


@dataclass
class Report:
    findings: list[Finding] = field(default_factory=list)
    tables: dict[str, str] = field(default_factory=dict)
    figures: dict[str, float] = field(default_factory=dict)

    @property
    def errors(self) -> list[Finding]:
        return [f for f in self.findings if f.level == "error"]

    @property
    def warnings(self) -> list[Finding]:
        return [f for f in self.findings if f.level == "warning"]

    def text(self, errors_only: bool = False) -> str:
        lines = [] if errors_only else ["== seg preflight checks =="]
        for f in sorted(self.findings, key=lambda f: LEVELS.index(f.level)):
            if errors_only and f.level != "error":
                continue
            lines.append(f"[{f.level.upper():>7}] {f.check}: {f.title}")
            for label, text in (("why", f.why), ("fix", f.fix)):
                if text:
                    lines.append(f"          {label}: {text}")
        if not errors_only:
            for name, table in self.tables.items():
                lines += ["", f"-- {name} --", table]
            n_err, n_warn = len(self.errors), len(self.warnings)
            lines.append(f"\n{n_err} error(s), {n_warn} warning(s)")
        return "\n".join(lines)

    def as_dict(self) -> dict:
        return {"errors": len(self.errors), "warnings": len(self.warnings),
                "findings": [asdict(f) for f in self.findings], "figures": self.figures}

    def save(self, out_dir: Path):
        out_dir.mkdir(parents=True, exist_ok=True)
        (out_dir / "preflight.txt").write_text(self.text() + "\n")
        (out_dir / "preflight.json").write_text(json.dumps(self.as_dict(), indent=2))


# --- head, activation and loss ---------------------------------------------------------

def check_head_and_loss(*, num_classes: int, out_channels: int | None,
                        head_activation: str | None, loss: str, from_logits: bool) -> list[Finding]:
    """Refuse heads and losses that cannot train together (the classic yellow image)."""
    channels = out_channels or num_classes
    out = []
    two_ways = ("use one channel per class (model.out_channels=null, model.head_activation=null)"
                " with loss.name=auto (softmax cross-entropy from logits, + Dice), or keep one "
                "channel with model.head_activation=null and loss.name=auto (sigmoid + binary "
                "cross-entropy from logits, + Dice)")
    if head_activation not in (None, "sigmoid", "softmax"):
        out.append(Finding("error", "head", f"model.head_activation={head_activation!r} is "
                           "not a segmentation head", "the head must give logits or per-class "
                           "probabilities", "use null (logits), sigmoid or softmax"))
    if channels == 1 and head_activation == "softmax":
        out.append(Finding(
            "error", "head", "softmax over a single output channel",
            "softmax normalises across channels; over one channel it is exp(z)/exp(z) = 1 for "
            "every pixel, whatever the input. The output is a constant picture (the 'yellow "
            "image') and no gradient reaches the network.", two_ways))
    if channels == 1 and loss in CATEGORICAL:
        why = ("categorical cross-entropy renormalises the prediction over the channels; with one "
               "channel every pixel becomes exactly 1, so the loss is constant and its gradient "
               "is zero. Nothing trains, with any decoder: the output stays a flat picture "
               "(the 'yellow image').")
        if loss == "sparse_categorical_crossentropy":
            why = ("sparse categorical cross-entropy over one channel has room for class 0 only: "
                   "softmax of one logit is 1, the loss is 0 for background and label 1 is out of "
                   "range. Nothing trains.")
        out.append(Finding("error", "head/loss",
                           f"one output channel trained with {loss}", why, two_ways))
    if channels > 1 and head_activation == "sigmoid" and loss not in ("binary_crossentropy",):
        out.append(Finding(
            "warning", "head/loss", f"sigmoid over {channels} channels with loss {loss}",
            "per-channel sigmoids do not sum to 1 across classes, so a cross-entropy over "
            "classes sees unnormalised probabilities",
            "model.head_activation=null with loss.from_logits=true (softmax inside the loss)"))
    if channels > 1 and loss == "binary_crossentropy":
        out.append(Finding(
            "warning", "head/loss", f"binary cross-entropy over {channels} exclusive classes",
            "binary cross-entropy scores each channel independently (multi-label); for "
            "exclusive classes the classes compete in softmax cross-entropy",
            "loss.name=auto"))
    if head_activation and from_logits:
        out.append(Finding(
            "error", "from_logits",
            f"probabilities ({head_activation} head) fed to a loss with from_logits=true",
            f"the loss applies {'sigmoid' if channels == 1 else 'softmax'} again to values in "
            "[0, 1]; the squashed outputs differ little between classes, gradients shrink and the "
            "prediction drifts toward a constant",
            "model.head_activation=null (logits, recommended) or loss.from_logits=false"))
    if not head_activation and not from_logits:
        out.append(Finding(
            "error", "from_logits", "logits fed to a loss with from_logits=false",
            "the loss reads raw logits as probabilities: negative logits are clipped to 1e-7 and "
            "values above 1 to 1, so most pixels give a constant loss and no gradient",
            "loss.from_logits=true (recommended) or set model.head_activation"))
    if not out:
        out.append(Finding("ok", "head/loss", f"{channels} output channel(s), "
                           f"{head_activation or 'logits'}, loss {loss}, from_logits={from_logits}"))
    return out


# --- labels ---------------------------------------------------------------------------

def audit_labels(samples: list[tuple[str, np.ndarray]], *, num_classes: int, ignore_index: int,
                 class_names: list[str] | None = None) -> tuple[list[Finding], np.ndarray]:
    """Check sampled masks for values outside [0, num_classes) and degenerate class balance.

    Returns the findings and the class histogram (pixel counts) of the sampled masks.
    """
    names = class_names or [str(k) for k in range(num_classes)]
    hist = np.zeros(num_classes, np.int64)
    bad: dict[str, list[int]] = {}
    ignored, pixels, only_zero_and_ignore = 0, 0, []
    for name, mask in samples:
        values, counts = np.unique(mask, return_counts=True)
        ignored += int(counts[values == ignore_index].sum())
        pixels += mask.size
        if set(values.tolist()) == {0, ignore_index}:
            only_zero_and_ignore.append(name)
        out_of_range = [int(v) for v in values
                        if v != ignore_index and not 0 <= v < num_classes]
        if out_of_range:
            bad[name] = out_of_range
        for v, c in zip(values, counts):
            if 0 <= v < num_classes and v != ignore_index:
                hist[int(v)] += c
    out = []
    if bad:
        all_bad = sorted({v for vs in bad.values() for v in vs})
        listed = "; ".join(f"{n}: {vs}" for n, vs in list(bad.items())[:8])
        more = f" (and {len(bad) - 8} more files)" if len(bad) > 8 else ""
        if all_bad == [255] and num_classes == 2:
            fix = ("the masks look like 0/255 images: map 255 to class 1 with "
                   "data.label_map='{255:1}'")
        else:
            mapping = ",".join(f"{v}:{min(i + 1, num_classes - 1)}" for i, v in enumerate(all_bad))
            fix = (f"map the raw values to class indices, e.g. data.label_map='{{{mapping}}}', "
                   f"mark them as void with data.ignore_index, or raise data.num_classes")
        out.append(Finding(
            "error", "labels",
            f"mask values {all_bad} are outside [0, {num_classes}) in {len(bad)} of "
            f"{len(samples)} sampled masks: {listed}{more}",
            "a loss indexes its class axis with the label: an out-of-range label either crashes "
            "or is silently clipped to another class, and the network learns a nearly "
            "constant output", fix))
    total = hist.sum()
    ignore_share = ignored / max(pixels, 1)
    if only_zero_and_ignore and len(only_zero_and_ignore) * 2 >= len(samples) and ignore_share > 0.05:
        listed = ", ".join(only_zero_and_ignore[:5])
        out.append(Finding(
            "error", "labels",
            f"{len(only_zero_and_ignore)} of {len(samples)} sampled masks hold only 0 and "
            f"{ignore_index} (= data.ignore_index), which covers {100 * ignore_share:.1f}% of "
            f"all pixels: {listed}",
            f"these look like 0/{ignore_index} binary masks, not void labels: every foreground "
            "pixel would be ignored, the network sees background only and learns a constant "
            "picture", f"map the foreground to class 1 with data.label_map='{{{ignore_index}:1}}'"))
        return out, hist
    if ignore_share > 0.5:
        out.append(Finding("warning", "labels", f"{100 * ignore_share:.1f}% of sampled pixels "
                           f"are ignore_index={ignore_index}",
                           "most of the image does not count in the loss",
                           "check data.ignore_index and data.label_map"))
    if total == 0 and samples:
        out.append(Finding("error", "labels", "every sampled pixel is ignore_index",
                           "there is nothing to learn from", "check data.ignore_index and the masks"))
    elif samples and not bad:  # with out-of-range labels, the histogram says little
        present = [k for k in range(num_classes) if hist[k] > 0]
        if len(present) == 1:
            out.append(Finding(
                "error", "labels",
                f"every labelled pixel in {len(samples)} sampled masks is class "
                f"{present[0]} ({names[present[0]]})",
                "a network trained on a single class learns to output that class everywhere: a "
                "constant picture, and the IoU of every other class stays 0",
                "check the masks and data.label_map (were the objects mapped to background?)"))
        else:
            absent = [names[k] for k in range(num_classes) if hist[k] == 0]
            if absent:
                out.append(Finding("warning", "labels", f"classes {absent} never appear in "
                                   f"{len(samples)} sampled masks",
                                   "a class that is never seen cannot be learned",
                                   "check data.num_classes and the label mapping"))
            share = hist / total
            rare = [f"{names[k]} {100 * share[k]:.2f}%" for k in present if share[k] < 0.01]
            if rare:
                out.append(Finding("warning", "labels", f"rare classes: {rare}",
                                   "a class under 1% of pixels is easy to predict away",
                                   "loss.name=ce_dice or loss.class_weights"))
        if len(present) > 1:
            out.append(Finding("ok", "labels", f"{len(samples)} masks sampled, values within "
                               f"[0, {num_classes}) or ignore_index={ignore_index}"))
    return out, hist


# --- shapes and decoder ---------------------------------------------------------------

def _naive_sizes(size: int, depth: int) -> tuple[list[int], list[int]]:
    """Sizes a U-Net without padding would produce: floor on the way down, x2 on the way up."""
    down = [size]
    for _ in range(depth):
        down.append(down[-1] // 2)
    up = [down[-1] * 2 ** (i + 1) for i in range(depth)]
    return down, up


def shape_plan(sizes: list[tuple[int, int]], *, depth: int, decoder: str) -> tuple[list[Finding], str]:
    """The spatial size at every encoder and decoder level for the given input sizes.

    Returns the findings and a printable table. The model pads inputs to a multiple of
    2**depth and crops its output back, so no skip connection ever sees mismatched sizes; the
    table shows where a U-Net without that padding would break.
    """
    m = 2 ** depth
    lines = [f"level sizes (depth {depth}, decoder {decoder}; inputs padded to a multiple of {m})"]
    out = []
    for h, w in sorted(set(sizes)):
        ph, pw = level_sizes(h, depth), level_sizes(w, depth)
        enc = " -> ".join(f"{a}x{b}" for a, b in zip(ph["encoder"], pw["encoder"]))
        dec = " -> ".join(f"{a}x{b}" for a, b in zip(ph["decoder"], pw["decoder"]))
        lines.append(f"  input {h}x{w}: padded {ph['padded']}x{pw['padded']} | encoder {enc} | "
                     f"decoder {dec} | output cropped to {h}x{w}")
        if h % m or w % m:
            breaks = []
            for side, n in (("height", h), ("width", w)):
                down, up = _naive_sizes(n, depth)
                for level in range(depth):
                    skip, upsampled = down[depth - 1 - level], up[level]
                    if skip != upsampled:
                        breaks.append(f"{side}: skip {skip} vs upsampled {upsampled} at decoder "
                                      f"level {depth - 1 - level}")
                        break
            lines.append("    without padding: " + "; ".join(breaks))
            out.append(Finding(
                "ok", "shape plan", f"input {h}x{w} is not a multiple of {m}: padded to "
                f"{ph['padded']}x{pw['padded']} (zeros) and cropped back; padded pixels never "
                "reach the loss or the metrics"))
    if not out:
        out.append(Finding("ok", "shape plan", f"all input sizes {sorted(set(sizes))} are "
                           f"multiples of {m}"))
    return out, "\n".join(lines)


def check_decoder(*, decoder: str, kernel_size: int, init: str, stride: int = 2) -> list[Finding]:
    """Warn about transposed convolutions whose kernel does not divide by the stride."""
    if decoder == "pixelshuffle":
        return [Finding("ok", "decoder", "pixelshuffle: sub-pixel convolution with ICNR "
                        "initialisation, starts without checkerboard")]
    if decoder != "deconv":
        return [Finding("ok", "decoder", f"{decoder}: fixed upsampling + convolution, no "
                        "checkerboard risk")]
    if kernel_size % stride:
        return [Finding(
            "warning", "decoder",
            f"transposed convolution with kernel_size={kernel_size} and stride {stride}",
            f"{kernel_size} is not a multiple of {stride}: output pixels receive unequal numbers "
            "of kernel taps (uneven overlap), which prints a checkerboard pattern into the "
            "prediction (Odena et al., 2016)",
            f"decoder.kernel_size={stride * max(kernel_size // stride, 1)} (a multiple of the "
            "stride), decoder.init=bilinear, or +decoder=upsample")]
    return [Finding("ok", "decoder", f"deconv kernel {kernel_size} is a multiple of the stride "
                    f"{stride} (even overlap), init {init}")]


def check_encoder(*, encoder: str, encoder_weights, freeze_encoder: bool,
                  unfreeze_after: int | None) -> list[Finding]:
    """Warn about a frozen encoder that was never trained (its features are noise)."""
    if encoder != "unet" and freeze_encoder and encoder_weights is None and not unfreeze_after:
        return [Finding("warning", "encoder", f"frozen {encoder} encoder with random weights",
                        "a frozen encoder that was never trained passes noise to the decoder for "
                        "the whole run", "model.encoder_weights=imagenet (or a weights file), "
                        "model.freeze_encoder=false, or trainer.unfreeze_encoder_after=N")]
    return []


# --- probes on one batch ---------------------------------------------------------------

def _layer_gradients(model, loss_fn, x, y):
    with tf.GradientTape() as tape:
        pred = model(x, training=True)
        loss = loss_fn(y, pred)
    ce_part = None
    if getattr(loss_fn, "kind", None) in ("ce", "ce_dice", "ce_lovasz"):  # starts at ln(C)
        ce_part = float(type(loss_fn).from_config({**loss_fn.get_config(), "kind": "ce"})(y, pred))
    grads = tape.gradient(loss, model.trainable_variables)
    norms: dict[str, float] = {}
    for var, g in zip(model.trainable_variables, grads):
        layer = var.path.split("/")[-2] if "/" in var.path else var.path
        layer = layer.split("_")[0]  # one row per block: enc0, ..., bottleneck, dec0, head
        value = 0.0 if g is None else float(tf.norm(g)) ** 2
        norms[layer] = norms.get(layer, 0.0) + value
    return float(loss), ce_part, {k: math.sqrt(v) for k, v in norms.items()}


def probe(model, loss_fn, batch, *, num_classes: int, out_channels: int | None, loss: str,
          overfit_steps: int = 0, learning_rate: float = 1e-3) -> tuple[list[Finding], str, dict]:
    """Initial loss against its expected value, gradient norms per layer, optional overfit.

    Weights (and batch-norm statistics) are restored afterwards.
    """
    x, y = batch
    saved = model.get_weights()
    out = []
    try:
        loss0, ce0, norms = _layer_gradients(model, loss_fn, x, y)
        channels = out_channels or num_classes
        expected = math.log(2 if channels == 1 else channels)
        figures = {"initial_loss": loss0, "expected_initial_loss": expected}
        if ce0 is not None:
            figures["initial_cross_entropy"] = ce0
        if not math.isfinite(loss0):
            out.append(Finding("error", "initial loss", f"the loss is {loss0} before training",
                               "a non-finite loss at initialisation means broken inputs or "
                               "labels", "check the data (seg check) and the loss"))
        elif loss in ("auto", "ce", "focal", "ce_dice", "ce_lovasz", *CATEGORICAL,
                      "binary_crossentropy"):
            if loss0 < 0.05 * expected:
                out.append(Finding(
                    "error", "initial loss",
                    f"initial loss {loss0:.3g}, expected about ln({2 if channels == 1 else channels})"
                    f" = {expected:.3f}",
                    "the loss is already (near) zero before any training: it does not depend on "
                    "the prediction, so there is nothing to learn from",
                    "see the head/loss check: match the loss to the head"))
            else:
                ce = ce0 if ce0 is not None else loss0
                what = "cross-entropy" if ce0 is not None else "loss"
                total = f", {loss0:.3f} with Dice" if ce0 is not None and loss0 != ce0 else ""
                if (ce0 is not None or loss in CATEGORICAL) and abs(ce - expected) > 0.5 * expected:
                    out.append(Finding(
                        "warning", "initial loss", f"initial {what} {ce:.3f}, expected about "
                        f"{expected:.3f} for an untrained {channels}-channel head",
                        "an untrained head should give every class about the same probability; "
                        "a far-off initial loss points at label or activation problems",
                        "check the label audit and the head/loss check"))
                else:
                    out.append(Finding("ok", "initial loss", f"{what} {ce:.3f} (expected about "
                                       f"ln({2 if channels == 1 else channels}) = "
                                       f"{expected:.3f}){total}"))
        head = norms.get("head", 0.0)
        figures["head_gradient_norm"] = head
        total = math.sqrt(sum(v * v for v in norms.values()))
        if not math.isfinite(total):
            out.append(Finding("error", "gradients", "non-finite gradients at initialisation",
                               "a NaN or Inf gradient destroys the weights on the first step",
                               "check the inputs for NaN/Inf and the loss"))
        elif head < 1e-12:
            out.append(Finding(
                "error", "gradients", f"zero gradient at the head (norm {head:.2g})",
                "no gradient reaches the output layer, so no layer can learn: this is the "
                "yellow image before it happens (a constant loss, an activation that saturates "
                "or a loss that ignores the prediction)",
                "see the head/loss check; use logits with loss.name=auto"))
        else:
            dead = [k for k, v in norms.items() if v == 0.0]
            if dead:
                out.append(Finding("warning", "gradients", f"blocks with zero gradient: {dead}",
                                   "these layers will not learn",
                                   "check for frozen or disconnected layers"))
            else:
                out.append(Finding("ok", "gradients", f"every layer receives a gradient "
                                   f"(head {head:.2e}, total {total:.2e})"))
        table = "\n".join(f"  {name:<24} {value:.3e}" for name, value in norms.items())
        if overfit_steps:
            out.append(_overfit(model, loss_fn, x, y, overfit_steps, learning_rate, loss0,
                                figures))
    finally:
        model.set_weights(saved)
    return out, "gradient norm per block (one batch, at initialisation)\n" + table, figures


def _overfit(model, loss_fn, x, y, steps, learning_rate, loss0, figures) -> Finding:
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
                       "lower trainer.learning_rate (try 10x smaller)")
    if losses[-1] > 0.7 * loss0:
        return Finding("error", "overfit one batch", f"{steps} steps on one batch took the loss "
                       f"from {loss0:.3f} to {losses[-1]:.3f} only",
                       "a model that cannot memorise one batch cannot learn the dataset; the "
                       "learning rate is off or the gradient does not reach the weights",
                       "check the head/loss findings and trainer.learning_rate")
    return Finding("ok", "overfit one batch", f"loss {loss0:.3f} -> {losses[-1]:.3f} in "
                   f"{steps} steps")


def preflight(*, model, loss_fn, batch, samples, num_classes: int, ignore_index: int,
              class_names: list[str], out_channels: int | None, head_activation: str | None,
              loss: str, from_logits: bool, decoder: str, kernel_size: int, init: str,
              depth: int, input_sizes: list[tuple[int, int]], probes: bool = True,
              overfit_steps: int = 0, learning_rate: float = 1e-3, encoder: str = "unet",
              encoder_weights=None, freeze_encoder: bool = False,
              unfreeze_after: int | None = None) -> Report:
    """Run every check before training.

    Args:
        model, loss_fn: the model and loss about to be trained (weights are left unchanged).
        batch: one (images, masks) training batch for the probes.
        samples: [(file name, mask)] for the label audit.
        input_sizes: (height, width) of the training crops and of sampled validation images.
        The remaining arguments describe the configured head, loss and decoder.

    Returns:
        A Report; report.errors is non-empty when training cannot work.
    """
    report = Report()
    report.findings += check_head_and_loss(num_classes=num_classes, out_channels=out_channels,
                                           head_activation=head_activation, loss=loss,
                                           from_logits=from_logits)
    label_findings, hist = audit_labels(samples, num_classes=num_classes,
                                        ignore_index=ignore_index, class_names=class_names)
    report.findings += label_findings
    if hist.sum():
        share = hist / hist.sum()
        report.tables["class histogram (sampled masks)"] = "\n".join(
            f"  {k} {class_names[k]:<16} {100 * share[k]:6.2f}%" for k in range(num_classes))
    plan_findings, plan = shape_plan(input_sizes, depth=depth, decoder=decoder)
    report.findings += plan_findings
    report.tables["shape plan"] = plan
    report.findings += check_decoder(decoder=decoder, kernel_size=kernel_size, init=init)
    report.findings += check_encoder(encoder=encoder, encoder_weights=encoder_weights,
                                     freeze_encoder=freeze_encoder, unfreeze_after=unfreeze_after)
    head_ok = not any(f.level == "error" and f.check == "labels" for f in report.findings)
    if probes and head_ok:
        findings, table, figures = probe(model, loss_fn, batch, num_classes=num_classes,
                                         out_channels=out_channels, loss=loss,
                                         overfit_steps=overfit_steps, learning_rate=learning_rate)
        report.findings += findings
        report.tables["gradients"] = table
        report.figures.update(figures)
    return report
