"""A training recipe planned from the data and this machine's measured speed: scripts/plan.py.

The rules live in seg.recipe; this module times real training steps of the candidate models
(seg.train's model, loss and optimizer, on the configured augmented crops) and applies them.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from seg import pilots as pilot_runs
from seg.config import value_at
from seg.pilots import VAL_IMAGES
from seg.recipe import (BUDGET_MINUTES, DEPTHS, MIN_BATCH, PIXELS_PER_STEP, STEP_FLOOR,
                        VALIDATION_SHARE, Decision, Fingerprint, Objects, Speed,
                        choose_balance, choose_batch, choose_geometry, choose_schedule,
                        experiment_name, experiment_yaml, fingerprint, grid, object_stats,
                        receptive_field, table)


# --- measuring ------------------------------------------------------------------------------

def measure(cfg: dict, source, computed: dict, repeats: int = 6) -> Speed:
    """Real training steps: model.fit on the config's augmented crops, each step timed by a
    callback (the first traces the graph, the next two warm up, the median of the rest
    counts); and one whole validation image predicted. With data.cache the images of one
    batch are decoded once, as a cached run decodes each image once."""
    import keras
    import tensorflow as tf

    from seg import train
    from seg.data import pipeline

    keras.utils.clear_session(free_memory=True)
    keras.utils.set_random_seed(cfg["seed"])
    data, trainer = cfg["data"], cfg["trainer"]
    batch = trainer["batch_size"]
    model, loss, metrics = train.build(cfg, source, computed)
    schedule = train.make_schedule("constant", float(trainer["learning_rate"]), 1)
    train.compile_for_training(model, loss, metrics, trainer, schedule)
    # a few images, decoded at every step as an uncached run does (once with data.cache)
    k = min(2 * batch, source.num_train)
    images = source.train.take(k).cache() if data["cache"] else source.train.take(k)
    stream = pipeline.training(images, num_examples=k, batch_size=batch, seed=cfg["seed"],
                               **train.pipeline_kwargs(data, computed))  # run's crops
    per_call = trainer["steps_per_execution"]  # a callback per execution of this many steps
    ends = [time.perf_counter()]
    clock = keras.callbacks.LambdaCallback(
        on_train_batch_end=lambda *_, **__: ends.append(time.perf_counter()))
    model.fit(stream, steps_per_epoch=(repeats + 3) * per_call, epochs=1, verbose=0,
              shuffle=False, callbacks=[clock])
    steps = np.diff(ends) / per_call
    first_val = list(source.val.take(1))
    if not first_val:
        from seg.data import DataError
        raise DataError("the validation split holds no readable image (python "
                        "scripts/check_data.py names each file)")
    image = first_val[0][0]
    image = tf.image.convert_image_dtype(image, tf.float32)[None]
    model.predict_on_batch(image)
    start = time.perf_counter()
    model.predict_on_batch(image)
    val_s = time.perf_counter() - start
    return Speed(grid(float(np.median(steps[3:]))), grid(float(steps[0])), grid(val_s),
                 cfg["model"]["base_filters"])


def _with(cfg: dict, decisions: list[Decision]) -> dict:
    """A copy of the config tree with the decisions applied."""
    from seg.config import applied
    return applied(cfg, {d.key: d.value for d in decisions})


def fitting_speed(cfg: dict, source, computed: dict, log=print) -> tuple[Speed, int]:
    """The speed at the planned batch, halved until a step fits in memory."""
    import tensorflow as tf

    from seg import resources

    batch = cfg["trainer"]["batch_size"]
    while True:
        trial = _with(cfg, [Decision("trainer.batch_size", batch, "")])
        est = resources.estimate(trial)
        fits = not est.available_bytes or est.total_bytes < resources.WARN_SHARE * \
            est.available_bytes
        if fits or batch <= 1:
            try:
                return measure(trial, source, computed), batch
            except tf.errors.ResourceExhaustedError:
                if batch <= 1:
                    raise
        log(f"plan: batch {batch} does not fit ({est.describe()}); trying {batch // 2}")
        batch //= 2


PILOT_SHARE = 0.2     # of the budget, at most, spent on pilot runs (printed): on a 2-core CPU
                      # a candidate's tracing and first fill take ~30 s of its allowance
PILOT_MIN_S = 25.0    # per candidate: below this share the pilots would measure only noise


@dataclass
class Pilots:
    """What the pilots measured: the candidates (in the order they were set), the winner, the
    seconds spent; `skipped` says why none ran, when none did."""

    candidates: list = field(default_factory=list)
    winner: object = None
    spent_s: float = 0.0
    skipped: str = ""
    trained: object = None  # the winner's model (seg.pilots._Pilot)


def crop_ladder(crop: int, unit: int, least: float = 0.0) -> list[int]:
    """The crop the geometry asks for (2x the largest objects, the receptive field), then the
    powers of two below it, down to the one that still holds the typical object of the median
    class (`least` px), and never under 4 x 2**depth or 64 px: what a short budget trades for
    more steps."""
    floor = max(4 * unit, 64, 2 ** math.ceil(math.log2(max(least, 1))))
    out, c = [crop], 2 ** math.floor(math.log2(crop))
    c = c if c < crop else c // 2
    while c >= floor:
        out.append(c)
        c //= 2
    return out


def median_extent(fp: Fingerprint) -> float:
    """The median over the classes of their typical object size (75th-percentile extent)."""
    found = [o.extent_p75 for o in fp.objects.values() if o.extent_p75]
    return float(np.median(found)) if found else 0.0


@dataclass
class _Timing:
    """One measured step (crop0 x fitted crops), scaled to other crops by pixels per step."""

    speed: Speed
    crop0: int
    fitted: int
    batch_given: int | None  # trainer.batch_size set on the command line
    fp: Fingerprint
    depth: int  # of the model timed
    measured: dict = field(default_factory=dict)  # crop -> seconds per step, as trained

    def batch_for(self, crop: int) -> int:
        if self.batch_given:
            return self.batch_given
        return self.fitted if crop == self.crop0 else choose_batch(self.fp, crop).value

    def step_s(self, crop: int) -> float:
        if crop in self.measured:
            return self.measured[crop]
        return self.speed.step_s * self.batch_for(crop) * crop ** 2 / (
            self.fitted * self.crop0 ** 2)


def plan(cfg: dict, source, budget_minutes: float, given: set[str] = frozenset(),
         log=print, pilots: bool = True, weights_path: Path | None = None
         ) -> tuple[Fingerprint, list[Decision], Pilots]:
    """The fingerprint, the decisions (keys the user gave on the command line are kept) and
    what the pilots measured. The schedule fills what the plan's own time leaves of the
    budget; with weights_path, the pilots' winner is saved there and the run starts from it."""
    began = time.perf_counter()
    fp = fingerprint(cfg, source)
    budget_s = 60.0 * budget_minutes
    def free(key: str) -> bool:  # not set on the command line (nor a key inside it), or auto
        return value_at(cfg, key) == "auto" or not any(
            g == key or g.startswith(key + ".") for g in given)

    given_weighting = cfg["loss"]["class_weights"]  # auto: the same rule, at training time
    weighting = "rule" if free("loss.class_weights") or given_weighting == "auto" else \
        given_weighting
    decisions = [d for d in choose_geometry(fp) + choose_balance(fp, weighting) if free(d.key)]
    batch = choose_batch(fp, _with(cfg, decisions)["data"]["image_size"])
    decisions += [batch] if free(batch.key) else []
    decisions, timing, ladder, pick = _size_for_budget(cfg, fp, source, decisions, free,
                                                       budget_s, log)
    base = _with(cfg, decisions)
    crop = ladder[pick]
    cands = [pilot_runs.Candidate(_label(base, {}), {}, timing.step_s(crop))]
    if pick > 0:  # the crop the step floor chose against the next larger one
        up = ladder[pick - 1]
        changes = {"data.image_size": up, "trainer.batch_size": timing.batch_for(up)}
        cands.append(pilot_runs.Candidate(_label(base, changes), changes, timing.step_s(up)))
    # The class weighting is the rule's, not measured: in pilots of 10-25 steps on the street
    # stand-in, weighted models first paint the rare classes everywhere (val mIoU 0.001)
    # while an unweighted one learns sky and road (0.077), so "learns fastest" picked no
    # weights, and the run it chose left every rare class at 0 IoU (docs/benchmarks.md).
    report = _measure(base, source, cands, budget_minutes, pilots, log)
    if report.winner is not None:
        winner = report.winner
        scores = ", ".join(f"{c.label.split(',')[0]} {c.scores[0]:.3f}" for c in cands)
        measured = {"data.image_size": winner.changes.get("data.image_size", crop),
                    "trainer.batch_size": winner.changes.get("trainer.batch_size",
                                                             timing.batch_for(crop)),
                    **winner.changes}
        decisions = _replace(decisions, [
            Decision(key, value, f"measured: {winner.label} learned fastest at equal time "
                     f"({scores}; pilots below)")
            for key, value in measured.items() if free(key)])
        crop = winner.changes.get("data.image_size", crop)
        if winner.measured_step_s:  # what the winner's steps took, better than a scaled guess
            timing.measured[crop] = grid(winner.measured_step_s)
        if weights_path is not None and free("trainer.initial_weights"):
            pilot_runs.save_weights(report.trained, weights_path)
            decisions.append(Decision(
                "trainer.initial_weights", str(weights_path), f"the winner's weights after "
                f"its {winner.steps} pilot steps: the run goes on from them"))
    final = _with(cfg, decisions)
    if crop not in timing.measured and (crop != timing.crop0 or
                                        final["model"]["depth"] != timing.depth):
        from seg import train  # the crop or depth the budget chose, timed as it will train
        log(f"plan: timing training steps of {crop} px crops at depth "
            f"{final['model']['depth']} ...")
        timed, _ = fitting_speed(final, source, train.balance(final, source), log)
        timing.measured[crop] = timed.step_s
    # the plan's own time, rounded up to whole half minutes: the same data on the same machine
    # gives the same schedule, though the seconds the plan took vary a little
    spent = 30.0 * math.ceil((time.perf_counter() - began) / 30.0)
    speed = Speed(timing.step_s(crop), timing.speed.first_s, timing.speed.val_image_s,
                  final["model"]["base_filters"])
    schedule = choose_schedule(fp, speed, budget_s, final["trainer"]["batch_size"], spent)
    for d in schedule:
        if d.key == "trainer.time_budget_minutes":
            d.reason = (f"{budget_minutes:g} min less the {spent:.0f} s this plan took "
                        f"(pilots {report.spent_s:.0f} s); a hard stop at a step boundary, "
                        "should this machine be slower than measured")
    return fp, decisions + [d for d in schedule if free(d.key)], report


