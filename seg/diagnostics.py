"""Checks that catch a segmentation set-up that cannot train, on any Keras model.

`diagnose(model, images, masks)` reads the model, its loss and the data themselves (the output's
shape and channels, the activation at the end, the loss's kind and from_logits, the masks'
shape and values), runs every check on what it finds and probes one batch: the initial loss
against ln C and the gradient reaching every layer. Each finding says what is wrong, why it
breaks training, and the fix, in the words of the model's own layers and loss. seg's pipeline
calls the same function on the model and loss it built, with the fixes in config keys
(seg.fixes.ConfigFixes). The weights are never changed: the probes restore them.

The collapse monitors' arithmetic (output_stats, alarms_for) lives here too, so the callbacks
and the report judge a flat output by one rule.
"""

from __future__ import annotations

import dataclasses
import json
import math
import warnings
from dataclasses import asdict, dataclass, field
from pathlib import Path

import keras
import numpy as np
import tensorflow as tf

from seg.fixes import ConfigFixes, KerasFixes
from seg.introspect import (Head, LossInfo, all_layers, as_image, class_indices, compiled_loss,
                            input_scaling, is_multi_hot, is_one_hot, layer_of, non_integer,
                            probabilities, read_head, read_loss, size_changes)
from seg.models import level_sizes

try:  # compile()'s wrapper of a loss function (aligns the masks' rank with the output's)
    from keras.src.losses.losses import LossFunctionWrapper
except ImportError:  # pragma: no cover (another Keras layout: the function is called bare)
    LossFunctionWrapper = None

CATEGORICAL = ("categorical_crossentropy", "sparse_categorical_crossentropy")
LEVELS = ("error", "warning", "ok")
PROBE_BATCH = 8  # images the probes forward and backward


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
    """What diagnose() found. `errors` and `warnings` are lists of Findings (check, title, why,
    fix); `ok` is True when there is no error; str(report) is the readable report."""

    findings: list[Finding] = field(default_factory=list)
    tables: dict[str, str] = field(default_factory=dict)
    figures: dict[str, float] = field(default_factory=dict)
    title: str = "seg preflight checks"

    @property
    def errors(self) -> list[Finding]:
        return [f for f in self.findings if f.level == "error"]

    @property
    def warnings(self) -> list[Finding]:
        return [f for f in self.findings if f.level == "warning"]

    @property
    def ok(self) -> bool:
        return not self.errors

    def text(self, errors_only: bool = False, skip_errors: bool = False) -> str:
        """The readable report; errors_only: the errors alone; skip_errors: all but them."""
        lines = [] if errors_only else [f"== {self.title} =="]
        for f in sorted(self.findings, key=lambda f: LEVELS.index(f.level)):
            if (errors_only and f.level != "error") or (skip_errors and f.level == "error"):
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

    __str__ = text

    def as_dict(self) -> dict:
        return {"ok": self.ok, "errors": len(self.errors), "warnings": len(self.warnings),
                "findings": [asdict(f) for f in self.findings], "figures": self.figures}

    def save(self, out_dir: Path):
        out_dir.mkdir(parents=True, exist_ok=True)
        (out_dir / "preflight.txt").write_text(self.text() + "\n")
        (out_dir / "preflight.json").write_text(json.dumps(self.as_dict(), indent=2))


@dataclass
class Context:
    """What the checks know about the set-up: the model's head, its loss, the classes."""

    head: Head
    loss: LossInfo
    num_classes: int
    ignore_index: int | None = None
    class_names: list[str] = field(default_factory=list)
    fixes: KerasFixes = field(default_factory=KerasFixes)
    image_max: float = 1.0  # the largest input value seen (255: images not scaled)
    scaled_by: str | None = None  # the model's own layer that scales its images, if any


# --- the one entry point ----------------------------------------------------------------

def _run_model(report: Report, model, images, masks, audit_samples: int):
    """(x, y, masks for the label audit, the model's outputs on x), or None with the finding
    that says why the data could not be read or the model could not run on it."""
    try:
        check_data(images, masks)
        x, y, audit_masks = _read_data(images, masks, audit_samples,
                                       getattr(model, "input_shape", None))
    except Exception as e:  # noqa: BLE001 (diagnose never crashes: it says what it could not read)
        report.findings.append(Finding(
            "error", "inputs", f"the images/masks cannot be read: {type(e).__name__}: {e}",
            "diagnose needs arrays or a tf.data.Dataset of (image, mask) batches",
            "pass diagnose(model, images, masks) with numpy arrays, or a batched dataset"))
        return None
    try:
        with warnings.catch_warnings():  # Keras' own hints (softmax over one channel): the
            warnings.simplefilter("ignore")  # report explains them in the model's terms
            outputs = keras.tree.flatten(model(x, training=False))
    except Exception as e:  # noqa: BLE001
        shape = getattr(model, "input_shape", None)
        report.findings.append(Finding(
            "error", "inputs", f"the model cannot run on images of shape {x.shape}: "
            f"{type(e).__name__}: {str(e).splitlines()[0][:300]}",
            "every check needs one forward pass",
            f"give the model images of the shape it expects ({shape})" if shape else
            "check the images' shape and channels against the model's input"))
        return None
    bad = _non_finite_images(images)
    if bad:
        report.findings.append(Finding(
            "error", "inputs", f"{len(bad)} image(s) hold NaN or Inf values: index {bad[:8]}",
            "one non-finite pixel makes the loss and every weight NaN at the first step",
            "clean or drop those images (np.isfinite(images).all(axis=(1, 2, 3)))"))
    return x, y, audit_masks, outputs


def _multi_output(model, n: int) -> Finding:
    try:
        first = f" (from `{model.outputs[0]._keras_history.operation.name}`)"
    except (AttributeError, IndexError, ValueError):
        first = ""
    return Finding(
        "warning", "model", f"the model has {n} outputs: the first{first} is checked, with its "
        "loss", "seg.diagnose follows one segmentation output; the masks given must be that "
        "output's", "to check another, pass a model of that output: keras.Model(model.inputs, "
        "model.outputs[i])")


def _labels_into(report: Report, label_samples, audit_masks, ctx: Context):
    """The label audit: of the given samples, else of the data's masks (class indices,
    one-hot with unlabelled rows of zeros; multi-label masks have none)."""
    whole = check_whole_numbers(ctx, audit_masks) if audit_masks is not None else []
    report.findings += whole
    if any(f.level == "error" for f in whole) and not label_samples:
        return  # a histogram of truncated values would invent classes
    if label_samples:
        _audit_into(report, label_samples, ctx)
    elif audit_masks is not None and is_multi_hot(audit_masks) and not is_one_hot(audit_masks):
        report.findings.append(Finding("ok", "labels", f"{len(audit_masks)} multi-label masks "
                                       "(0/1 per channel): no class-index audit"))
    elif audit_masks is not None:
        void = ctx.ignore_index if ctx.ignore_index is not None else (
            -1 if is_one_hot(audit_masks) else None)  # a one-hot row of zeros: unlabelled
        _audit_into(report, [(f"mask {i}", m) for i, m in enumerate(
            class_indices(audit_masks, void))], dataclasses.replace(ctx, ignore_index=void))


