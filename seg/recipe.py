"""The rules of a training recipe: the decisions a dataset's fingerprint (seg.fingerprint)
implies.

nnU-Net's lesson: most of what people tune by hand follows from a few facts about the data. The
fingerprint (image sizes, bands and bit depth, the class histogram, the size and thickness of
the objects of each class, the void share, the split sizes, the machine) decides the crop and
depth (the receptive field covers the typical object), the batch (pixels per step for the
device), the class weights and rare-class crops (imbalance), the zoom range (thin structures
keep their labelled width), and, from measured speeds (seg.plan), the width, steps and epochs
(the cosine schedule decays to its end within the budget) and how often to validate (under
about 15% of the budget). The same rules advise the preflight (recipe_findings).

Determinism: every decision is a rule on the fingerprint, and measured times are rounded to a
quarter-octave grid (2 ** (k / 4) seconds), so the same data on the same kind of machine gives
the same plan.
"""

from __future__ import annotations

import math
import os
import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from seg.data import balance as class_balance
from seg.geometry import receptive_field  # noqa: F401 (seg.plan imports it from here)
# the fingerprint has its own module; its names stay importable from here
from seg.fingerprint import (MASK_SAMPLE, OBJECT_SAMPLE, Fingerprint,  # noqa: F401
                             Objects, fingerprint, machine, object_stats)

BUDGET_MINUTES = 10.0
DEPTHS = (2, 3, 4, 5)
VALIDATION_SHARE = 0.10      # of the budget, at most, spent validating during training
PIXELS_PER_STEP = {"CPU": 2 ** 17, "GPU": 2 ** 19}  # 8 x 128^2 on a CPU (short budgets want
                                                     # many steps); 8 x 256^2 on a GPU
MIN_BATCH = 4                # batch normalisation's statistics are noise over 2 crops
STEP_FLOOR = 1000            # optimizer steps a budget buys before crops grow beyond what the
                             # objects need (street photographs: ~0.26 val mIoU after 500
                             # steps of 4 x 256^2, 0.33 after 1,100)
MIN_VAL_IMAGES = 16          # the smallest validation subset scored during training
RARE_SHARE = class_balance.RARE_SHARE  # under 2% of the labelled pixels: weighted, oversampled
MIN_STEPS_WIDE = 800         # steps the wider model (32 filters) needs to be worth its cost
MIN_EPOCH_STEPS = 50         # trainer.steps_per_epoch=auto: one pass, and at least this many
                             # steps (24 ISBI slices in batches of 16 made 2 steps an epoch, 24
                             # in all: val mIoU 0.40, every pixel called cell)
THIN_PIXELS = 8.0            # classes this thin (2 x pixels / boundary) are not zoomed: 0.8x
                             # zoom makes an 8-pixel membrane 6.4 pixels wide


# --- the decisions --------------------------------------------------------------------------

@dataclass
class Decision:
    key: str      # a config key path
    value: object
    reason: str


@dataclass
class Speed:
    """Measured, in seconds (rounded up to the quarter-octave grid)."""

    step_s: float        # one training step
    first_s: float       # the first step (graph tracing)
    val_image_s: float   # one validation image, predicted whole
    base_filters: int


def grid(seconds: float) -> float:
    """Rounded to the nearest 2 ** (k / 4) (within 9%): the same machine kind measures the
    same value. An overrun is cut by trainer.time_budget_minutes in the schedule's tail."""
    return 2 ** (round(4 * math.log2(max(seconds, 1e-4))) / 4)