def _size_for_budget(cfg: dict, fp: Fingerprint, source, decisions: list[Decision], free,
                     budget_s: float, log) -> tuple[list[Decision], _Timing, list[int], int]:
    """Time a step of the crop the objects ask for, then choose crop, batch, depth and width
    against the budget: the largest crop on the ladder of which STEP_FLOOR steps fit (else the
    smallest), a shallower model when the budget is short, 32 filters only when plenty of
    steps fit. The decisions, the timing, the crop ladder and the chosen rung."""
    from seg import train

    base = _with(cfg, decisions)
    crop0, depth = base["data"]["image_size"], base["model"]["depth"]
    width = 16 if free("model.base_filters") else cfg["model"]["base_filters"]
    base = _with(base, [Decision("model.base_filters", width, "")])
    log(f"plan: timing training steps of {crop0} px crops ...")
    speed, fitted = fitting_speed(base, source, train.balance(base, source), log)
    timing = _Timing(speed, crop0, fitted, None if free("trainer.batch_size") else
                     cfg["trainer"]["batch_size"], fp, depth)
    usable = budget_s * (1 - PILOT_SHARE - VALIDATION_SHARE) - 30
    ladder = (crop_ladder(crop0, 2 ** depth, median_extent(fp)) if free("data.image_size")
              else [crop0])
    pick = next((i for i, c in enumerate(ladder) if usable / timing.step_s(c) >= STEP_FLOOR),
                len(ladder) - 1)
    crop = ladder[pick]
    # under a short budget a shallower model learns faster: depth 4 at most (the street
    # stand-in: depth 5, 8.7M parameters, 0.23 val mIoU where depth 4, 2.2M, reached 0.35),
    # less where that still covers the median class's objects
    shallow = min(next((d for d in DEPTHS if d >= 3 and 2 ** d * 4 <= crop
                        and receptive_field(d) >= 1.5 * median_extent(fp)), depth), 4)
    new = []
    if free("model.depth") and shallow < depth and usable / timing.step_s(crop0) < STEP_FLOOR:
        new.append(Decision(
            "model.depth", shallow, f"receptive field {receptive_field(shallow)} px (the "
            f"median class's objects: {median_extent(fp):.0f} px): under a short budget a "
            f"shallower model ({4 ** (depth - shallow)}x fewer parameters) learns faster than "
            f"depth {depth} (whose {receptive_field(depth)} px would cover the largest)"))
    if free("model.base_filters") and usable / timing.step_s(crop) >= 4 * STEP_FLOOR:
        wide = _with(base, new + [Decision("model.base_filters", 32, ""),
                                  Decision("data.image_size", crop, ""),
                                  Decision("trainer.batch_size", timing.batch_for(crop), "")])
        log("plan: timing training steps with 32 filters ...")
        wide_speed, _ = fitting_speed(wide, source, train.balance(wide, source), log)
        if usable / wide_speed.step_s >= 2 * STEP_FLOOR:
            width = 32
            timing = _Timing(wide_speed, crop, timing.batch_for(crop), timing.batch_given, fp,
                             _with(wide, [])["model"]["depth"])
    steps_fit = usable / timing.step_s(crop)
    if free("model.base_filters"):
        new.append(Decision("model.base_filters", width, f"~{steps_fit:.0f} steps of {crop} px "
                            f"fit the budget at {timing.step_s(crop):.3g} s/step" + (
                                " (>= 2x the floor with 32: the wider model pays)"
                                if width == 32 else
                                f" (32 filters pay from {4 * STEP_FLOOR} steps)")))
    if free("data.image_size"):
        new.append(Decision("data.image_size", crop,
                            _crop_reason(ladder, pick, timing.step_s, usable)))
    if free("trainer.batch_size"):
        new.append(Decision("trainer.batch_size", timing.batch_for(crop),
                            f"~{PIXELS_PER_STEP[fp.machine['device']] // 1024}K pixels per step "
                            f"on a {fp.machine['device']}, at least {MIN_BATCH}"
                            + ("; halved until a step fits" if fitted < choose_batch(
                                fp, crop0).value else "")))
    return _replace(decisions, new), timing, ladder, pick