def diagnose(model: keras.Model, images, masks=None, *, loss=None, num_classes: int | None = None,
             ignore_index: int | None = None, class_names: list[str] | None = None,
             probes: bool = True, overfit_steps: int = 0, learning_rate: float = 1e-3,
             label_samples: list[tuple[str, np.ndarray]] | None = None,
             fixes: KerasFixes | None = None, audit_samples: int = 64) -> Report:
    """Check a Keras segmentation model, its loss and data before training.

    Args:
        model: a Keras 3 model, compiled or not.
        images, masks: numpy arrays ([N, H, W, C] images; [N, H, W], [N, H, W, 1] class
            indices or [N, H, W, C] one-hot masks), or images is a tf.data.Dataset of
            (image, mask) batches and masks is None.
        loss: the loss to check (a name, a keras.losses.Loss or a function); by default the
            one the model was compiled with.
        num_classes: by default the output's channels (2 for a single channel).
        ignore_index: a mask value that marks unlabelled pixels, if any.
        class_names: names for the messages.
        probes: run the initial-loss and gradient probes on one batch (weights are restored).
        overfit_steps: > 0: also check that so many Adam steps on one batch drive the loss down.
        learning_rate: the overfit probe's learning rate.
        label_samples: [(file name, mask)] for the label audit instead of the given masks.
        fixes: the vocabulary of the fixes (seg.fixes.KerasFixes by default).
        audit_samples: masks read by the label audit from a dataset.

    Returns:
        A Report: report.ok is False when training cannot work; print(report) explains.

    Raises:
        TypeError, ValueError: an argument that is not what it must be (the message names
            it). Beyond that diagnose never raises: what it cannot read or run is a finding.
    """
    check_arguments(model, images, masks, num_classes=num_classes, ignore_index=ignore_index,
                    class_names=class_names, overfit_steps=overfit_steps,
                    learning_rate=learning_rate, audit_samples=audit_samples,
                    label_samples=label_samples)
    loss = _first_loss(compiled_loss(model) if loss is None else loss)
    info = read_loss(loss)
    if ignore_index is None and info.ignore_class is not None:
        ignore_index = int(info.ignore_class)  # the loss itself skips that label
    report = Report(title=f"seg diagnose: model `{model.name}`, loss {info.name}")
    ran = _run_model(report, model, images, masks, audit_samples)
    if ran is None:
        return report
    x, y, audit_masks, outputs = ran
    y_pred = np.asarray(outputs[0])
    head = read_head(model, y_pred, tuple(x.shape[1:3]))
    ctx = Context(head, info, _num_classes(num_classes, head, y), ignore_index,
                  list(class_names or []), fixes or KerasFixes())
    ctx.class_names += [f"class_{k}" for k in range(len(ctx.class_names), ctx.num_classes)]
    ctx.image_max = float(np.nanmax(x)) if x.size and np.isfinite(x).any() else 0.0
    ctx.scaled_by = input_scaling(model)
    report.findings += check_readable(ctx, model)
    if len(outputs) > 1:
        report.findings.append(_multi_output(model, len(outputs)))
        if head.inferred:  # a subclassed model: which layer feeds the first output is unknown
            head.head_layer = None
    constant = check_constant(ctx, model, x)
    report.findings += constant
    shape_findings = [] if y is None else check_output_shape(ctx, model, x, y)
    report.findings += shape_findings
    if head.inferred and any(f.level == "error" for f in constant):  # the activation is unknown: nothing to judge the head by
        head_findings = []
    else:
        head_findings = check_head(ctx)
    if any(f.level == "error" for f in shape_findings):  # no "ok" beside a broken output
        head_findings = [f for f in head_findings if f.level != "ok"]
    report.findings += head_findings
    if y is not None and not shape_findings:
        report.findings += check_targets(ctx, as_image(y, head))
    _labels_into(report, label_samples, None if audit_masks is None else
                 as_image(audit_masks, head), ctx)
    report.findings += check_transposed(ctx, model)
    if probes:
        _probe_into(report, model, loss, x, y, ctx, overfit_steps=overfit_steps,
                    learning_rate=learning_rate)
    return report


def _kind(value) -> str:
    return f"{type(value).__name__} {value!r}"[:80] if isinstance(value, (str, int, float)) \
        else type(value).__name__


def _check_array(name: str, value, *, images: bool) -> int | None:
    """The number of items of an images/masks argument, or a TypeError/ValueError naming it."""
    if isinstance(value, (tf.data.Dataset, keras.utils.PyDataset)):
        return None
    if value is None or isinstance(value, (str, bytes, dict)) or callable(value):
        raise TypeError(f"`{name}` must be a numpy array or a tf.data.Dataset"
                        f"{' of (image, mask) batches' if images else ''}, got {_kind(value)}")
    try:
        array = np.asarray(value)
    except Exception as e:  # noqa: BLE001 (ragged lists and the like)
        raise ValueError(f"`{name}` cannot be read as an array: {e}") from None
    if array.dtype.kind not in "biuf":
        raise TypeError(f"`{name}` must hold numbers, got an array of "
                        f"{array.dtype}")
    if array.size == 0:
        raise ValueError(f"`{name}` is empty (shape {array.shape})")
    if array.ndim < 2:
        raise ValueError(f"`{name}` of shape {array.shape} is not "
                         f"{'an image' if images else 'a mask'}: give [N, H, W"
                         f"{', C' if images else ''}] arrays")
    return len(array) if array.ndim >= (4 if images else 3) else 1


def check_data(images, masks):
    """TypeError/ValueError naming `images` or `masks` where they cannot be what diagnose
    reads (diagnose reports it as an "inputs" error)."""
    if masks is not None and isinstance(images, (tf.data.Dataset, keras.utils.PyDataset)):
        raise ValueError("give `masks` with arrays only; a dataset already holds (image, mask) "
                         "pairs")
    n_images = _check_array("images", images, images=True)
    if masks is not None:
        n_masks = _check_array("masks", masks, images=False)
        if n_images is not None and n_masks is not None and n_images != n_masks and \
                np.ndim(images) == 4:
            raise ValueError(f"{n_images} `images` but {n_masks} `masks`: give one mask per "
                             "image")


