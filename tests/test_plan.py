"""scripts/plan.py and seg/plan.py: the fingerprint, the rules that turn it into a recipe, the
experiment config it writes (which train.py composes and accepts), determinism, refusals."""

import subprocess
import sys

import numpy as np
import pytest

from conftest import ROOT
from seg import plan
from seg.data import balance, imbalanced

# one worker runs the module, so its module fixture is built once
pytestmark = pytest.mark.xdist_group("plan")


def _fingerprint(shares, *, sizes=((96, 128),), objects=None, channels=3, device="CPU",
                 num_val=12) -> plan.Fingerprint:
    pixels = np.array([int(1e6 * s) for s in shares], np.int64)
    hist = balance.Histogram(pixels, pixels, 0, 10)
    names = [f"c{k}" for k in range(len(shares))]
    objects = objects or {k: plan.Objects(5, 100.0, 20.0, 12.0) for k in range(len(shares))}
    return plan.Fingerprint("test data", 48, num_val, list(sizes), channels, "8 bits", hist,
                            names, objects, {"device": device, "kind": "test machine",
                                             "memory_gib": 8.0, "gpu_memory_gib": None})


def _decided(decisions) -> dict:
    return {d.key: d.value for d in decisions}


def test_receptive_field_of_the_unet_encoder():
    # two 3x3 convolutions per level (4 * 2**level pixels) and a 2x2 pooling between levels
    assert [plan.receptive_field(d) for d in (2, 3, 4, 5)] == [32, 68, 140, 284]


def test_measured_times_snap_to_a_quarter_octave_grid():
    assert plan.grid(0.297) == plan.grid(0.31) == pytest.approx(2 ** -1.75)
    assert plan.grid(1.0) == 1.0 and plan.grid(1.05) == 1.0
    assert plan.grid(0.5) != plan.grid(0.6)


def test_object_statistics_measure_extent_thickness_and_leave_spanning_regions_out():
    mask = np.zeros((100, 100), np.int32)
    mask[10:20, 10:30] = 1          # a 20x10 box
    mask[50:60, 60:70] = 1          # a 10x10 box
    mask[:, 90:93] = 2              # a 3-pixel line spanning the image
    mask[0, 0] = 3                  # a speck: noise, not an object
    stats = plan.object_stats([mask], 4)
    assert stats[1].count == 2 and stats[1].median_area == 150
    assert stats[1].extent_p75 == pytest.approx(17.5)  # 75th percentile of [10, 20]
    assert stats[2].extent_p75 is None                  # spans: no typical size
    assert 2 <= stats[2].thickness <= 4
    assert 3 not in stats


def test_geometry_covers_the_typical_object_and_fits_the_image():
    small = _fingerprint([0.5, 0.5], sizes=[(64, 64)],
                         objects={1: plan.Objects(9, 200.0, 26.0, 12.0)})
    got = _decided(plan.choose_geometry(small))
    assert got == {"model.depth": 3, "data.image_size": 64}
    large = _fingerprint([0.5, 0.5], sizes=[(512, 512)],
                         objects={1: plan.Objects(9, 2000.0, 80.0, 30.0)})
    got = _decided(plan.choose_geometry(large))
    assert plan.receptive_field(got["model.depth"]) >= 1.5 * 80
    assert got["data.image_size"] == 256 and got["data.image_size"] % 2 ** got["model.depth"] == 0


def test_imbalance_turns_on_one_lever_for_rare_classes_and_thin_objects_are_not_zoomed():
    shares = [0.6, 0.39, 0.005, 0.005]
    thin = {0: plan.Objects(5, 900.0, None, 40.0), 3: plan.Objects(30, 20.0, 30.0, 2.0)}
    fp = _fingerprint(shares, objects=thin, channels=1)
    got = _decided(plan.choose_balance(fp))
    assert got["loss.class_weights"] == "median_frequency"
    assert got["data.rare_class_crops"] == 0  # the weights raise the rare classes already
    unweighted = _decided(plan.choose_balance(fp, weighting=None))  # the user's choice
    assert unweighted["data.rare_class_crops"] > 0  # then the crops do
    assert got["data.scale_range"] == [1.0, 1.0]
    assert not any(got["data.photometric"].values())  # one band: no colour jitter
    balanced = _decided(plan.choose_balance(_fingerprint([0.5, 0.3, 0.2])))
    assert balanced["loss.class_weights"] is None and balanced["data.rare_class_crops"] == 0
    assert balanced["data.scale_range"] == [0.8, 1.25] and balanced["data.photometric"]["hue"]