def _measure(base: dict, source, cands: list, budget_minutes: float, pilots: bool, log
             ) -> Pilots:
    """The pilots of the candidates, when there is something to measure and time for it."""
    report = Pilots(cands)
    share_s = PILOT_SHARE * 60.0 * budget_minutes
    if not pilots:
        report.skipped = "plan.pilots=false"
    elif len(cands) < 2:
        report.skipped = "nothing left to measure: the rules (or your keys) decided"
    elif share_s < PILOT_MIN_S * len(cands):
        report.skipped = (f"{budget_minutes:g} min is too short to measure {len(cands)} "
                          f"candidates (~{PILOT_MIN_S * len(cands) / PILOT_SHARE / 60:.0f} min "
                          "needed): the rules decided")
    else:
        log(f"plan: {len(cands)} pilot candidates, successive halving in at most "
            f"{share_s:.0f} s ({100 * PILOT_SHARE:.0f}% of the budget) ...")
        report.winner, report.trained, report.spent_s = pilot_runs.halving(
            base, source, cands, share_s, log)
    return report


def pilot_table(report: Pilots, budget_minutes: float, num_val: int = VAL_IMAGES) -> str:
    """The measured choices as the console shows them: each candidate, its steps, its val mIoU
    at each rung (on the first VAL_IMAGES of num_val validation images), its cost; the winner
    marked."""
    if report.winner is None:
        return f"== seg plan: pilots == none ran: {report.skipped}"
    share = 100 * report.spent_s / (60 * budget_minutes)
    lines = [f"== seg plan: pilots ({report.spent_s:.0f} s, {share:.0f}% of the budget; "
             f"successive halving, scored on "
             + (f"the first {VAL_IMAGES}" if num_val > VAL_IMAGES else f"all {num_val}")
             + " validation images) ==",
             f"  {'candidate':<52} {'steps':>6}  {'val mIoU by rung':<18} {'cost':>6}"]
    for c in report.candidates:
        mark = "  <- chosen" if c is report.winner else ""
        lines.append(f"  {c.label:<52} {c.steps:6d}  "
                     f"{' -> '.join(f'{s:.3f}' for s in c.scores):<18} {c.spent_s:5.0f}s{mark}")
    return "\n".join(lines)