def check_arguments(model, images, masks, *, num_classes, ignore_index, class_names,
                    overfit_steps, learning_rate, audit_samples, label_samples):
    """TypeError/ValueError naming the first argument of diagnose() that is not what it
    must be."""
    if not isinstance(model, keras.Model):
        raise TypeError(f"seg.diagnose: `model` must be a Keras 3 model (keras.Model, "
                        f"Sequential, functional or subclassed), got {_kind(model)}")
    for name, value, low in (("num_classes", num_classes, 1), ("audit_samples", audit_samples, 1),
                             ("overfit_steps", overfit_steps, 0)):
        if value is None and name == "num_classes":
            continue
        if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < low:
            raise ValueError(f"seg.diagnose: `{name}` must be an integer >= {low}, got "
                             f"{_kind(value)}")
    if ignore_index is not None and (isinstance(ignore_index, bool)
                                     or not isinstance(ignore_index, (int, np.integer))):
        raise ValueError(f"seg.diagnose: `ignore_index` must be an integer mask value or None, "
                         f"got {_kind(ignore_index)}")
    if class_names is not None and (isinstance(class_names, str) or not all(
            isinstance(c, str) for c in class_names)):
        raise TypeError(f"seg.diagnose: `class_names` must be a list of strings, got "
                        f"{_kind(class_names)}")
    if isinstance(learning_rate, bool) or not isinstance(learning_rate, (int, float)) or \
            not math.isfinite(learning_rate) or learning_rate <= 0:
        raise ValueError(f"seg.diagnose: `learning_rate` must be a number > 0, got "
                         f"{_kind(learning_rate)}")
    if label_samples is not None and (isinstance(label_samples, (str, np.ndarray)) or not all(
            isinstance(p, (tuple, list)) and len(p) == 2 for p in label_samples)):
        raise TypeError("seg.diagnose: `label_samples` must be a list of (file name, mask) "
                        "pairs")


def _probe_into(report: Report, model, loss, x, y, ctx: Context, **kwargs):
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


def _moves_nothing(found: Finding) -> Finding:
    """The gradient probe's all-clear beside an output that no weight can change."""
    return Finding("warning", "gradients", found.title.replace("every layer receives",
                                                               "the loss sends"),
                   "the loss's gradient reaches the weights, but the output is the same "
                   "whatever they are: training changes the weights and never the prediction",
                   "see the constant-output finding")


def _audit_into(report: Report, samples, ctx: Context):
    label_findings, hist = audit_labels(samples, ctx)
    report.findings += label_findings
    if hist.sum():
        share = hist / hist.sum()
        report.tables["class histogram (sampled masks)"] = "\n".join(
            f"  {k} {ctx.class_names[k]:<16} {100 * share[k]:6.2f}%" for k in range(ctx.num_classes))


def first_output(y_pred):
    """The first of a model's outputs, in the order of model.outputs (dicts by sorted key)."""
    return keras.tree.flatten(y_pred)[0]


def _non_finite_images(images) -> list[int]:
    """Indices of float images with NaN/Inf, for arrays (a dataset is checked on its batch)."""
    if isinstance(images, (tf.data.Dataset, keras.utils.PyDataset)):
        return []
    x = np.asarray(images)
    if x.dtype.kind != "f" or x.ndim < 3:
        return []
    return [int(i) for i in np.flatnonzero(~np.isfinite(x.reshape(len(x), -1)).all(axis=1))]


def _first_loss(loss):
    """The loss of the first output, for a loss given per output (a list or a dict)."""
    if isinstance(loss, dict) or type(loss).__name__ == "_DictWrapper":
        return dict(loss)[sorted(loss)[0]] if len(loss) else None
    if isinstance(loss, (list, tuple)) or type(loss).__name__ == "ListWrapper":
        return loss[0] if len(loss) else None
    return loss


def _read_data(images, masks, limit: int, input_shape=None):
    """(probe images, probe masks or None, masks for the label audit or None) as numpy."""
    if isinstance(images, tf.data.Dataset):
        xs, ys = [], []
        for element in images:
            if not isinstance(element, (tuple, list)) or len(element) < 2:
                raise ValueError("the dataset's elements must be (image, mask) pairs")
            x, y = np.asarray(element[0]), np.asarray(element[1])
            if x.ndim == 3:  # an unbatched dataset: one image per element
                x, y = x[None], y[None]
            xs.append(x)
            ys.append(y)
            if sum(len(b) for b in ys) >= limit:
                break
        if not xs:
            raise ValueError("the dataset is empty")
        same = all(b.shape[1:] == ys[0].shape[1:] for b in ys)
        x_probe = np.concatenate([b for b in xs if b.shape[1:] == xs[0].shape[1:]])[:PROBE_BATCH]
        y_probe = np.concatenate([b for b in ys if b.shape[1:] == ys[0].shape[1:]])[:PROBE_BATCH]
        audit = np.concatenate(ys) if same else y_probe
        return x_probe, y_probe, audit
    if isinstance(images, keras.utils.PyDataset):
        images, masks = images[0][:2]
    x = np.asarray(images)
    channels = input_shape[-1] if isinstance(input_shape, tuple) and len(input_shape) == 4 \
        else None
    if x.ndim == 3 and channels == 1 and x.shape[-1] != 1:  # grayscale [N, H, W]
        x = x[..., None]
    elif x.ndim == 3:  # one image [H, W, C] and its mask
        x = x[None]
        masks = None if masks is None else np.asarray(masks)[None]
    elif x.ndim == 2:  # one grayscale image [H, W]
        x = x[None, ..., None]
        masks = None if masks is None else np.asarray(masks)[None]
    if x.ndim != 4:
        raise ValueError(f"images of shape {x.shape}: expected [N, H, W, C]")
    if masks is None:
        return x[:PROBE_BATCH], None, None
    y = np.asarray(masks)
    if len(y) != len(x):
        raise ValueError(f"{len(x)} images but {len(y)} masks")
    return x[:PROBE_BATCH], y[:PROBE_BATCH], y[:limit]


def _num_classes(given: int | None, head: Head, masks) -> int:
    if given:
        return max(int(given), 2)  # num_classes=1 for a binary task means 2 classes
    if head.channels and head.channels > 1:
        return head.channels
    if head.channels is None and masks is not None and is_one_hot(masks):
        return int(np.shape(masks)[-1])
    return 2


# --- what could not be read ------------------------------------------------------------

def check_readable(ctx: Context, model) -> list[Finding]:
    """Warnings for what the checks had to guess: a subclassed model, a custom loss."""
    out = []
    if ctx.head.inferred:
        seen = ("softmax probabilities" if ctx.head.activation == "softmax" else
                "probabilities in [0, 1]" if ctx.head.activation else
                f"a constant ({ctx.head.constant:g} everywhere), which says nothing of its "
                "activation" if ctx.head.constant is not None else "logits")
        out.append(Finding("warning", "model", f"{ctx.head.note or 'the activation could not be read'}"
                           f"; the output looks like {seen}",
                           "the head/loss checks use that guess",
                           "build the model with the functional API (keras.Model(inputs, "
                           "outputs)) so every layer can be followed"))
    if ctx.loss.family in ("unknown", "none"):
        out.append(Finding("warning", "loss", ctx.loss.note or f"the loss {ctx.loss.name} "
                           "cannot be read",
                           "the head/loss and from_logits checks cannot judge it; the probes "
                           "still measure its value and gradient" if ctx.loss.family != "none"
                           else "without a loss only the model and the masks are checked",
                           "pass loss= (a Keras loss name or object) to check it"))
    return out


# --- an output that does not depend on the input ----------------------------------------

