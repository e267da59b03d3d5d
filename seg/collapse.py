"""What counts as a collapse: what the network predicts on labelled pixels (shares, spread,
entropy), and the typed alarms that a flat, one-class or non-finite output raises."""

from __future__ import annotations

import math

import numpy as np


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


class Alarm(str):
    """An alarm: its text (it is a str), with typed fields that every reader uses (the console,
    TensorBoard, metrics.json, the panels' banner), so that none parses the text.

    kind: one of KINDS. finding: the text without its explanation (a banner, a last line).
    fix: what to change. epoch: the epoch (from 1) that raised it, 0 before one did.
    """

    kind: str
    finding: str
    fix: str
    epoch: int

    def __new__(cls, message: str, *, kind: str, finding: str = "", fix: str = "",
                epoch: int = 0):
        alarm = super().__new__(cls, message)
        alarm.kind, alarm.finding, alarm.fix, alarm.epoch = kind, finding or message, fix, epoch
        return alarm

    def at(self, epoch: int) -> Alarm:
        return Alarm(str(self), kind=self.kind, finding=self.finding, fix=self.fix, epoch=epoch)

    def record(self) -> dict:
        """The alarm as metrics.json and the resume state keep it."""
        return {"epoch": self.epoch, "alarm": str(self), "kind": self.kind,
                "finding": self.finding, "fix": self.fix}

    @classmethod
    def from_record(cls, record) -> Alarm:
        """An alarm read back from a record. A plain message (metrics.json and resume states
        written before alarms had kinds) is read by the words it starts with."""
        if isinstance(record, str):
            kind = next((k for k in KINDS if record.startswith(k.replace("_", " ").replace(
                "non finite", "non-finite"))), "")
            return cls(record, kind=kind, finding=record.split(" (")[0])
        return cls(record["alarm"], kind=record.get("kind", ""),
                   finding=record.get("finding", ""), fix=record.get("fix", ""),
                   epoch=int(record.get("epoch", 0)))


KINDS = ("non_finite", "constant_output", "constant_loss", "class_vanished")
COLLAPSE = ("non_finite", "constant_output", "constant_loss")  # the output has collapsed
YELLOW = " (the 'yellow image')"


def collapse_of(alarms) -> Alarm | None:
    """The first alarm that says the output collapsed (non-finite, constant output, constant
    loss, in that order), or None."""
    return next((a for kind in COLLAPSE for a in alarms if a.kind == kind), None)


def alarms_for(stats: dict, *, class_names: list[str], constant_share: float,
               constant_spread: float, vanished_share: float, final: bool = True,
               seen: set[int] | frozenset = frozenset()) -> list[Alarm]:
    """Alarms for collapsed outputs: non-finite, constant output, class vanished.

    A class counts as vanished when it is predicted on under `vanished_share` of its true share
    and either it was predicted before (in `seen`: the network lost it) or training is over
    (`final`: it never learned it). A class not learned yet in the middle of training is not
    a collapse.
    """
    if not stats["finite"]:
        finding = "non-finite output: the network predicts NaN/Inf"
        return [Alarm(f"{finding} (diverged; lower the learning rate)", kind="non_finite",
                      finding=finding, fix="lower the learning rate (10x); check the images "
                      "for NaN/Inf")]
    out = []
    major = int(np.argmax(stats["pred_share"]))
    # one class nearly everywhere is a collapse only where the masks are not like that too
    # (a perfect model on 99% background predicts 99% background)
    one_class = (stats["majority_share"] >= constant_share
                 and stats["true_share"][major] < constant_share)
    if one_class or stats["spread"] < constant_spread:
        finding = (f"constant output: {100 * stats['majority_share']:.1f}% of pixels predicted "
                   f"as {class_names[major]}, probabilities vary by {stats['spread']:.3f} "
                   "across the image")
        out.append(Alarm(finding + YELLOW, kind="constant_output", finding=finding,
                         fix="see the diagnosis at the start (head, loss, labels); if it found "
                         "nothing: class weights or a Dice term, a higher learning rate, more "
                         "steps"))
    for k, name in enumerate(class_names):
        true, pred = stats["true_share"][k], stats["pred_share"][k]
        if true > 0.005 and pred < vanished_share * true and (final or k in seen):
            finding = (f"class vanished: {name} is {100 * true:.1f}% of true pixels but "
                       f"{100 * pred:.2f}% of predicted ones")
            out.append(Alarm(finding + (" (it was predicted before)" if k in seen else ""),
                             kind="class_vanished", finding=finding,
                             fix="weight the rare classes (class weights, a Dice term) or "
                             "oversample them; a lower learning rate if it was lost"))
    return out


def constant_loss(loss: float) -> Alarm:
    finding = f"constant loss: the training loss is {loss:.2g} in every epoch"
    return Alarm(finding + ", so it does not depend on the prediction and nothing is learned "
                 "from the masks" + YELLOW, kind="constant_loss", finding=finding,
                 fix="match the loss to the head (see the diagnosis at the start)")


def collapse_alarm(alarms) -> str:
    """The finding of the first alarm that says the output collapsed (a banner, a last
    line); "" when none does. Alarms read back as records are read by their kind."""
    found = collapse_of([a if isinstance(a, Alarm) else Alarm.from_record(a) for a in alarms])
    return found.finding if found else ""
