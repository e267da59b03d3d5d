"""seg.diagnose on a zoo of public Keras segmentation models (tests/zoo_models.py).

Every sound model must get no error; every broken model an error that names its cause, whose
fix text names the change a user would apply; the fixed model must then get no error and
(slow) train. seg.diagnose must never raise: each test calls it on the model as built.
"""

import functools
import re

import keras
import numpy as np
import pytest
import tensorflow as tf
from zoo_models import (
    ATTENTION,
    BROKEN,
    CASES,
    FIXED,
    SCALING,
    SOUND,
    TRAINED,
    N,
    ops_softmax_unet,
    squares,
)

import seg

_REPORTS: dict[str, seg.Report] = {}


def diagnosed(case) -> seg.Report:
    """The report on the case's model (built with seed 0) and its verdict batch, once."""
    if case.name not in _REPORTS:
        keras.utils.set_random_seed(0)
        model = case.build()
        images, masks = case.data(N, 0)
        _REPORTS[case.name] = seg.diagnose(model, images, masks)
    return _REPORTS[case.name]


def _text(f) -> str:
    return f"{f.check} {f.title} {f.why}".lower()


def _naming(report, words) -> list:
    """The errors whose check, title or why hold one word of every group."""
    return [f for f in report.errors
            if all(any(w.lower() in _text(f) for w in group) for group in words)]


def _ids(cases):
    return [c.name for c in cases]


def test_the_zoo_is_large_and_every_model_names_its_source():
    assert len(SOUND) + len(BROKEN) + len(SCALING) >= 36
    assert len(BROKEN) >= 12 and all(c.fixed is not None for c in BROKEN)
    assert len({c.name for c in CASES + FIXED}) == len(CASES + FIXED)
    assert all(c.source for c in CASES)
    assert all(c.fixed.verdict == "sound" for c in BROKEN)
    second = CASES[CASES.index(ATTENTION):]  # the second round
    assert len(second) >= 24 and all(c.source for c in second)


@pytest.mark.parametrize("case", SOUND, ids=_ids(SOUND))
def test_a_sound_model_gets_no_error(case):
    report = diagnosed(case)
    assert report.ok, str(report)
    for f in report.warnings:
        said = f"{f.title} {f.why} {f.fix}".lower()
        assert not [w for w in case.forbid if w in said], str(report)


@pytest.mark.parametrize("case", BROKEN, ids=_ids(BROKEN))
def test_a_broken_model_gets_an_error_naming_the_cause(case):
    report = diagnosed(case)
    assert not report.ok, str(report)
    assert _naming(report, case.words), (case.words, str(report))
    assert all(f.why and f.fix for f in report.errors), str(report)
    if case.constant:  # exactly 1.0 everywhere: say so, and never read it as a sigmoid's
        stuck = [f for f in _naming(report, case.words) if re.search(r"\b1(\.0+)?\b", f.title)]
        assert stuck, str(report)  # the title gives the value the output is stuck at
        assert not [f.title for f in report.findings if "sigmoid" in f.title.lower()], \
            str(report)


@pytest.mark.parametrize("case", BROKEN, ids=_ids(BROKEN))
def test_the_fix_text_names_the_change_that_fixes_it(case):
    found = _naming(diagnosed(case), case.words)
    assert found, str(diagnosed(case))
    assert any(w in f.fix.lower() for f in found for w in case.fix_words), \
        (case.fix_words, [f.fix for f in found])


WRONG = [c for c in CASES + FIXED if c.wrong]


@pytest.mark.parametrize("case", WRONG, ids=_ids(WRONG))
def test_no_error_names_a_cause_the_model_does_not_have(case):
    report = diagnosed(case)
    wrong = [f.title for f in report.errors if any(w in _text(f) for w in case.wrong)]
    assert not wrong, str(report)


@pytest.mark.parametrize("case", FIXED, ids=_ids(FIXED))
def test_the_fixed_model_gets_no_error(case):
    """(A fix that gives back one of the sound models is checked with them.)"""
    report = diagnosed(case)
    assert report.ok, str(report)


@pytest.mark.parametrize("case", SCALING, ids=_ids(SCALING))
def test_unscaled_images_get_at_most_an_error_about_the_scaling(case):
    report = diagnosed(case)
    wrong = [f.title for f in report.errors
             if not any(w in _text(f) for w in ("255", "scal", "range", "normali"))]
    assert not wrong, str(report)


@pytest.mark.parametrize("case", CASES + FIXED, ids=_ids(CASES + FIXED))
def test_the_probes_run_or_are_skipped_never_crash(case):
    report = diagnosed(case)
    crashed = [f.title for f in report.findings if "could not run" in f.title]
    assert not crashed, str(report)


def _first_output(pred):
    """The first output of a model with several (a list, or a dict in sorted key order)."""
    if isinstance(pred, dict):
        return pred[min(pred)]
    return pred[0] if isinstance(pred, (list, tuple)) else pred