def choose_geometry(fp: Fingerprint) -> list[Decision]:
    """Depth (receptive field over the typical object, little padding) and crop size."""
    h, w = fp.median_size
    side, extent = min(h, w), fp.typical_extent
    fits = [d for d in DEPTHS if 2 ** d * 8 <= side] or [DEPTHS[0]]
    depth = next((d for d in fits if receptive_field(d) >= 1.5 * extent), fits[-1])
    covers = receptive_field(depth) >= 1.5 * extent
    unit = 2 ** depth
    padded = (-(-h // unit) * unit) * (-(-w // unit) * unit)
    pad = padded / (h * w) - 1
    want = max(2 * extent, receptive_field(depth), 4 * unit)
    crop = min(2 ** math.ceil(math.log2(want)), max(side // unit * unit, unit), 512)
    return [
        Decision("model.depth", depth,
                 f"receptive field {receptive_field(depth)} px "
                 + (">= 1.5x" if covers else "(as deep as the images allow) < 1.5x")
                 + f" the typical object ({extent:.0f} px: the largest class's 75th-percentile "
                 "extent); the median "
                 f"{h}x{w} image pads "
                 f"{100 * pad:.1f}% to a multiple of {unit}"),
        Decision("data.image_size", crop,
                 f"crops of {crop} px: the next power of two over 2x the typical object and "
                 f"the receptive field, at most the image's shorter side ({side} px)")]


def choose_balance(fp: Fingerprint, weighting: str | None = "rule") -> list[Decision]:
    """Class weights when a class is under RARE_SHARE of the pixels, rare-class crops only
    where the classes are not weighted (weighting: the run's, when the user set it; "rule":
    weight_rule's); no zooming for thin structures; photometric jitter for RGB."""
    n, shares = len(fp.class_names), fp.hist.shares
    present = [k for k in range(n) if shares[k] > 0]
    rarest = min(present, key=lambda k: shares[k])
    imbalanced = shares[rarest] < RARE_SHARE
    name = fp.class_names[rarest]
    weighting = weight_rule(fp) if weighting == "rule" else weighting
    ratio = float(shares[present].max() / shares[rarest])
    out = [Decision("loss.name", "auto", "cross-entropy matched to the head + Dice: Dice "
                    "weighs every class alike, whatever its pixel count")]
    out.append(Decision("loss.class_weights", weighting,
                        f"rarest class {name} at {100 * shares[rarest]:.2f}%, {ratio:.0f}x "
                        f"rarer than the largest, {n} classes: "
                        + ("SegNet's median-frequency weights" if weighting else
                           f"no class under {100 * RARE_SHARE:g}%: Dice balances the classes "
                           "enough, no weights")))
    # one lever for the rare classes, not two: on the street stand-in median-frequency
    # weights alone reached 0.35 val mIoU, with a third of the crops centred on rare classes
    # too 0.29 (buildings fell from 0.48 to 0.34 IoU: the rare classes counted twice)
    oversample = imbalanced and not weighting
    out.append(Decision("data.rare_class_crops", 0.33 if oversample else 0.0,
                        "a third of the crops centred on a rare-class pixel (nnU-Net's "
                        "foreground oversampling: the classes are not weighted)" if oversample
                        else f"the {weighting} weights already raise the rare classes; "
                        "centring crops on them too counts them twice (large classes fall)"
                        if imbalanced else "no class is rare enough to oversample"))
    thin = [(o.thickness, fp.class_names[k]) for k, o in fp.objects.items()]
    thinnest = min(thin) if thin else (math.inf, "-")
    keep = thinnest[0] <= THIN_PIXELS
    out.append(Decision("data.scale_range", [1.0, 1.0] if keep else [0.8, 1.25],
                        f"the thinnest class ({thinnest[1]}, {thinnest[0]:.1f} px) "
                        + ("is a few pixels wide: zooming would change its labelled width"
                           if keep else "is thick enough to zoom 0.8-1.25x")))
    colour = fp.channels == 3 and fp.bit_depth.startswith("8 bits")
    out.append(Decision(
        "data.photometric", {"brightness": 0.1 if colour else 0.0,
                             "contrast": 0.1 if colour else 0.0,
                             "saturation": 0.1 if colour else 0.0,
                             "hue": 0.02 if colour else 0.0, "blur": 0.0},
        "RGB: mild brightness, contrast, saturation and hue jitter (lighting differs between "
        "photographs)" if colour else f"{fp.channels} band(s) of {fp.bit_depth}: no colour "
        "jitter (intensities carry the signal)"))
    return out


def weight_rule(fp: Fingerprint) -> str | None:
    """The class weighting the data asks for: SegNet's median frequency when a class is rare
    (under RARE_SHARE of the pixels), none otherwise. On the 360x480 street stand-in (11
    classes, 0.24% to 25.6%) full median-frequency weights with ~900 steps reached 0.35 val
    mIoU with every rare class learned. Not piloted: see seg.plan. The same rule resolves
    loss.class_weights=auto (the default) for a run."""
    return weighting_for(fp.hist)


def weighting_for(hist: class_balance.Histogram) -> str | None:
    """weight_rule on a class histogram."""
    shares = hist.shares
    present = shares[shares > 0]
    if not present.size or present.min() >= RARE_SHARE:
        return None
    return "median_frequency"


def choose_batch(fp: Fingerprint, crop: int) -> Decision:
    device = fp.machine["device"]
    target = PIXELS_PER_STEP[device]
    batch = int(min(max(target // crop ** 2, MIN_BATCH), 64))
    return Decision("trainer.batch_size", batch,
                    f"about {target // 1024}K pixels per step on a {device} "
                    f"({batch} x {crop}x{crop}); measured to fit")


def validation_share(num_val: int, image_pixels: float, train_pixels: float) -> float:
    """The share of an epoch that validating num_val whole images takes, from pixel counts (a
    forward pass costs about a third of a training step's pixels)."""
    val = num_val * image_pixels / 3
    return val / (val + train_pixels) if val + train_pixels else 0.0


def validation_subset(num_val: int, image_pixels: float, train_pixels: float) -> int | None:
    """trainer.validation_images=auto (the default): None (the whole split each epoch) while
    validating costs at most a third of an epoch, else the first N images (a fixed subset) that
    cost about VALIDATION_SHARE, at least MIN_VAL_IMAGES; best.keras is scored on the whole
    split once, at the end. For example 101 street photographs of 360x480 against one pass of
    22 steps of 16 x 128^2 crops: half of each epoch (16 images: a tenth); against the 50
    steps of trainer.steps_per_epoch=auto, 31%: the whole split."""
    share = validation_share(num_val, image_pixels, train_pixels)
    if share <= 0.35:
        return None
    ratio = share / (1 - share) / (VALIDATION_SHARE / (1 - VALIDATION_SHARE))
    fewer = max(int(num_val / ratio), MIN_VAL_IMAGES)
    return fewer if fewer < num_val else None


def validation_images(fp: Fingerprint, speed: Speed, budget_s: float, epochs: int) -> int:
    """How many validation images each epoch scores (a fixed subset): all of them when every
    epoch's validation fits VALIDATION_SHARE of the budget, else as many as fit, at least
    MIN_VAL_IMAGES (the whole split scores best.keras once, at the end)."""
    fit = int(VALIDATION_SHARE * budget_s / max(epochs * speed.val_image_s * 1.2, 1e-9))
    return int(min(fp.num_val, max(fit, MIN_VAL_IMAGES)))


def choose_schedule(fp: Fingerprint, speed: Speed, budget_s: float, batch: int,
                    spent_s: float = 0.0) -> list[Decision]:
    """Epochs, steps, validation subset and cadence, and learning rate that fill what the
    plan's own time (spent_s: reading the data, timing steps, pilots) leaves of budget_s."""
    given_s, budget_s = budget_s, budget_s - spent_s
    h, w = fp.median_size
    whole_s = speed.val_image_s * max(fp.num_val, 1) * 1.2  # + metrics and batching
    subset = validation_images(fp, speed, budget_s, 12)  # for up to 12 epochs
    val_s = speed.val_image_s * subset * 1.2
    # set-up (graph tracing, the preflight's probes) and the final re-scoring of best.keras on
    # the whole split
    overhead = 10 + speed.first_s + val_s + whole_s + 0.03 * budget_s
    # each epoch end: the monitor's fixed batch and the panels (about 12 images predicted)
    # and three checkpoint writes
    per_epoch = 3.0 + 12 * speed.val_image_s
    train_s = max(budget_s - overhead, 0.2 * budget_s)
    total = max(int(train_s / speed.step_s), 10)
    epochs = int(min(max(round(total / 120), 6), 12))  # each epoch end costs ~per_epoch
    every = 1
    while math.ceil(epochs / every) * val_s > VALIDATION_SHARE * budget_s and every < epochs:
        every += 1
    validations = math.ceil(epochs / every)
    fixed = overhead + validations * val_s + epochs * per_epoch
    left = budget_s - fixed
    if left < 0.25 * budget_s or left / speed.step_s < 10 * epochs:
        from seg.config import ConfigError
        need = (spent_s + max(fixed / 0.75, fixed + 10 * epochs * speed.step_s)) / 60
        raise ConfigError(
            f"plan.budget_minutes={given_s / 60:g} leaves {max(left, 0):.0f} s for training "
            f"after the plan's own {spent_s:.0f} s, set-up (~{overhead:.0f} s), {epochs} "
            f"epoch ends and {validations} "
            f"validation(s) of {subset} images (~{val_s:.0f} s each) at {speed.step_s:.3g} "
            f"s per step: give at least plan.budget_minutes={math.ceil(need)}, or validate "
            "on fewer images")
    total = max(int(left / speed.step_s), epochs)
    steps = max(total // epochs, 1)
    rate = 0.002 if batch < 4 else 0.003
    spent = validations * val_s
    whole = subset >= fp.num_val
    return [
        Decision("trainer.epochs", epochs, f"{epochs} epochs of {steps} steps = "
                 f"{epochs * steps} steps at {speed.step_s:.3g} s each (measured)"),
        Decision("trainer.steps_per_epoch", steps, f"fills the budget after set-up "
                 f"(~{overhead:.0f} s), epoch ends (~{per_epoch:.0f} s each) and validation; the "
                 "cosine schedule decays over exactly these steps"),
        Decision("trainer.validation_images", None if whole else subset,
                 f"each validation scores all {fp.num_val} images" if whole else
                 f"each validation scores the first {subset} of {fp.num_val} images (a fixed "
                 f"subset, ~{val_s:.0f} s); the whole split (~{whole_s:.0f} s) scores best.keras "
                 "once, at the end: the figure reported"),
        Decision("trainer.validate_every", every,
                 f"{validations} validation(s) of {subset} whole {h}x{w} images at "
                 f"~{val_s:.0f} s each = {100 * spent / budget_s:.0f}% of the budget "
                 + (f"(at most {100 * VALIDATION_SHARE:.0f}%)"
                    if spent <= VALIDATION_SHARE * budget_s else
                    f"(over {100 * VALIDATION_SHARE:.0f}%: only the last epoch validates)")),
        Decision("logging.panels_every", every, "panels with each validation"),
        Decision("trainer.learning_rate", rate, "Adam at 3e-3 (seg's default) for batches of 4+"
                 if rate == 0.003 else "Adam at 2e-3 for batches of 2-3 (noisier gradients)"),
        Decision("trainer.schedule", "cosine", "decays to 1% by the last planned step"),
        Decision("trainer.time_budget_minutes", round(budget_s / 60, 3),
                 "a hard stop at a step boundary, should this machine be slower than measured")]


# --- output ---------------------------------------------------------------------------------

def table(fp: Fingerprint, decisions: list[Decision], budget_minutes: float) -> str:
    """The fingerprint and the decisions, as the console shows them."""
    sizes = sorted(h * w for h, w in fp.sizes)
    by_area = {h * w: f"{w}x{h}" for h, w in fp.sizes}
    lines = ["== seg plan: fingerprint ==",
             f"  data            {fp.data}",
             f"  splits          {fp.num_train} train / {fp.num_val} validation",
             f"  image sizes     min {by_area[sizes[0]]}, median "
             f"{fp.median_size[1]}x{fp.median_size[0]}, max {by_area[sizes[-1]]} (w x h)",
             f"  bands           {fp.channels}, {fp.bit_depth}",
             f"  void pixels     {100 * fp.hist.void_share:.2f}% (ignore_index)",
             f"  machine         {fp.machine['kind']}, {fp.machine['memory_gib']} GiB free"
             + (f", GPU memory {fp.machine['gpu_memory_gib']} GiB"
                if fp.machine["gpu_memory_gib"] else ""),
             "  class           pixels    objects  median area  extent p75  thickness"]
    for k, name in enumerate(fp.class_names):
        o = fp.objects.get(k)
        lines.append(f"  {name[:14]:<14} {100 * fp.hist.shares[k]:6.2f}%  "
                     + (f"{o.count:8d}  {o.median_area:11.0f}  "
                        f"{(f'{o.extent_p75:.0f} px') if o.extent_p75 else 'spans':>10}  "
                        f"{o.thickness:7.1f} px" if o else "       -"))
    lines += ["", f"== seg plan: decisions (budget {budget_minutes:g} min) =="]
    width = max(len(d.key) for d in decisions)
    lines += [f"  {d.key:<{width}}  {_shown(d.value):<18} {d.reason}" for d in decisions]
    return "\n".join(lines)


def _shown(value) -> str:
    """A value for the table: a mapping by its non-zero entries ("off" when none)."""
    if isinstance(value, dict):
        return ", ".join(f"{k} {v:g}" for k, v in value.items() if v) or "off"
    return _yaml(value)


def _yaml(value) -> str:
    import yaml

    return yaml.safe_dump(value, default_flow_style=True, width=1000).strip().removesuffix(
        "\n...").removesuffix("...").strip()


def experiment_name(cfg: dict, given_name: str | None) -> str:
    if given_name:
        base = given_name
    elif cfg["data"]["name"] == "folder":
        base = Path(str(cfg["data"]["root"])).resolve().name
    else:
        base = cfg["data"]["name"]
    return "plan_" + (re.sub(r"[^a-z0-9]+", "_", base.lower()).strip("_") or "data")


PLAN_OF = "# plan-of: "  # the header line that says whose plan a file holds


def plan_identity(cfg: dict, given_name: str | None) -> str:
    """Whose plan it is, as one line of JSON: the name as given (or the data folder's) and the
    data it was planned for. Two plans whose names differ only in what a file name drops
    (case, '-', '.', spaces) have different identities, so neither replaces the other."""
    import json  # noqa: PLC0415

    data = cfg["data"]
    where = (str(Path(str(data["root"])).resolve()) if data["name"] == "folder"
             else data["name"])
    name = given_name or (Path(where).name if data["name"] == "folder" else where)
    return json.dumps({"name": name, "data": where}, ensure_ascii=False)


def holder_of(path: Path) -> str | None:
    """The identity recorded in an existing plan file ("" when it records none: a plan of an
    older seg, or a file written by hand); None when there is no such file."""
    try:
        with open(path, encoding="utf-8", errors="replace") as f:
            head = [next(f, "") for _ in range(12)]
    except FileNotFoundError:
        return None
    except OSError:
        return ""
    return next((line[len(PLAN_OF):].strip() for line in head if line.startswith(PLAN_OF)), "")


def plan_file(folder: Path, name: str, identity: str) -> tuple[str, str | None]:
    """The experiment name to write this plan under, and a note when it is not `name`.

    configs/experiment/<name>.yaml when it is free or holds this plan's earlier version (a
    re-plan replaces it); otherwise <name>_<6 hex of the identity>.yaml, so that a plan of
    other data, or of a name that differs only in letters a file name drops, is kept.
    """
    import hashlib  # noqa: PLC0415

    held = holder_of(folder / f"{name}.yaml")
    if held is None or held == identity:
        return name, None
    other = f"{name}_{hashlib.sha1(identity.encode()).hexdigest()[:6]}"
    held_other = holder_of(folder / f"{other}.yaml")
    if held_other not in (None, identity):
        raise ValueError(f"{folder / other}.yaml and {folder / name}.yaml both hold other "
                         "plans; give this one its own name with plan.name=...")
    whose = held or "no plan-of record: written by hand or by an older seg"
    return other, (f"{folder / name}.yaml holds another plan ({whose}); kept as it is. This "
                   f"plan is written as {other}.yaml (file names keep only a-z, 0-9 and _; "
                   "plan.name=... chooses another)")


def write_plan(path: Path, text: str, identity: str):
    """Write the plan file: atomically, and only where it is free or holds this plan (checked
    again at the moment of writing: a plan written meanwhile by another process is refused,
    named, never replaced)."""
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    tmp.write_text(text, encoding="utf-8")
    try:
        try:
            os.link(tmp, path)  # a new file: fails if another process wrote one meanwhile
            return
        except FileExistsError:
            pass
        if holder_of(path) != identity:
            raise ValueError(f"{path}: another plan was written there meanwhile (by another "
                             "plan.py?); kept as it is: run plan.py again, or give this plan "
                             "its own name with plan.name=...")
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def experiment_yaml(name: str, fp: Fingerprint, decisions: list[Decision], cfg: dict,
                    data_group: str | None, carried: list[str], budget_minutes: float) -> str:
    """The experiment config: the keys given to plan.py (kept as given), then each decision
    with its reason as a comment."""
    lines = ["# @package _global_",
             f"# Planned by scripts/plan.py for {fp.data}",
             f"# on {fp.machine['kind']}, budget {budget_minutes:g} min. Train with:",
             f"#   python scripts/train.py +experiment={name}",
             "# Re-plan after the data or the machine changes (python scripts/plan.py ...)."]
    if data_group:
        lines += ["defaults:", f"  - override /data: {data_group}"]
    sections: dict[str, list[str]] = {}
    for key in dict.fromkeys(".".join(k.split(".")[:2]) for k in carried):
        section, _, rest = key.partition(".")
        sections.setdefault(section, []).append(
            f"  {rest}: {_yaml(cfg[section][rest])}  # given to plan.py")
    for d in decisions:
        section, _, rest = d.key.partition(".")
        reason = d.reason.replace("\n", " ")
        sections.setdefault(section, []).append(f"  {rest}: {_yaml(d.value)}  # {reason}")
    for section, rows in sections.items():
        lines += ["", f"{section}:"] + rows
    return "\n".join(lines) + "\n"




# --- advice for a configured run (the preflight) --------------------------------------------

def recipe_findings(cfg: dict, masks: list[np.ndarray], *, depth: int, steps: int,
                    batch: int, num_val: int, auto: frozenset = frozenset()) -> list:
    """Where the fingerprint says the configured recipe does not fit the data: objects wider
    than the receptive field or the crop, or validation costing more than the training of an
    epoch. Warnings whose fix names the keys, and plan.py. A depth or crop that `auto` chose
    (the keys in `auto`) was sized for the median class's objects on purpose: said, as OK."""
    from seg.diagnostics import Finding

    out, data, model = [], cfg["data"], cfg["model"]
    if not masks:
        return out
    extent = Fingerprint("", 0, 0, [m.shape for m in masks], 0, "", None, [],
                         object_stats(masks[:16], data["num_classes"]), {}).typical_extent
    field = receptive_field(depth)
    plan_it = "python scripts/plan.py <the same data overrides> plans depth, crop and cadence"
    deeper = next((d for d in DEPTHS if receptive_field(d) >= extent), DEPTHS[-1])
    if model["encoder"] == "unet" and field < extent and deeper > depth and \
            "model.depth" in auto:
        out.append(Finding("ok", "recipe", f"model.depth=auto: {depth} (receptive field "
                           f"{field} px) for the median class's objects; the largest class's "
                           f"({extent:.0f} px) would ask for model.depth={deeper}, slower to "
                           "train"))
    elif model["encoder"] == "unet" and field < extent and deeper > depth:
        out.append(Finding("warning", "recipe", f"the typical object ({extent:.0f} px across) "
                           f"is wider than the receptive field ({field} px at model.depth="
                           f"{depth})", "the network never sees a whole object at once",
                           f"model.depth={deeper} (crop at least {2 ** deeper * 4} px), or "
                           + plan_it))
    if data["image_size"] < extent and "data.image_size" not in auto:
        out.append(Finding("warning", "recipe", f"the crops ({data['image_size']} px) are "
                           f"smaller than the typical object ({extent:.0f} px)", "most crops "
                           "hold a part of an object, never its outline", "a larger "
                           f"data.image_size, or {plan_it}"))
    image_px = float(np.median([m.size for m in masks]))
    train_px = steps * batch * data["image_size"] ** 2
    share = validation_share(num_val, image_px, train_px)
    subset = cfg["trainer"].get("validation_images")
    fewer = validation_subset(num_val, image_px, train_px)
    if cfg["trainer"]["validate_every"] == 1 and fewer and not subset:
        ratio = share / (1 - share) / (VALIDATION_SHARE / (1 - VALIDATION_SHARE))
        every = max(math.ceil(ratio), 2)
        out.append(Finding("warning", "recipe", f"validating {num_val} whole images takes "
                           f"about {100 * share:.0f}% of each epoch",
                           "the time goes to scoring instead of training",
                           f"trainer.validation_images={fewer} (a fixed subset each epoch, the "
                           f"whole split once at the end), trainer.validate_every={every}, or "
                           f"{plan_it}"))
    return out