def test_the_schedule_fills_the_budget_and_keeps_validation_under_its_share():
    from seg.config import ConfigError

    fp = _fingerprint([0.5, 0.5], num_val=100)
    slow_val = plan.Speed(step_s=0.25, first_s=4.0, val_image_s=0.5, base_filters=16)
    got = _decided(plan.choose_schedule(fp, slow_val, 600.0, batch=16))
    every, epochs = got["trainer.validate_every"], got["trainer.epochs"]
    subset = got["trainer.validation_images"]  # whole images are slow: a fixed subset, rarer
    assert subset < 100 and -(-epochs // every) * 0.5 * subset * 1.2 <= \
        plan.VALIDATION_SHARE * 600
    assert got["trainer.steps_per_epoch"] >= 10
    fast = _decided(plan.choose_schedule(fp, plan.Speed(0.25, 4.0, 0.001, 16), 600.0, 16))
    steps = fast["trainer.epochs"] * fast["trainer.steps_per_epoch"]
    assert 0.6 * 600 / 0.25 <= steps <= 600 / 0.25  # most of the budget, never beyond it
    assert fast["trainer.validate_every"] == 1 and fast["trainer.time_budget_minutes"] == 10
    with pytest.raises(ConfigError, match="plan.budget_minutes=1 leaves"):
        plan.choose_schedule(_fingerprint([0.5, 0.5], num_val=400), slow_val, 60.0, 16)


@pytest.fixture(scope="module")
def toy(tmp_path_factory):
    root = tmp_path_factory.mktemp("streets") / "toy_streets"
    info = imbalanced.write_dataset(root, num_train=24, num_val=6, height=64, width=96)
    return root, info


def _toy_args(root, info):
    return ["data=folder", f"data.root={root}", f"data.num_classes={info['num_classes']}",
            f"data.class_names=[{','.join(info['class_names'])}]"]


def test_the_plan_is_deterministic_for_the_same_data_and_speed(toy, compose, monkeypatch):
    from seg import train

    root, info = toy
    cfg = compose(*_toy_args(root, info))
    source, _ = train.open_data(cfg["data"])
    monkeypatch.setattr(plan, "measure", lambda *a, **k: plan.Speed(0.25, 4.0, 0.01, 16))
    first = plan.plan(cfg, source, 5.0, log=lambda m: None, pilots=False)
    again = plan.plan(cfg, source, 5.0, log=lambda m: None, pilots=False)
    assert [(d.key, d.value) for d in first[1]] == [(d.key, d.value) for d in again[1]]
    assert first[0].objects == again[0].objects
    got = _decided(first[1])
    assert got["loss.class_weights"] == "median_frequency"
    assert got["data.rare_class_crops"] == 0  # one lever: the weights
    unweighted = _decided(plan.plan(compose(*_toy_args(root, info), "loss.class_weights=null"),
                                    source, 5.0, given={"loss.class_weights"},
                                    log=lambda m: None, pilots=False)[1])
    assert unweighted["data.rare_class_crops"] > 0
    # a key given on the command line is kept, not planned
    kept = plan.plan(compose(*_toy_args(root, info), "model.depth=3"), source, 5.0,
                     given={"model.depth", "data.photometric.hue"},
                     log=lambda m: None, pilots=False)[1]
    assert "model.depth" not in _decided(kept) and "data.photometric" not in _decided(kept)
    # a key given as auto is the plan's to decide
    planned = plan.plan(cfg, source, 5.0, given={"model.depth"}, log=lambda m: None,
                        pilots=False)[1]
    assert isinstance(_decided(planned)["model.depth"], int)


def _run_plan(*args, timeout=300):
    return subprocess.run([sys.executable, str(ROOT / "scripts" / "plan.py"), *args],
                          capture_output=True, text=True, timeout=timeout, cwd=ROOT)


@pytest.mark.slow
def test_plan_py_writes_an_experiment_that_train_py_composes_and_trains(toy, compose, tmp_path):
    root, info = toy
    name = "pytest_toy_plan"
    written = ROOT / "configs" / "experiment" / f"plan_{name}.yaml"
    try:
        done = _run_plan(*_toy_args(root, info), "model.base_filters=8", "data.image_size=32",
                         "trainer.batch_size=8", "model.depth=auto",  # auto: planned
                         "plan.budget_minutes=3", f"plan.name={name}")
        assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
        out = done.stdout
        assert "== seg plan: fingerprint ==" in out and "== seg plan: decisions" in out
        for row in ("pole", "sign", "cyclist", "void pixels", "machine", "image sizes"):
            assert row in out
        assert f"python scripts/train.py +experiment=plan_{name}" in out
        text = written.read_text()
        assert "# @package _global_" in text and "override /data: folder" in text
        assert text.count("  # ") >= 10  # every decision carries its reason
        cfg = compose(f"+experiment=plan_{name}")
        assert cfg["data"]["root"] == str(root) and cfg["loss"]["class_weights"] == \
            "median_frequency"
        planned = cfg["trainer"]["time_budget_minutes"]
        assert 1.5 < planned < 3  # the 3 minutes less the plan's own time
        assert cfg["model"]["base_filters"] == 8  # a key given to plan.py is kept
        assert isinstance(cfg["model"]["depth"], int)  # one given as auto is planned
        run = subprocess.run(
            [sys.executable, str(ROOT / "scripts" / "train.py"), f"+experiment=plan_{name}",
             f"hydra.run.dir={tmp_path / 'run'}", "logging.panels_every=0"],
            capture_output=True, text=True, timeout=600, cwd=ROOT)
        assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
        import json
        metrics = json.loads((tmp_path / "run" / "metrics.json").read_text())
        assert len(metrics["class_weights"]) == info["num_classes"]
        # one lever for the rare classes: the weights, no rare-class crops on top
        assert cfg["data"]["rare_class_crops"] == 0 and metrics["rare_classes"] is None
        assert metrics["time_budget_minutes"] == planned
        assert metrics["parameters"] < 200_000  # the 8 filters given to plan.py
    finally:
        written.unlink(missing_ok=True)


@pytest.mark.slow
@pytest.mark.parametrize("args, named", [
    (["plan.budget_minutes=abc"], "plan.budget_minutes"),
    (["plan.budget_minutes=0"], "plan.budget_minutes"),
    (["plan.budget_minutes=0.01"], "plan.budget_minutes"),  # no time left to train
    (["plan.budget=3"], "plan.budget"),
    (["plan.pilots=maybe"], "plan.pilots"),
    (["plan.name=../x"], "plan.name"),
    (["data=folder", "data.root=/nonexistent/seg-data", "data.num_classes=3"],
     "/nonexistent/seg-data"),
    (["model.depth=abc"], "model.depth"),
    (["data=isbi_membrane", "data.label_map=null"], "is class 0 (membrane)"),  # 255 = void
    (["data=isbi_membrane", "data.label_map=null", "data.ignore_index=254"],
     "mask values [255]"),
])
def test_plan_py_refuses_bad_input_naming_it(args, named):
    done = _run_plan(*args, timeout=120)
    assert done.returncode == 2, done.stdout + done.stderr
    assert named in done.stderr and "Traceback" not in done.stderr


def test_rare_class_advice_never_suggests_what_is_already_on(compose):
    from types import SimpleNamespace

    from seg.diagnostics.fixes import ConfigFixes

    ctx = SimpleNamespace(loss=SimpleNamespace(kind="ce_dice"))
    plain = ConfigFixes(compose("loss.class_weights=null")).rare_classes(ctx)
    assert "loss.class_weights=median_frequency" in plain and "scripts/plan.py" in plain
    assert "loss.name=auto" not in plain  # auto is CE + Dice already
    on = compose("loss.class_weights=median_frequency", "data.rare_class_crops=0.3")
    advice = ConfigFixes(on).rare_classes(ctx)
    assert "class_weights=" not in advice and "rare_class_crops=" not in advice
    assert "already" in advice
    weighted = ConfigFixes(compose("loss.class_weights=median_frequency")).rare_classes(ctx)
    assert "rare_class_crops=" not in weighted and "already" in weighted  # one lever is enough
    ce_only = ConfigFixes(compose("loss.name=ce")).rare_classes(
        SimpleNamespace(loss=SimpleNamespace(kind="ce")))
    assert "loss.name=auto" in ce_only


def test_recipe_findings_point_at_plan_py_where_the_recipe_does_not_fit(compose):
    from seg import recipe

    blobs = np.zeros((400, 400), np.int32)
    for y in range(0, 400, 200):
        for x in range(0, 400, 200):
            blobs[y + 10:y + 170, x + 10:x + 170] = 1  # 160-pixel objects
    cfg = compose("data.image_size=64", "model.depth=3", "trainer.validation_images=null")
    found = recipe.recipe_findings(cfg, [blobs] * 4, depth=3, steps=10, batch=4, num_val=500)
    titles = " | ".join(f.title for f in found)
    assert "wider than the receptive field (68 px" in titles
    assert "crops (64 px) are smaller than the typical object" in titles
    assert "validating 500 whole images" in titles
    assert all("scripts/plan.py" in f.fix for f in found)
    assert any("trainer.validate_every=" in f.fix and "trainer.validation_images=" in f.fix
               for f in found)
    fits = compose("data.image_size=256", "model.depth=5", "trainer.validate_every=2")
    assert recipe.recipe_findings(fits, [blobs] * 4, depth=5, steps=100, batch=8,
                                  num_val=500) == []