@pytest.mark.slow
@pytest.mark.parametrize("case", TRAINED, ids=_ids(TRAINED))
def test_the_fixed_model_trains(case):
    keras.utils.set_random_seed(0)
    model = case.build()
    model.compile(keras.optimizers.Adam(3e-3), loss=model.loss, jit_compile=False)
    x, y = case.data(32, 1)
    if isinstance(x, tf.data.Dataset):  # (batched by the case: 4 images a batch)
        losses = model.fit(x, epochs=8, verbose=0).history["loss"]
    else:
        y = case.targets(y) if case.targets else y
        losses = model.fit(x, y, batch_size=8, epochs=8, verbose=0).history["loss"]
    assert np.isfinite(losses).all() and losses[-1] < 0.8 * losses[0], losses
    images = case.data(N, 2)[0]
    if isinstance(images, tf.data.Dataset):
        images = np.concatenate([b[0] for b in images.as_numpy_iterator()])
    pred = np.asarray(_first_output(model.predict(images, verbose=0)))
    assert pred.std(axis=0).mean() > 1e-3, "the prediction is the same for every image"


# --- arguments that are not what they must be ------------------------------------------------

@functools.lru_cache(maxsize=1)
def _small():
    keras.utils.set_random_seed(0)
    model = ops_softmax_unet()
    images, masks = squares(N)
    return model, images, masks


def _monitor(x, y, log_dir, **kwargs):
    return seg.SegmentationMonitor((x, y), log_dir=log_dir, **kwargs)


BAD_CALLS = [  # (what, call(model, images, masks, folder), words the message may name it by)
    ("model=None", lambda m, x, y, d: seg.diagnose(None, x, y), ("model",)),
    ("model is a function", lambda m, x, y, d: seg.diagnose(ops_softmax_unet, x, y), ("model",)),
    ("model is a string", lambda m, x, y, d: seg.diagnose("unet", x, y), ("model",)),
    ("empty arrays", lambda m, x, y, d: seg.diagnose(m, x[:0], y[:0]), ("images", "masks")),
    ("images=None", lambda m, x, y, d: seg.diagnose(m, None, y), ("images",)),
    ("images of strings", lambda m, x, y, d: seg.diagnose(m, np.array([["a", "b"]] * N), y),
     ("images",)),
    ("masks is a file name", lambda m, x, y, d: seg.diagnose(m, x, "mask.png"), ("masks",)),
    ("8 images, 5 masks", lambda m, x, y, d: seg.diagnose(m, x, y[:5]), ("images", "masks")),
    ("a dataset and masks", lambda m, x, y, d: seg.diagnose(
        m, tf.data.Dataset.from_tensor_slices((x, y)).batch(4), y), ("masks",)),
    ("num_classes=0", lambda m, x, y, d: seg.diagnose(m, x, y, num_classes=0), ("num_classes",)),
    ("class_names='a'", lambda m, x, y, d: seg.diagnose(m, x, y, class_names="a"),
     ("class_names",)),
    ("ignore_index='255'", lambda m, x, y, d: seg.diagnose(m, x, y, ignore_index="255"),
     ("ignore_index",)),
    ("learning_rate=0", lambda m, x, y, d: seg.diagnose(m, x, y, learning_rate=0),
     ("learning_rate",)),
    ("monitor: log_dir is a file", lambda m, x, y, d: _monitor(x, y, d / "file.txt"),
     ("log_dir",)),
    ("monitor: num_images=0", lambda m, x, y, d: _monitor(x, y, d, num_images=0),
     ("num_images",)),
    ("monitor: unknown keyword", lambda m, x, y, d: _monitor(x, y, d, colour="red"),
     ("colour",)),
    ("monitor: validation_data=None",
     lambda m, x, y, d: seg.SegmentationMonitor(None, log_dir=d), ("validation_data",)),
    ("monitor: 8 images, 5 masks", lambda m, x, y, d: _monitor(x, y[:5], d),
     ("masks", "validation")),
    ("monitor: num_classes=0", lambda m, x, y, d: _monitor(x, y, d, num_classes=0),
     ("num_classes",)),
    ("monitor: class_names='a'", lambda m, x, y, d: _monitor(x, y, d, class_names="a"),
     ("class_names",)),
    ("monitor: every=-1", lambda m, x, y, d: _monitor(x, y, d, every=-1), ("every",)),
]


@pytest.mark.parametrize("what,call,names", BAD_CALLS, ids=[b[0] for b in BAD_CALLS])
def test_a_bad_argument_is_named_never_another_exception(what, call, names, tmp_path):
    """TypeError/ValueError naming the argument, or (diagnose) an "inputs" error finding."""
    model, images, masks = _small()
    (tmp_path / "file.txt").write_text("not a folder")
    try:
        result = call(model, images, masks, tmp_path)
    except (TypeError, ValueError) as e:
        assert any(n in str(e) for n in names), f"{type(e).__name__}: {e}"
        return
    assert isinstance(result, seg.Report), f"{what}: accepted ({type(result).__name__})"
    assert [f for f in result.errors if f.check == "inputs"], str(result)