def _output_gradient(model, x) -> float:
    """The norm of the gradient of a random projection of the output with respect to every
    trainable weight: 0 when no weight can change the output (an activation over one
    channel, a saturated one), > 0 for a head that starts at zero but can learn."""
    with tf.GradientTape() as tape, warnings.catch_warnings():
        warnings.simplefilter("ignore")
        out = tf.cast(first_output(model(x, training=False)), tf.float32)
        weights = tf.random.stateless_normal(tf.shape(out), seed=(7, 11))
        value = tf.reduce_sum(out * weights)
    grads = tape.gradient(value, model.trainable_variables)
    return math.sqrt(sum(float(tf.reduce_sum(tf.square(tf.cast(g, tf.float32))))
                         for g in grads if g is not None))


def check_constant(ctx: Context, model, x) -> list[Finding]:
    """The yellow image measured, whatever produced it: an output that is one value for every
    pixel of several different images and that no weight can move."""
    head = ctx.head
    if head.constant is None or len(x) < 2 or float(np.ptp(x, axis=0).max()) == 0:
        return []  # one image, or identical images: a constant output proves nothing
    try:
        gradient = _output_gradient(model, x)
    except Exception:  # noqa: BLE001 (a model tf cannot differentiate: judge by value alone)
        gradient = 0.0
    value = head.constant
    if gradient > 1e-12:
        return [Finding("ok", "constant output", f"the output starts at {value:g} everywhere "
                        f"(a zero-initialised head), and its gradient ({gradient:.2g}) lets "
                        "training move it")]
    one = value == 1.0 and (head.channels or 1) == 1
    title = (f"the output is {value:g} for every pixel of all {len(x)} images, whatever the "
             "input" + (" (what a softmax over one channel gives)" if one else ""))
    why = ("a network whose output is the same for every image cannot segment: this is the "
           "'yellow image' before training, and no weight can change it (the gradient of the "
           "output with respect to every weight is 0)")
    if one:
        why += ("; softmax normalises over the channels, and over one channel it is "
                "exp(z)/exp(z) = 1 for every pixel")
        fix = ctx.fixes.softmax_one_channel(ctx)
    else:
        scale = (f"; the images go up to {ctx.image_max:g}: scale them to [0, 1]"
                 if ctx.image_max > 2 and not ctx.scaled_by else "")
        fix = ("find the layer after which the output stops depending on the input: an "
               "activation over a single channel, an activation that saturates, a "
               f"multiplication by zero{scale}")
    return [Finding("error", "constant output", title, why, fix)]


def check_whole_numbers(ctx: Context, masks) -> list[Finding]:
    """Class-index masks holding values that are not whole numbers (masks resized with
    bilinear interpolation): named, never rounded."""
    m = np.asarray(masks)
    if m.dtype.kind != "f" or (m.ndim == 4 and m.shape[-1] > 1):  # one-hot, soft labels
        return []
    bad, values = non_integer(m)
    if not bad:
        return []
    finite = m[np.isfinite(m)]
    soft = ctx.loss.family == "binary" and finite.min() >= 0 and finite.max() <= 1
    share = 100 * bad / m.size
    return [Finding(
        "warning" if soft else "error", "labels",
        f"{bad} mask pixels ({share:.1f}%) are not whole numbers (values such as "
        f"{', '.join(f'{v:g}' for v in values)})",
        ("binary cross-entropy takes them as soft targets, which is right only if they are "
         "meant as probabilities; masks resized with bilinear interpolation get them at every "
         "edge" if soft else
         "class indices must be integers: Keras' sparse losses truncate them (1.75 trains as "
         "class 1, 0.5 as class 0), so every object edge gets a wrong label; such values come "
         "from masks resized with bilinear interpolation"),
        "resize masks with nearest-neighbour interpolation (tf.image.resize(masks, size, "
        "method='nearest'), PIL's Image.NEAREST, cv2.INTER_NEAREST) and cast them to integers")]


# --- output against masks ----------------------------------------------------------------

def _hw(shape) -> str:
    return "x".join(str(d) for d in shape)


def check_output_shape(ctx: Context, model, x, masks) -> list[Finding]:
    """The output's spatial size against the masks', and whether it keeps a class axis."""
    head, loss = ctx.head, ctx.loss
    shape, mask_shape = head.shape, tuple(np.shape(masks))
    if head.layout == "pixels":
        return _pixels_shape(ctx, mask_shape)
    if len(shape) > 4:
        return [Finding("warning", "output size", f"an output of rank {len(shape)} "
                        f"{shape[1:]}: a layout seg cannot read, so its class axis and size are "
                        "not checked", "seg reads [batch, height, width, classes] and [batch, "
                        "height x width, classes]", "check the output against the masks by hand")]
    if len(shape) < 3:
        return [Finding("error", "output size", f"the output {shape[1:]} is not an image",
                        "a segmentation model predicts every pixel: [batch, height, width, "
                        "classes]", "remove the Flatten/Dense at the end; end in a 1x1 Conv2D")]
    target = mask_shape[1:3]
    if shape[1:3] != target:
        if len(shape) == 4 and shape[2:4] == target:
            return [Finding(
                "error", "class axis", f"the output {shape[1:]} has its {shape[1]} channels "
                "first (channels_first), the masks are "
                f"{_hw(target)}", f"Keras' losses take the last axis as the classes: "
                f"{loss.name} would compare rows with classes", "keep channels last (data_format="
                "'channels_last', the default) or Permute((2, 3, 1)) at the end")]
        return [_size_finding(ctx, model, x, shape[1:3], target)]
    out = []
    if len(shape) == 3 and (loss.normalises or head.activation == "softmax"):
        what = loss.name if loss.normalises else "softmax"
        width = shape[-1]
        by = head.dropped_by
        if by:
            where = "the last layer" if head.after_head[:1] == [by] else "the layer"
            title = f"{where} `{by}` drops the channel axis: {what} now normalises over the " \
                    f"width ({width} values)"
        else:
            title = (f"the output {shape[1:]} has no channel axis: {what} normalises over the "
                     f"width ({width} values)")
        channels = head.dropped_channels or 1
        keep = f"remove `{by}` so the output keeps its channel axis ({_hw(shape[1:])}x" \
               f"{channels})" if by else "keep a channel axis at the end of the model"
        then = ("and train the one sigmoid channel with loss='binary_crossentropy'"
                if channels == 1 else "and use keras.losses.SparseCategoricalCrossentropy("
                "from_logits=True) with integer masks (no activation at the end)")
        out.append(Finding(
            "error", "class axis", title,
            f"Keras' cross-entropies and softmax take the last axis as the classes. Without a "
            f"channel axis the last axis is the image's width, so the {width} pixels of each row "
            f"compete as if they were {width} classes: the loss is not a per-pixel loss, and it "
            "says nothing about the class of each pixel",
            f"{keep} {then}"))
    elif len(shape) == 4 and head.activation == "softmax" and head.softmax_axis not in (-1, 3):
        axis = {1: "height", 2: "width", 0: "batch"}.get(head.softmax_axis % 4, "?")
        out.append(Finding(
            "error", "class axis", f"softmax over axis {head.softmax_axis} ({axis}) in "
            f"{head.where}", f"the probabilities must sum to 1 over the classes (the last axis); "
            f"over the {axis} every pixel competes with its neighbours",
            f"Softmax(axis=-1) in {head.where}"))
    return out


