"""diagnose(model, images, masks): every check and probe on any Keras model, its loss and data.

It reads the arguments (naming any that is not what it must be), runs the model once, reads
its head and loss (seg.diagnostics.reading), then runs the model, label and probe checks and
returns their Report. seg's pipeline calls the same function on the model and loss it built,
with the fixes in config keys (seg.diagnostics.fixes.ConfigFixes).
"""

from __future__ import annotations

import math
import warnings

import keras
import numpy as np
import tensorflow as tf

from seg.diagnostics.fixes import KerasFixes
from seg.diagnostics.labels import check_targets, labels_into
from seg.diagnostics.model import (
    Context,
    check_constant,
    check_head,
    check_output_shape,
    check_readable,
    check_transposed,
)
from seg.diagnostics.probes import probe_into
from seg.diagnostics.reading import (
    Head,
    as_image,
    compiled_loss,
    input_scaling,
    is_one_hot,
    read_head,
    read_loss,
)
from seg.diagnostics.report import Finding, Report

PROBE_BATCH = 8  # images the probes forward and backward


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


def _context(model, head: Head, info, x, y, *, num_classes, ignore_index, class_names,
             fixes) -> Context:
    """What every check knows: the head, the loss, the classes and their names, how far the
    images go and whether the model scales them itself."""
    ctx = Context(head, info, _num_classes(num_classes, head, y), ignore_index,
                  list(class_names or []), fixes or KerasFixes())
    ctx.class_names += [f"class_{k}" for k in range(len(ctx.class_names), ctx.num_classes)]
    ctx.image_max = float(np.nanmax(x)) if x.size and np.isfinite(x).any() else 0.0
    ctx.scaled_by = input_scaling(model)
    return ctx


def _output_checks(ctx: Context, model, x, y) -> list[Finding]:
    """The output against the input (constant?), the masks (size, class axis, targets) and
    the loss (the head), each judged only where what it stands on holds."""
    constant = check_constant(ctx, model, x)
    shape = [] if y is None else check_output_shape(ctx, model, x, y)
    if ctx.head.inferred and any(f.level == "error" for f in constant):
        head = []  # the activation is unknown: nothing to judge the head by
    else:
        head = check_head(ctx)
    if any(f.level == "error" for f in shape):  # no "ok" beside a broken output
        head = [f for f in head if f.level != "ok"]
    targets = check_targets(ctx, as_image(y, ctx.head)) if y is not None and not shape else []
    return constant + shape + head + targets


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
        fixes: the vocabulary of the fixes (seg.diagnostics.fixes.KerasFixes by default).
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
    head = read_head(model, np.asarray(outputs[0]), tuple(x.shape[1:3]))
    ctx = _context(model, head, info, x, y, num_classes=num_classes, ignore_index=ignore_index,
                   class_names=class_names, fixes=fixes)
    report.findings += check_readable(ctx, model)
    if len(outputs) > 1:
        report.findings.append(_multi_output(model, len(outputs)))
        if head.inferred:  # a subclassed model: which layer feeds the first output is unknown
            head.head_layer = None
    report.findings += _output_checks(ctx, model, x, y)
    labels_into(report, label_samples, None if audit_masks is None else
                 as_image(audit_masks, head), ctx)
    report.findings += check_transposed(ctx, model)
    if probes:
        probe_into(report, model, loss, x, y, ctx, overfit_steps=overfit_steps,
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
        if np.ndim(images) == 4 and n_masks is not None:
            n_masks = len(masks)  # a batch of images: masks of any layout, one per image
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
    if len(head.shape) == 2 and head.shape[-1] > 1:  # [B, C]: not an image, but C classes
        return int(head.shape[-1])
    return 2
