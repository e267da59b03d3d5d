"""A training recipe planned from the data and this machine's measured speed: scripts/plan.py.

The rules live in seg.recipe; this module times real training steps of the candidate models
(seg.train's model, loss and optimizer, on the configured augmented crops) and applies them.
"""

from __future__ import annotations

import time

import numpy as np

from seg.recipe import (BUDGET_MINUTES, MIN_STEPS_WIDE, VALIDATION_SHARE, Decision,
                        Fingerprint, Objects, Speed, choose_balance, choose_batch,
                        choose_geometry, choose_schedule, experiment_name, experiment_yaml,
                        fingerprint, grid, object_stats, receptive_field, table)


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
    out = {k: dict(v) if isinstance(v, dict) else v for k, v in cfg.items()}
    for d in decisions:
        section, _, name = d.key.partition(".")
        out[section][name] = d.value
    return out


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


def plan(cfg: dict, source, budget_minutes: float, given: set[str] = frozenset(),
         log=print) -> tuple[Fingerprint, list[Decision]]:
    """The fingerprint and the decisions (keys the user gave on the command line are kept)."""
    from seg import train

    fp = fingerprint(cfg, source)
    budget_s = 60.0 * budget_minutes
    def free(key: str) -> bool:  # not set on the command line (nor a key inside it)
        return not any(g == key or g.startswith(key + ".") for g in given)

    decisions = [d for d in choose_geometry(fp) + choose_balance(fp) if free(d.key)]
    crop = _with(cfg, decisions)["data"]["image_size"]
    batch = choose_batch(fp, crop)
    decisions += [batch] if free(batch.key) else []
    base = _with(cfg, decisions)
    computed = train.balance(base, source)
    widths = [cfg["model"]["base_filters"]] if not free("model.base_filters") else [32, 16]
    for width in widths:
        trial = _with(base, [Decision("model.base_filters", width, "")])
        log(f"plan: timing training steps with {width} filters ...")
        speed, fitted = fitting_speed(trial, source, computed, log)
        steps = max((budget_s * (1 - VALIDATION_SHARE) - 20) / speed.step_s, 0)
        if steps >= MIN_STEPS_WIDE or width == widths[-1]:
            break
    if free("model.base_filters"):
        decisions.append(Decision(
            "model.base_filters", width, f"~{steps:.0f} steps fit the budget at "
            f"{speed.step_s:.3g} s/step" + (f" (>= {MIN_STEPS_WIDE}: the wider model pays)"
                                             if width == 32 else
                                             f"; 32 filters would allow under {MIN_STEPS_WIDE}")))
    if fitted != _with(cfg, decisions)["trainer"]["batch_size"]:
        decisions = [d for d in decisions if d.key != "trainer.batch_size"]
        decisions.append(Decision("trainer.batch_size", fitted, "halved until a step fits"))
    decisions += [d for d in choose_schedule(fp, speed, budget_s, fitted) if free(d.key)]
    return fp, decisions


# the rules, re-exported: seg.plan is what scripts/plan.py and users import
__all__ = ["BUDGET_MINUTES", "Decision", "Fingerprint", "Objects", "Speed", "choose_balance",
           "choose_batch", "choose_geometry", "choose_schedule", "experiment_name",
           "experiment_yaml", "fingerprint", "fitting_speed", "grid", "measure",
           "object_stats", "plan", "receptive_field", "table"]