def _pixels_shape(ctx: Context, mask_shape: tuple) -> list[Finding]:
    """A [B, H*W, C] output (pixels x classes): the masks must have the same layout."""
    head = ctx.head
    pixels, channels = head.shape[1], head.shape[-1]
    h, w = head.image_hw
    if len(mask_shape) >= 2 and mask_shape[1] == pixels:
        return []
    by = f"`{head.folded_by}` " if getattr(head, "folded_by", None) else ""
    if len(mask_shape) >= 3 and mask_shape[1] * mask_shape[2] == pixels:
        one_hot = ctx.loss.targets == "one_hot"
        return [Finding(
            "error", "targets", f"the output is pixels x classes {head.shape[1:]} ({by}flattens "
            f"{h}x{w}), the masks are images {mask_shape[1:]}",
            "the loss compares the masks with the output element by element; they must have "
            "its layout", "reshape the masks to the model's layout: "
            + (f"keras.utils.to_categorical(masks, {channels}).reshape(len(masks), {pixels}, "
               f"{channels})" if one_hot else f"masks.reshape(len(masks), {pixels})"))]
    return [Finding("error", "output size", f"the output has {pixels} pixels ({h}x{w}), the "
                    f"masks {mask_shape[1:]}", "a per-pixel loss needs one prediction for every "
                    "mask pixel", f"give masks of shape [N, {pixels}, {channels}] (one-hot) or "
                    f"[N, {pixels}] (class indices)")]


def _size_finding(ctx, model, x, got, want) -> Finding:
    changes = size_changes(model, x)
    listed = ", ".join(f"`{name}` {_hw(a)} -> {_hw(b)}" for name, a, b in changes)
    ratio = [g / w for g, w in zip(got, want)]
    title = f"the output is {_hw(got)} but the masks are {_hw(want)}"
    exact = ratio[0] == ratio[1] and math.log2(ratio[0]).is_integer()
    if exact:
        title += f" (x{ratio[0]:g})"
    why = ("a per-pixel loss needs one prediction for every mask pixel: Keras stops with a shape "
           "error, or broadcasts the masks and learns nonsense")
    if listed:
        why += f". The size changes at: {listed}"
    if exact and ratio[0] < 1:
        n = int(-math.log2(ratio[0]))
        fix = (f"add {n} more x2 up-sampling step(s) after `{changes[-1][0] if changes else 'the last up-sampling'}`"
               " (Conv2DTranspose(filters, 2, strides=2, padding='same') or UpSampling2D), so "
               "the decoder undoes every down-sampling; or resize the masks")
    elif exact:
        fix = "remove the extra up-sampling step(s), or resize the masks"
    else:
        valid = [name for name, a, b in changes if 0 < a[0] - b[0] < 8 and a[0] > b[0]]
        fix = (f"use padding='same' in {', '.join(f'`{v}`' for v in valid[:6])} (padding='valid'"
               " shrinks every convolution's output by kernel_size - 1 pixels), or crop the "
               "masks to the output" if valid else
               "make the output the masks' size (pad the input to a multiple of the total "
               "stride and crop the output back), or resize the masks")
    return Finding("error", "output size", title, why, fix)


# --- head, activation and loss ---------------------------------------------------------

def check_head(ctx: Context) -> list[Finding]:
    """Refuse heads and losses that cannot train together (the classic yellow image)."""
    head, loss, fixes = ctx.head, ctx.loss, ctx.fixes
    channels = head.channels if head.channels is not None else 1
    act, where = head.activation, head.where
    out = []
    if act is not None and act not in ("sigmoid", "softmax", "log_softmax"):
        out.append(Finding("error", "head", f"{where} ends in {act}: not a segmentation head",
                           "the head must give logits (no activation) or per-class "
                           "probabilities (sigmoid, softmax)", fixes.head_activation(ctx)))
    if channels == 1 and head.channels is not None and act == "softmax":
        out.append(Finding(
            "error", "head", f"softmax over a single output channel in {where}",
            "softmax normalises across channels; over one channel it is exp(z)/exp(z) = 1, so "
            "the prediction is exactly 1 for every pixel, whatever the input and the weights: a "
            "constant picture (the 'yellow image'). " + _softmax_one_channel_loss(loss),
            fixes.softmax_one_channel(ctx)))
    if channels == 1 and head.channels is not None and loss.normalises:
        out.append(Finding("error", "head/loss",
                           f"one output channel trained with {loss.name} ({where})",
                           _one_channel_categorical_why(loss, act),
                           fixes.one_channel_categorical(ctx)))
    if channels > 1 and act == "sigmoid" and loss.normalises:
        out.append(Finding(
            "warning", "head/loss", f"sigmoid over {channels} channels ({where}) with loss "
            f"{loss.name}", "per-channel sigmoids do not sum to 1 across classes, so a "
            "cross-entropy over classes sees unnormalised probabilities", fixes.sigmoid_many(ctx)))
    if channels > 1 and loss.family == "binary" and loss.targets == "indices":
        out.append(Finding(
            "warning", "head/loss", f"binary cross-entropy over {channels} exclusive classes",
            "binary cross-entropy scores each channel independently (multi-label); for "
            "exclusive classes the classes compete in softmax cross-entropy", fixes.bce_many(ctx)))
    takes_logits = loss.family in ("categorical", "sparse", "binary", "matched")
    if takes_logits and head.probabilities and loss.from_logits:
        out.append(Finding(
            "error", "from_logits",
            f"probabilities ({act} in {where}) fed to a loss with from_logits=true",
            f"the loss applies {'sigmoid' if channels == 1 else 'softmax'} again to values in "
            "[0, 1]; the squashed outputs differ little between classes, gradients shrink and the "
            "prediction drifts toward a constant", fixes.probabilities_to_logits_loss(ctx)))
    if takes_logits and act is None and loss.from_logits is False:
        out.append(Finding(
            "error", "from_logits", "logits fed to a loss with from_logits=false",
            f"{where} has no activation, but the loss reads its raw logits as probabilities: "
            "negative logits are clipped to 1e-7 and values above 1 to 1, so most pixels give a "
            "constant loss and no gradient", fixes.logits_to_probability_loss(ctx)))
    classes = 2 if channels == 1 else channels
    if head.channels is not None and ctx.num_classes != classes:
        out.append(Finding(
            "error", "head", f"{channels} output channel(s) in {where} for "
            f"num_classes={ctx.num_classes}",
            f"a head needs one channel per class (or one channel for two classes): labels "
            f"{classes} and above have no channel to be predicted in",
            f"give {where} {ctx.num_classes} filters, or check num_classes"))
    if loss.family == "dice" and act is None:
        out.append(Finding(
            "warning", "head/loss", f"{loss.name} on logits ({where} has no activation)",
            "Dice compares probabilities with the masks; on raw logits its value is "
            "meaningless", f"end {where} in softmax (or sigmoid) for {loss.name}"))
    if not out:
        chans = f"{head.channels} output channel(s)" if head.channels else "no channel axis"
        if loss.family == "none":
            return [Finding("ok", "head", f"{chans}, {act or 'logits'} ({where}); no loss to "
                            "check it against")]
        out.append(Finding("ok", "head/loss", f"{chans}, {act or 'logits'} ({where}), loss "
                           f"{loss.name}, from_logits={loss.from_logits}"))
    return out


