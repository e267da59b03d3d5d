"""Choices measured, not derived: short pilot runs of a plan's candidates, by successive halving.

Where the rules of seg.recipe cannot decide (a small crop and many steps, or a larger crop and
fewer, at the same pixels per second), every candidate trains for the same wall time
on the configured data, is scored by mIoU on a fixed subset of the validation split, and the
better half goes on for twice as long (Jamieson and Talwalkar's successive halving, eta 2),
until one is left. The survivor's weights are kept: the planned run starts from them, so the
pilots' cost is only what the losers spent.

Why not Optuna's SuccessiveHalvingPruner or KerasTuner's Hyperband: both are asynchronous over
trials run one after another (Optuna never prunes the first trial, which runs to its end;
KerasTuner's brackets restart models and write a project folder per trial). Here a handful of
small models live in memory side by side and every rung compares all of them at the same
time spent, which is the synchronous algorithm itself, in a loop.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from seg import config

VAL_IMAGES = 16   # the fixed validation subset the pilots are scored on
ETA = 2           # the better 1/ETA of the candidates go on at each rung


@dataclass
class Candidate:
    """One way to train: the config keys it sets, and what its pilot measured."""

    label: str
    changes: dict                 # config key path -> value
    step_s: float                 # measured seconds per training step
    scores: list[float] = field(default_factory=list)  # mIoU after each rung it ran
    steps: int = 0                # training steps it made
    spent_s: float = 0.0          # wall time it took (graph tracing and scoring included)
    measured_step_s: float | None = None  # the median step once traced, as it trained


class _Pilot:
    """A candidate's model, compiled at a constant learning rate, and its place in its
    training stream (so a rung continues where the last one stopped)."""

    def __init__(self, cfg: dict, source, train_ds=None):
        import keras

        from seg import train

        keras.utils.set_random_seed(cfg["seed"])
        self.cfg, self.source, self.done, self.step_s = cfg, source, 0, None
        self.train_ds = source.train if train_ds is None else train_ds
        self.computed = train.balance(cfg, source)
        self.model, loss, metrics = train.build(cfg, source, self.computed)
        rate = float(cfg["trainer"]["learning_rate"])
        train.compile_for_training(self.model, loss, metrics, cfg["trainer"],
                                   train.make_schedule("constant", rate, 1))

    def train_until(self, deadline: float) -> int:
        """Train until the clock (time.perf_counter) passes deadline, at least 5 steps (the
        graph's tracing and the stream's first fill count against it); the steps made."""
        import keras

        from seg import train
        from seg.data import pipeline

        data, source = self.cfg["data"], self.source
        stream = pipeline.training(
            self.train_ds, num_examples=source.num_train,
            batch_size=self.cfg["trainer"]["batch_size"], seed=self.cfg["seed"],
            start_batch=self.done, **train.pipeline_kwargs(data, self.computed))
        made = []

        def step(batch, logs=None):
            made.append(time.perf_counter())
            if len(made) >= 5 and time.perf_counter() > deadline:
                self.model.stop_training = True

        self.model.fit(stream, steps_per_epoch=1_000_000, epochs=1, verbose=0, shuffle=False,
                       callbacks=[keras.callbacks.LambdaCallback(on_train_batch_end=step)])
        self.done += len(made)
        if len(made) > 4:  # the first steps trace the graph and fill the stream
            self.step_s = float(np.median(np.diff(made[2:])))
        return len(made)

    def score(self, val_ds) -> float:
        return float(self.model.evaluate(val_ds, return_dict=True, verbose=0)["mean_iou"])


def halving(cfg: dict, source, candidates: list[Candidate], share_s: float, log=print
            ) -> tuple[Candidate, _Pilot, float]:
    """Successive halving within share_s seconds: (the winner, its trained pilot, seconds
    spent). Every candidate gets the same wall time at the first rung (building and tracing
    its model included: what a crop costs is what it costs); each later rung doubles it for
    the better half. Scoring the subset is the only time outside the allowances."""
    from seg.data import pipeline

    start = time.perf_counter()
    rungs = max(math.ceil(math.log(len(candidates), ETA)), 1)
    alive_at = [len(candidates)]
    for _ in range(rungs - 1):
        alive_at.append(max(alive_at[-1] // ETA, 1))
    units = sum(n * ETA ** r for r, n in enumerate(alive_at))  # n x 1 + n/2 x 2 + ...
    unit_s = 0.9 * share_s / units  # a tenth for scoring the subset
    val = cfg["data"]
    val_ds = pipeline.validation(source.val.take(VAL_IMAGES), batch_size=4,
                                 ignore_index=val["ignore_index"], cache=True)
    # decoded once: the first pilot's shuffle buffer reads the whole split, later ones reuse it
    train_ds = source.train.cache()
    alive = {c.label: (c, None) for c in candidates}
    for rung in range(rungs):
        for label, (cand, pilot) in alive.items():
            began = time.perf_counter()
            if pilot is None:
                pilot = _Pilot(config.applied(cfg, cand.changes), source, train_ds)
                alive[label] = (cand, pilot)
            cand.steps += pilot.train_until(began + ETA ** rung * unit_s)
            cand.scores.append(pilot.score(val_ds))
            cand.spent_s += time.perf_counter() - began
            cand.measured_step_s = pilot.step_s
            log(f"plan: pilot {cand.label}: {cand.steps} steps, val mIoU "
                f"{cand.scores[-1]:.3f} on {min(VAL_IMAGES, source.num_val)} images")
        ranked = sorted(alive.values(), key=lambda cp: -cp[0].scores[-1])
        alive = {c.label: (c, p) for c, p in ranked[:max(len(ranked) // ETA, 1)]}
    (winner, pilot), = alive.values()
    return winner, pilot, time.perf_counter() - start


def save_weights(pilot: _Pilot, path: Path) -> Path:
    """The winner's weights, for the planned run to start from (trainer.initial_weights)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp.weights.h5")
    pilot.model.save_weights(tmp)
    tmp.replace(path)
    return path
