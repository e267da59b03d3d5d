"""Checks of the masks: their layout against the loss, their values against the classes (out
of range, not whole numbers, 0/255, void) and the class balance."""

from __future__ import annotations

import dataclasses
from typing import TYPE_CHECKING

import numpy as np

from seg.diagnostics.reading import LossInfo, class_indices, is_multi_hot, is_one_hot, non_integer
from seg.diagnostics.report import Finding, Report

if TYPE_CHECKING:
    from seg.diagnostics.model import Context


def labels_into(report: Report, label_samples, audit_masks, ctx: Context):
    """The label audit: of the given samples, else of the data's masks (class indices,
    one-hot with unlabelled rows of zeros; multi-label masks have none)."""
    whole = check_whole_numbers(ctx, audit_masks) if audit_masks is not None else []
    report.findings += whole
    if any(f.level == "error" for f in whole) and not label_samples:
        return  # a histogram of truncated values would invent classes
    if label_samples:
        audit_into(report, label_samples, ctx)
    elif audit_masks is not None and is_multi_hot(audit_masks) and not is_one_hot(audit_masks):
        report.findings.append(Finding("ok", "labels", f"{len(audit_masks)} multi-label masks "
                                       "(0/1 per channel): no class-index audit"))
    elif audit_masks is not None:
        void = ctx.ignore_index if ctx.ignore_index is not None else (
            -1 if is_one_hot(audit_masks) else None)  # a one-hot row of zeros: unlabelled
        audit_into(report, [(f"mask {i}", m) for i, m in enumerate(
            class_indices(audit_masks, void))], dataclasses.replace(ctx, ignore_index=void))


def audit_into(report: Report, samples, ctx: Context):
    label_findings, hist = audit_labels(samples, ctx)
    report.findings += label_findings
    if hist.sum():
        share = hist / hist.sum()
        report.tables["class histogram (sampled masks)"] = "\n".join(
            f"  {k} {ctx.class_names[k]:<16} {100 * share[k]:6.2f}%"
            for k in range(ctx.num_classes))


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


def check_targets(ctx: Context, masks) -> list[Finding]:
    """Integer masks given to a one-hot loss and the reverse; void pixels a loss would count."""
    head, loss = ctx.head, ctx.loss
    channels = head.channels or 1
    m = np.asarray(masks)
    one_hot = is_one_hot(m)
    out = []
    if is_multi_hot(m) and channels > 1 and m.shape[-1] != channels and \
            loss.targets in ("one_hot", "same"):
        return [Finding(
            "error", "targets", f"one-hot masks with {m.shape[-1]} channels for an output of "
            f"{channels} channels ({loss.name})",
            f"{loss.name} compares the masks with the prediction channel by channel: Keras stops "
            "with 'Incompatible shapes', or a class has no channel to be predicted in",
            f"map the mask values to 0..{channels - 1} and one-hot them with {channels} classes "
            f"(keras.utils.to_categorical(masks, {channels})), or give the head "
            f"{m.shape[-1]} filters")]
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
    if only_zero_and_ignore and len(only_zero_and_ignore) * 2 >= len(samples) and \
            ignore_share > 0.05:
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
        out_of_range = [int(v) for v, void in zip(values, is_void, strict=False)
                        if not void and not 0 <= v < num_classes]
        if out_of_range:
            bad[name] = out_of_range
        for v, c, void in zip(values, counts, is_void, strict=False):
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