def _softmax_one_channel_loss(loss: LossInfo) -> str:
    """What the loss does beside a softmax over one channel (measured in Keras 3, tests)."""
    if loss.family == "binary":
        return ("Keras' binary cross-entropy reads the logits behind the softmax, so the loss "
                "falls and the weights change, but the prediction stays 1 everywhere.")
    if loss.family == "categorical":
        return ("The loss is 0 from the first step; Keras differentiates through the logits "
                "behind the softmax, so a gradient that carries nothing of the masks moves the "
                "weights, and the prediction stays 1 everywhere.")
    if loss.family == "sparse":
        return ("Sparse cross-entropy over one channel has room for class 0 only: label 1 "
                "stops training with 'label value 1 outside the valid range' (NaN on a GPU).")
    return "Nothing the loss does can change the prediction."


def _one_channel_categorical_why(loss: LossInfo, act: str | None) -> str:
    """Why one channel under a categorical loss cannot train, as Keras 3 really behaves."""
    if loss.family == "sparse":
        return ("sparse categorical cross-entropy over one channel has room for class 0 only: "
                "label 1 is out of range, and Keras stops with 'Received a label value of 1 "
                "which is outside the valid range of [0, 1)' (on a GPU the loss is NaN). "
                "Nothing trains.")
    zero = ("categorical cross-entropy renormalises the prediction over the channels; with one "
            "channel every pixel's probability is exactly 1, so the loss is 0 whatever the "
            "network predicts and carries nothing of the masks. ")
    if act is None and loss.from_logits is False:
        return zero + ("On raw logits Keras clips and renormalises, and the gradient is 0 as "
                       "well: nothing trains, with any decoder, and the output stays at its "
                       "random start.")
    return zero + ("Keras still differentiates the cross-entropy through the logits (kept "
                   "beside the sigmoid, or given with from_logits=True): that gradient, 1 - mask "
                   "per pixel, pushes every logit down, so after a few steps the prediction is "
                   "one class everywhere (the 'yellow image'), with any decoder.")


def check_head_and_loss(*, num_classes: int, out_channels: int | None,
                        head_activation: str | None, loss: str, from_logits: bool) -> list[Finding]:
    """check_head for a configured head (seg's config keys): no model needed."""
    from seg.losses import SegmentationLoss

    channels = out_channels or num_classes
    head = Head(shape=(1, 1, 1, channels), channels=channels, activation=head_activation,
                activation_layer=f"head_{head_activation}" if head_activation else None,
                head_layer="head")
    info = read_loss(SegmentationLoss(loss, num_classes=num_classes, from_logits=from_logits))
    return check_head(Context(head, info, num_classes, fixes=ConfigFixes()))


def check_targets(ctx: Context, masks) -> list[Finding]:
    """Integer masks given to a one-hot loss and the reverse; void pixels a loss would count."""
    head, loss = ctx.head, ctx.loss
    channels = head.channels or 1
    m = np.asarray(masks)
    one_hot = is_one_hot(m)
    out = []
    if loss.targets == "one_hot" and channels > 1 and not one_hot and \
            m.shape[1:] != tuple(head.shape[1:]):  # same shape: one-hot, or label-smoothed
        out.append(Finding(
            "error", "targets", f"class-index masks {m.shape[1:]} given to {loss.name}, which "
            f"expects one-hot masks {head.shape[1:]}",
            f"{loss.name} compares the masks with the prediction channel by channel; class "
            f"indices do not line up with the {channels} channels (Keras stops with a shape "
            "error, or broadcasts the index over every channel)",
            f"use keras.losses.SparseCategoricalCrossentropy(from_logits={bool(loss.from_logits)}"
            f") with these masks, or one-hot them (keras.ops.one_hot(masks, {channels}))"))
    elif loss.targets == "indices" and one_hot and loss.kind is None:
        out.append(Finding(
            "error", "targets", f"one-hot masks {m.shape[1:]} given to {loss.name}, which "
            "expects class indices",
            f"{loss.name} reads each mask value as a class index; one-hot masks give it "
            f"{m.shape[-1]} values of 0 and 1 per pixel instead of one class",
            "use categorical_crossentropy with one-hot masks, or pass masks.argmax(-1)"))
    elif loss.targets == "same" and channels > 1 and not is_multi_hot(m) and loss.kind is None:
        out.append(Finding(
            "error", "targets", f"class-index masks {m.shape[1:]} given to {loss.name} over "
            f"{channels} channels",
            f"{loss.name} compares every channel with the mask value itself, so class 2 reads "
            "as 'probability 2' in every channel",
            f"use keras.losses.SparseCategoricalCrossentropy(from_logits=...) for {channels} "
            f"exclusive classes, or give it one-hot masks (keras.ops.one_hot(masks, {channels}))"))
    elif loss.family == "binary" and channels > 1 and one_hot and loss.kind is None:
        out.append(Finding(
            "warning", "head/loss", f"binary cross-entropy over {channels} one-hot channels",
            "binary cross-entropy scores each channel independently (multi-label); for "
            "exclusive classes the classes compete in softmax cross-entropy",
            ctx.fixes.bce_many(ctx)))
    if ctx.ignore_index is not None and loss.kind is None and loss.family != "unknown":
        ignored = int((class_indices(m) == ctx.ignore_index).sum()) if not one_hot else 0
        if ignored and not _ignores(loss, ctx.ignore_index):
            out.append(Finding(
                "warning", "targets", f"{ignored} pixels of the first batch are ignore_index="
                f"{ctx.ignore_index}, which {loss.name} does not ignore",
                "the loss reads them as a class (out of range for most), so unlabelled pixels "
                "train the network", ctx.fixes.ignore_not_ignored(ctx)))
    return out


def _ignores(loss: LossInfo, ignore_index: int) -> bool:
    return loss.ignore_class == ignore_index


# --- labels ---------------------------------------------------------------------------

