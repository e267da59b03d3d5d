"""The failure zoo: one tiny case per known misconfiguration, each caught by the right check."""

import math

import numpy as np
import pytest

from conftest import write_folder_dataset
from seg import diagnostics
from seg.diagnostics.reading import probabilities
from seg.monitor import alarms_for, output_stats
from seg.train import diagnose

NAMES = ["background", "a", "b", "c"]


def findings(report, level):
    return {f.check: f for f in report.findings if f.level == level}


def assert_clean(report):
    assert not report.errors and not report.warnings, report.text()


# --- through the real config path ---------------------------------------------------------

@pytest.mark.parametrize("decoder", ["upsample", "deconv"])
def test_correct_configs_pass_every_check(tiny, decoder):
    report = diagnose(tiny(f"+decoder={decoder}"))
    assert_clean(report)
    assert report.figures["initial_cross_entropy"] == pytest.approx(math.log(4), abs=0.05)


def test_binary_sigmoid_head_with_bce_passes(tiny):
    assert_clean(diagnose(tiny("data.num_classes=2", "model.out_channels=1")))


def test_yellow_image_is_refused_by_head_loss_and_both_probes(tiny):
    report = diagnose(tiny("+experiment=yellow_image"))
    errors = findings(report, "error")
    assert {"head/loss", "initial loss", "gradients"} <= set(errors)
    assert "exactly 1" in errors["head/loss"].why and "sigmoid + binary" in errors["head/loss"].fix
    assert "zero gradient at the head" in errors["gradients"].title
    assert report.figures["head_gradient_norm"] == 0.0


def test_softmax_over_one_channel(tiny):
    report = diagnose(tiny("data.num_classes=2", "model.out_channels=1",
                           "model.head_activation=softmax", "loss.from_logits=false"))
    assert "softmax over a single output channel" in findings(report, "error")["head"].title


def test_sparse_categorical_crossentropy_over_one_channel(tiny):
    report = diagnose(tiny("data.num_classes=2", "model.out_channels=1",
                           "loss.name=sparse_categorical_crossentropy", "diagnostics.probes=false"))
    assert "sparse_categorical_crossentropy" in findings(report, "error")["head/loss"].title


def test_probabilities_fed_to_a_from_logits_loss(tiny):
    report = diagnose(tiny("model.head_activation=softmax"))
    assert "from_logits=true" in findings(report, "error")["from_logits"].title


def test_logits_fed_to_a_probability_loss(tiny):
    report = diagnose(tiny("loss.from_logits=false"))
    assert "from_logits=false" in findings(report, "error")["from_logits"].title


def _folder(tmp_path, masks, *extra):
    root = write_folder_dataset(tmp_path / "ds", masks)
    return ("data=folder", f"data.root={root}", "data.image_size=16", "trainer.batch_size=2",
            "logging.num_panels=1", *extra)


def test_zero_255_masks_are_refused_naming_files_and_suggesting_a_mapping(compose, tmp_path):
    masks = {f"m{i}": np.where(np.arange(64).reshape(8, 8) % 3, 255, 0) for i in range(4)}
    report = diagnose(compose(*_folder(tmp_path, masks, "data.num_classes=2")))
    error = findings(report, "error")["labels"]
    assert "only 0 and 255 (= data.ignore_index)" in error.title and "m0.png" in error.title
    assert "data.label_map='{255:1}'" in error.fix
    # With another ignore_index, 255 is simply out of range for two classes.
    report = diagnose(compose(*_folder(tmp_path, masks, "data.num_classes=2",
                                       "data.ignore_index=254")))
    error = findings(report, "error")["labels"]
    assert "[255]" in error.title and "data.label_map='{255:1}'" in error.fix
    fixed = diagnose(compose(*_folder(tmp_path, masks, "data.num_classes=2",
                                      "data.label_map={255:1}")))
    assert "labels" not in findings(fixed, "error")


def test_labels_beyond_num_classes(compose, tmp_path):
    masks = {f"m{i}": np.arange(64).reshape(8, 8) % 5 for i in range(4)}
    report = diagnose(compose(*_folder(tmp_path, masks, "data.num_classes=3")))
    assert "[3, 4]" in findings(report, "error")["labels"].title


def test_all_background_dataset(compose, tmp_path):
    masks = {f"m{i}": np.zeros((8, 8)) for i in range(4)}
    report = diagnose(compose(*_folder(tmp_path, masks, "data.num_classes=2")))
    error = findings(report, "error")["labels"]
    assert "is class 0 (class_0)" in error.title and "constant picture" in error.why


def test_odd_sizes_get_a_shape_plan_showing_where_skips_would_break(tiny):
    report = diagnose(tiny("data.image_size=36"))
    plan = report.tables["shape plan"]
    assert "input 36x36: padded 40x40" in plan
    assert "without padding: height: skip 9 vs upsampled 8" in plan
    assert_clean(report)


def test_deconv_kernel_not_divisible_by_stride_warns_about_checkerboard(tiny):
    report = diagnose(tiny("+decoder=deconv", "decoder.kernel_size=3"))
    warning = findings(report, "warning")["decoder"]
    assert "checkerboard" in warning.why and "decoder.kernel_size=2" in warning.fix


@pytest.mark.slow
def test_overfit_probe_passes_for_a_good_config_and_catches_a_diverging_learning_rate(tiny):
    good = diagnose(tiny("diagnostics.overfit_steps=25"))
    assert findings(good, "ok")["overfit one batch"]
    bad = diagnose(tiny("diagnostics.overfit_steps=25", "trainer.learning_rate=1000"))
    assert "overfit one batch" in findings(bad, "error")