def _replace(decisions: list[Decision], new: list[Decision], keep=lambda d: True
             ) -> list[Decision]:
    """decisions with `new` in place of those of the same keys (appended when new)."""
    new = [d for d in new if keep(d)]
    keys = {d.key for d in new}
    out = [d for d in decisions if d.key not in keys]
    return out + new


def _label(cfg: dict, changes: dict) -> str:
    c = _with_keys(cfg, changes)
    return (f"crop {c['data']['image_size']} x{c['trainer']['batch_size']}, "
            f"{c['loss']['class_weights'] or 'no weights'}"
            + (f" + rare crops {c['data']['rare_class_crops']:g}"
               if c["data"]["rare_class_crops"] else ""))


def _with_keys(cfg: dict, changes: dict) -> dict:
    from seg.config import applied
    return applied(cfg, changes)


def _crop_reason(ladder: list[int], pick: int, step_s, usable: float) -> str:
    crop = ladder[pick]
    fits = f"~{usable / step_s(crop):.0f} steps fit at {step_s(crop):.3g} s/step"
    if pick == 0:
        return (f"crops of {crop} px: what the objects and the receptive field ask for; {fits} "
                f"(>= the floor of {STEP_FLOOR} steps)")
    floor = "" if usable / step_s(crop) >= STEP_FLOOR else (
        f" (still under the floor; {crop} px is the least that holds the median class's "
        "objects)")
    return (f"crops of {crop} px: {ladder[0]} px (what the largest objects ask for) leaves "
            f"~{usable / step_s(ladder[0]):.0f} steps, under the floor of {STEP_FLOOR} a short "
            f"budget needs first; {fits}{floor}")


# the rules, re-exported: seg.plan is what scripts/plan.py and users import
__all__ = ["BUDGET_MINUTES", "PILOT_SHARE", "Decision", "Fingerprint", "Objects", "Pilots",
           "Speed", "choose_balance", "choose_batch", "choose_geometry", "choose_schedule",
           "crop_ladder", "experiment_name", "experiment_yaml", "fingerprint", "fitting_speed",
           "grid", "measure", "object_stats", "pilot_table", "plan", "receptive_field", "table"]