def audit_labels(samples: list[tuple[str, np.ndarray]], ctx: Context
                 ) -> tuple[list[Finding], np.ndarray]:
    """Check masks (class indices) for values outside [0, num_classes) and a degenerate class
    balance. Returns the findings and the class histogram (pixel counts) of the masks."""
    num_classes, ignore_index, fixes = ctx.num_classes, ctx.ignore_index, ctx.fixes
    hist, bad, ignored, pixels, only_zero_and_ignore = _count_labels(samples, num_classes,
                                                                     ignore_index)
    out = []
    if bad:
        all_bad = sorted({v for vs in bad.values() for v in vs})
        listed = "; ".join(f"{n}: {vs}" for n, vs in list(bad.items())[:8])
        more = f" (and {len(bad) - 8} more files)" if len(bad) > 8 else ""
        fix = (fixes.label_map_255(ctx) if all_bad == [255] and num_classes == 2
               else fixes.label_map(ctx, all_bad))
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
            "picture", fixes.zero_and_ignore(ctx)))
        return out, hist
    if ignore_share > 0.5:
        out.append(Finding("warning", "labels", f"{100 * ignore_share:.1f}% of sampled pixels "
                           f"are ignore_index={ignore_index}",
                           "most of the image does not count in the loss", fixes.ignore_share(ctx)))
    if total == 0 and samples:
        out.append(Finding("error", "labels", "every sampled pixel is ignore_index",
                           "there is nothing to learn from", fixes.ignore_share(ctx)))
    elif samples and not bad:  # with out-of-range labels, the histogram says little
        out += _class_balance(hist, len(samples), ctx)
    return out, hist


def _count_labels(samples, num_classes: int, ignore_index: int | None):
    """(class histogram, {file: out-of-range values}, void pixels, pixels, files holding only
    0 and ignore_index) of class-index masks."""
    hist = np.zeros(num_classes, np.int64)
    bad: dict[str, list[int]] = {}
    ignored, pixels, only_zero_and_ignore = 0, 0, []
    for name, mask in samples:
        values, counts = np.unique(mask, return_counts=True)
        is_void = (values == ignore_index) if ignore_index is not None else np.zeros_like(values,
                                                                                           bool)
        ignored += int(counts[is_void].sum())
        pixels += mask.size
        if ignore_index is not None and set(values.tolist()) == {0, ignore_index}:
            only_zero_and_ignore.append(name)
        out_of_range = [int(v) for v, void in zip(values, is_void)
                        if not void and not 0 <= v < num_classes]
        if out_of_range:
            bad[name] = out_of_range
        for v, c, void in zip(values, counts, is_void):
            if 0 <= v < num_classes and not void:
                hist[int(v)] += c
    return hist, bad, ignored, pixels, only_zero_and_ignore


def _class_balance(hist: np.ndarray, n: int, ctx: Context) -> list[Finding]:
    """Of n sampled masks: a single class everywhere (an error), absent or rare classes, else
    the all-clear."""
    num_classes, ignore_index, fixes = ctx.num_classes, ctx.ignore_index, ctx.fixes
    names = ctx.class_names or [str(k) for k in range(num_classes)]
    present = [k for k in range(num_classes) if hist[k] > 0]
    if len(present) == 1:
        return [Finding(
            "error", "labels", f"every labelled pixel in {n} sampled masks is class "
            f"{present[0]} ({names[present[0]]})",
            "a network trained on a single class learns to output that class everywhere: a "
            "constant picture, and the IoU of every other class stays 0", fixes.single_class(ctx))]
    out = []
    absent = [names[k] for k in range(num_classes) if hist[k] == 0]
    if absent:
        out.append(Finding("warning", "labels", f"classes {absent} never appear in {n} sampled "
                           "masks", "a class that is never seen cannot be learned",
                           fixes.absent_classes(ctx)))
    share = hist / hist.sum()
    rare = [f"{names[k]} {100 * share[k]:.2f}%" for k in present if share[k] < 0.01]
    if rare:
        out.append(Finding("warning", "labels", f"rare classes: {rare}",
                           "a class under 1% of pixels is easy to predict away",
                           fixes.rare_classes(ctx)))
    void = f" or ignore_index={ignore_index}" if ignore_index is not None else ""
    return out + [Finding("ok", "labels", f"{n} masks sampled, values within "
                          f"[0, {num_classes}){void}")]


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


def check_transposed(ctx: Context, model) -> list[Finding]:
    """Warn about every transposed convolution whose kernel does not divide by its stride."""
    deconvs = [layer for layer in all_layers(model)
               if isinstance(layer, keras.layers.Conv2DTranspose)]
    if not deconvs:
        return [Finding("ok", "decoder", "no transposed convolution: no checkerboard risk from "
                        "learned upsampling")]
    uneven = [(d.name, d.kernel_size[i], d.strides[i]) for d in deconvs for i in (0, 1)
              if d.strides[i] > 1 and d.kernel_size[i] % d.strides[i]]
    uneven = list(dict.fromkeys(uneven))
    if uneven:
        listed = ", ".join(f"`{n}` (kernel {k}, stride {s})" for n, k, s in uneven[:6])
        k, s = uneven[0][1], uneven[0][2]
        return [Finding(
            "warning", "decoder",
            f"transposed convolution with kernel_size={k} and stride {s}: {listed}",
            f"{k} is not a multiple of {s}: output pixels receive unequal numbers of kernel taps "
            "(uneven overlap), which prints a checkerboard pattern into the prediction (Odena et "
            "al., 2016)", ctx.fixes.checkerboard(ctx, uneven))]
    return [Finding("ok", "decoder", f"{len(deconvs)} transposed convolution(s), every kernel a "
                    "multiple of its stride (even overlap)")]


def check_encoder(*, encoder: str, encoder_weights, freeze_encoder: bool,
                  unfreeze_after: int | None, notes=()) -> list[Finding]:
    """Warn about a frozen encoder that was never trained (its features are noise); say what
    the encoder is and what was adapted to the data (`notes`, from build_model)."""
    found = [Finding("ok", "encoder", note) for note in notes]
    if encoder != "unet" and freeze_encoder and encoder_weights is None and not unfreeze_after:
        named = "pretrained" if encoder.startswith("hub:") else "imagenet"
        found.append(Finding(
            "warning", "encoder", f"frozen {encoder} encoder with random weights",
            "a frozen encoder that was never trained passes noise to the decoder for the whole "
            f"run", f"model.encoder_weights={named} (or a weights file), "
            "model.freeze_encoder=false, or trainer.unfreeze_encoder_after=N"))
    return found


# --- probes on one batch ---------------------------------------------------------------

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
        pred = first_output(model(x, training=True))
        value = loss_fn(y, pred)
    ce_part = None
    if getattr(loss, "kind", None) in ("ce", "ce_dice", "ce_lovasz"):  # starts at ln(C)
        ce_part = float(type(loss).from_config({**loss.get_config(), "kind": "ce"})(y, pred))
    grads = tape.gradient(value, model.trainable_variables)
    norms: dict[str, float] = {}
    for var, g in zip(model.trainable_variables, grads):
        layer = layer_of(var, model)
        norms[layer] = norms.get(layer, 0.0) + (0.0 if g is None else float(tf.norm(g)) ** 2)
    return float(value), ce_part, {k: math.sqrt(v) for k, v in norms.items()}