@pytest.mark.slow
def test_probes_leave_the_weights_unchanged(tiny):
    from seg.train import prepare
    parts = prepare(tiny("diagnostics.overfit_steps=5"))
    before = [w.copy() for w in parts.model.get_weights()]
    diagnose(tiny("diagnostics.overfit_steps=5"), parts)
    assert all(np.array_equal(a, b) for a, b in zip(before, parts.model.get_weights()))


# --- the monitors' arithmetic ---------------------------------------------------------------

def test_flat_output_raises_constant_output():
    truth = np.random.default_rng(0).integers(0, 4, (2, 16, 16))
    flat = np.full((2, 16, 16, 4), 0.25) + np.random.default_rng(1).normal(0, 1e-3, (2, 16, 16, 4))
    stats = output_stats(flat, truth, num_classes=4, ignore_index=255)
    alarms = alarms_for(stats, class_names=NAMES, constant_share=0.98, constant_spread=0.02,
                        vanished_share=0.1)
    assert stats["spread"] < 0.01 and stats["entropy"] > 0.99
    assert any(a.startswith("constant output") for a in alarms)


def test_majority_class_everywhere_raises_constant_output_and_class_vanished():
    truth = np.random.default_rng(0).integers(0, 4, (2, 16, 16))
    logits = np.zeros((2, 16, 16, 4))
    logits[..., 0] = 5 + np.random.default_rng(1).normal(0, 1, (2, 16, 16))
    stats = output_stats(probabilities(logits, True), truth, num_classes=4, ignore_index=255)
    alarms = alarms_for(stats, class_names=NAMES, constant_share=0.98, constant_spread=0.02,
                        vanished_share=0.1)
    assert stats["majority_share"] == 1.0
    assert any(a.startswith("constant output") for a in alarms)
    assert sum(a.startswith("class vanished") for a in alarms) == 3


def test_good_prediction_raises_no_alarm_and_nan_raises_one():
    truth = np.random.default_rng(0).integers(0, 4, (2, 16, 16))
    probs = np.eye(4)[truth] * 0.9 + 0.025
    stats = output_stats(probs, truth, num_classes=4, ignore_index=255)
    assert alarms_for(stats, class_names=NAMES, constant_share=0.98, constant_spread=0.02,
                      vanished_share=0.1) == []
    stats = output_stats(probs * np.nan, truth, num_classes=4, ignore_index=255)
    assert alarms_for(stats, class_names=NAMES, constant_share=0.98, constant_spread=0.02,
                      vanished_share=0.1)[0].startswith("non-finite")


def test_ignored_pixels_do_not_count_in_the_monitors():
    truth = np.full((1, 4, 4), 255)
    truth[0, 0, :2] = [0, 1]
    probs = np.eye(2)[np.zeros((1, 4, 4), int)]
    probs[0, 0, 1] = [0, 1]
    stats = output_stats(probs, truth, num_classes=2, ignore_index=255)
    assert stats["pred_share"] == [0.5, 0.5] and stats["true_share"] == [0.5, 0.5]


def test_report_text_has_why_and_fix():
    report = diagnostics.Report(diagnostics.check_head_and_loss(
        num_classes=2, out_channels=1, head_activation="sigmoid",
        loss="categorical_crossentropy", from_logits=False))
    text = report.text()
    assert "[  ERROR] head/loss" in text and "why:" in text and "fix:" in text


def test_a_class_not_learned_yet_is_no_alarm_but_one_that_was_lost_or_never_learned_is():
    truth = np.random.default_rng(0).integers(0, 4, (2, 16, 16))
    pred = np.where(truth == 2, 0, truth)  # class 2 never predicted
    stats = output_stats(np.eye(4)[pred] * 0.9 + 0.025, truth, num_classes=4, ignore_index=255)
    kw = dict(class_names=NAMES, constant_share=0.98, constant_spread=0.02, vanished_share=0.1)
    assert alarms_for(stats, final=False, **kw) == []
    assert alarms_for(stats, final=False, seen={2}, **kw)[0].startswith("class vanished: b")
    assert alarms_for(stats, final=True, **kw)[0].startswith("class vanished: b")


def test_frozen_random_encoder_warns(tiny):
    report = diagnose(tiny("model.encoder=mobilenet_v2", "model.freeze_encoder=true",
                           "diagnostics.probes=false"))
    assert "random weights" in findings(report, "warning")["encoder"].title
    plan = report.tables["shape plan"]
    assert "padded 32x32" in plan and "-> 1x1" in plan  # a backbone has 5 levels (stride 32)


@pytest.mark.slow
@pytest.mark.parametrize("broken", [
    ("+experiment=yellow_image",),
    ("data.num_classes=2", "model.out_channels=1", "model.head_activation=softmax",
     "loss.from_logits=false"),
    ("data.num_classes=2", "model.out_channels=1", "loss.name=sparse_categorical_crossentropy"),
    ("model.head_activation=softmax",),
    ("loss.from_logits=false",),
])
def test_every_printed_head_fix_applied_literally_passes(tiny, broken):
    """Every alternative of every printed fix is a complete set of overrides: appended to the
    command line as printed, it gives a set-up that passes the preflight (no error at all)."""
    import re

    report = diagnose(tiny(*broken))
    errors = [f for f in report.errors if f.check in ("head", "head/loss", "from_logits")]
    assert errors, report.text()
    tried = 0
    for error in errors:
        for alternative in re.split(r"\bor\b", re.sub(r"\([^)]*\)", "", error.fix)):
            overrides = re.findall(r"[\w.]+=\S+", alternative)
            if not overrides:
                continue
            fixed = diagnose(tiny(*broken, *overrides))
            assert fixed.ok, (overrides, fixed.text(errors_only=True))
            tried += 1
    assert tried >= len(errors), [e.fix for e in errors]