def probe(model, loss, x, y, ctx: Context, *, compare_initial: bool = True,
          overfit_steps: int = 0, learning_rate: float = 1e-3) -> tuple[list[Finding], str, dict]:
    """Initial loss against its expected value, gradient norms per layer, optional overfit.

    Weights (and batch-norm statistics) are restored afterwards.
    """
    info, head = ctx.loss, ctx.head
    loss_fn = _loss_callable(loss, info)
    saved = model.get_weights()
    out = []
    try:
        loss0, ce0, norms = _layer_gradients(model, loss_fn, x, y, loss)
        channels = head.channels or 1
        classes = 2 if channels == 1 or info.family == "binary" else channels
        expected = math.log(classes)
        figures = {"initial_loss": loss0, "expected_initial_loss": expected}
        if ce0 is not None:
            figures["initial_cross_entropy"] = ce0
        zero_is_wrong = (info.family in ("categorical", "sparse", "binary")
                         or info.kind in ("ce", "focal", "ce_dice", "ce_lovasz"))
        if not math.isfinite(loss0):
            out.append(Finding("error", "initial loss", f"the loss is {loss0} before training",
                               "a non-finite loss at initialisation means broken inputs or "
                               "labels", "check the images for NaN/Inf and the masks' values "
                               "against the loss"))
        elif compare_initial and zero_is_wrong:
            if loss0 < 0.05 * expected:
                out.append(Finding(
                    "error", "initial loss",
                    f"initial loss {loss0:.3g}, expected about ln({classes}) = {expected:.3f}",
                    "the loss is already (near) zero before any training: it does not depend on "
                    "the prediction, so there is nothing to learn from",
                    "see the head/loss check: match the loss to the head"))
            else:
                ce = ce0 if ce0 is not None else loss0
                what = "cross-entropy" if ce0 is not None else "loss"
                total = f", {loss0:.3f} with Dice" if ce0 is not None and loss0 != ce0 else ""
                focal = "focal" in info.name.lower() or info.kind == "focal"  # scaled down
                comparable = (ce0 is not None or info.normalises or info.family == "binary") \
                    and not focal
                if comparable and abs(ce - expected) > 0.5 * expected:
                    out.append(Finding(
                        "warning", "initial loss", f"initial {what} {ce:.3f}, expected about "
                        f"{expected:.3f} for an untrained {channels}-channel head",
                        "an untrained head should give every class about the same probability; "
                        "a far-off initial loss points at label or activation problems",
                        f"the images go up to {ctx.image_max:g}: scale them to [0, 1] (images "
                        "/ 255) or standardise them" if ctx.image_max > 2 and not ctx.scaled_by
                        else "check the label audit and the head/loss check"))
                elif comparable:
                    out.append(Finding("ok", "initial loss", f"{what} {ce:.3f} (expected about "
                                       f"ln({classes}) = {expected:.3f}){total}"))
                else:
                    out.append(Finding("ok", "initial loss", f"{what} {ce:.3f} at "
                                       f"initialisation (not compared with ln({classes}): "
                                       f"{info.name} is not a plain cross-entropy)"))
        gradients = _gradient_findings(norms, ctx, figures)
        if out and out[-1].check == "initial loss" and out[-1].level == "error" and \
                gradients[0].level == "ok":  # a gradient of a loss that is 0 everywhere
            gradients = [Finding(
                "warning", "gradients", f"the loss is {loss0:.2g}, yet a gradient reaches the "
                f"head `{ctx.head.head_layer}` (norm {figures['head_gradient_norm']:.2g})",
                "it does not come from the masks: Keras differentiates the one-channel "
                "cross-entropy through the activation's logits, where the gradient of a constant "
                "loss is not zero; it pushes every pixel towards one class",
                "see the head/loss findings")]
        out += gradients
        table = _gradient_table(norms)
        if overfit_steps:
            out.append(_overfit(model, loss_fn, x, y, overfit_steps, learning_rate, loss0,
                                figures, ctx))
    finally:
        model.set_weights(saved)
    return out, "gradient norm per layer or block (one batch, at initialisation)\n" + table, figures


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


# --- the collapse monitors' arithmetic --------------------------------------------------

def output_stats(probs: np.ndarray, truth: np.ndarray, *, num_classes: int,
                 ignore_index: int | None) -> dict:
    """What the network predicts on labelled pixels: shares, spread and entropy.

    Returns majority_share (pixels in the most-predicted class), pred_share and true_share
    per class, spread (largest std over pixels of any class probability: ~0 for a flat output)
    and entropy (mean per-pixel entropy divided by ln K: 1 means no preference).
    """
    valid = (truth >= 0) & (truth < num_classes)
    if ignore_index is not None:
        valid &= truth != ignore_index
    p = probs[valid]  # [N, K]
    if not len(p) or not np.isfinite(p).all():
        return {"finite": bool(np.isfinite(p).all()), "majority_share": float("nan"),
                "pred_share": [float("nan")] * num_classes,
                "true_share": [float("nan")] * num_classes, "spread": float("nan"),
                "entropy": float("nan")}
    pred = p.argmax(axis=-1)
    pred_share = np.bincount(pred, minlength=num_classes)[:num_classes] / len(pred)
    true_share = np.bincount(truth[valid], minlength=num_classes)[:num_classes] / len(pred)
    k = p.shape[-1]
    entropy = -(p * np.log(np.clip(p, 1e-12, 1))).sum(-1).mean() / math.log(k)
    return {"finite": True, "majority_share": float(pred_share.max()),
            "pred_share": pred_share.tolist(), "true_share": true_share.tolist(),
            "spread": float(p.std(axis=0).max()), "entropy": float(entropy)}


def alarms_for(stats: dict, *, class_names: list[str], constant_share: float,
               constant_spread: float, vanished_share: float, final: bool = True,
               seen: set[int] | frozenset = frozenset()) -> list[str]:
    """Alarm messages for collapsed outputs: non-finite, constant output, class vanished.

    A class counts as vanished when it is predicted on under `vanished_share` of its true share
    and either it was predicted before (in `seen`: the network lost it) or training is over
    (`final`: it never learned it). A class not learned yet in the middle of training is not
    a collapse.
    """
    if not stats["finite"]:
        return ["non-finite output: the network predicts NaN/Inf (diverged; lower the learning "
                "rate)"]
    out = []
    major = int(np.argmax(stats["pred_share"]))
    # one class nearly everywhere is a collapse only where the masks are not like that too
    # (a perfect model on 99% background predicts 99% background)
    one_class = (stats["majority_share"] >= constant_share
                 and stats["true_share"][major] < constant_share)
    if one_class or stats["spread"] < constant_spread:
        out.append(f"constant output: {100 * stats['majority_share']:.1f}% of pixels predicted "
                   f"as {class_names[major]}, probabilities vary by {stats['spread']:.3f} "
                   "across the image (the 'yellow image')")
    for k, name in enumerate(class_names):
        true, pred = stats["true_share"][k], stats["pred_share"][k]
        if true > 0.005 and pred < vanished_share * true and (final or k in seen):
            out.append(f"class vanished: {name} is {100 * true:.1f}% of true pixels but "
                       f"{100 * pred:.2f}% of predicted ones"
                       + (" (it was predicted before)" if k in seen else ""))
    return out


