"""Plans under a budget (issue 28): the step floor and the crop ladder, square-root weights,
a validation subset, pilot runs by successive halving whose winner the run starts from, and
the street-scene stand-in the plans are calibrated on."""

import numpy as np
import pytest

from seg import config, pilots, plan, recipe
from seg.config import ConfigError
from seg.data import balance, scenes


def _fingerprint(shares, *, sizes=((360, 480),), num_val=100, device="CPU"):
    pixels = np.array([int(1e6 * s) for s in shares], np.int64)
    hist = balance.Histogram(pixels, pixels, 0, 10)
    names = [f"c{k}" for k in range(len(shares))]
    objects = {k: plan.Objects(5, 100.0, 20.0, 12.0) for k in range(len(shares))}
    return plan.Fingerprint("test data", 300, num_val, list(sizes), 3, "8 bits", hist, names,
                            objects, {"device": device, "kind": "test machine",
                                      "memory_gib": 8.0, "gpu_memory_gib": None})


def test_square_root_weightings_are_the_roots_of_the_full_ones():
    hist = balance.histogram([np.repeat(np.arange(3), [900, 90, 10])[None]], 3)
    for method in ("median_frequency", "inverse_frequency"):
        full = np.array(balance.class_weights(method, hist))
        root = np.array(balance.class_weights("sqrt_" + method, hist))
        assert root == pytest.approx(np.sqrt(full), rel=1e-3)
        assert root.max() / root.min() < full.max() / full.min()  # milder


def test_the_config_accepts_the_square_root_weightings_and_names_them_when_wrong(compose):
    from seg import config

    config.check(compose("loss.class_weights=sqrt_median_frequency"))
    with pytest.raises(ConfigError, match="sqrt_median_frequency"):
        config.check(compose("loss.class_weights=sqrt_median"))


def test_the_weighting_rule_weights_where_a_class_is_rare():
    assert recipe.weight_rule(_fingerprint([0.5, 0.3, 0.2])) is None
    assert recipe.weight_rule(_fingerprint([0.6, 0.39, 0.01])) == "median_frequency"
    streets = [0.25, 0.25, 0.2, 0.12, 0.06, 0.06, 0.03, 0.0075, 0.0075, 0.005, 0.0025]
    assert recipe.weight_rule(_fingerprint(streets)) == "median_frequency"


def test_the_crop_ladder_halves_down_to_what_the_depth_allows():
    assert plan.crop_ladder(352, 32) == [352, 256, 128]
    assert plan.crop_ladder(256, 16) == [256, 128, 64]
    assert plan.crop_ladder(96, 8) == [96, 64]
    assert plan.crop_ladder(64, 16) == [64]
    # never below what holds the median class's objects
    assert plan.crop_ladder(352, 32, least=73.0) == [352, 256, 128]
    assert plan.crop_ladder(256, 16, least=130.0) == [256]


def test_validation_scores_a_subset_when_the_whole_split_costs_too_much():
    fp = _fingerprint([0.5, 0.5], num_val=101)
    slow = plan.Speed(step_s=0.5, first_s=8.0, val_image_s=0.5, base_filters=16)
    got = {d.key: d.value for d in plan.choose_schedule(fp, slow, 600.0, 8)}
    subset = got["trainer.validation_images"]
    assert recipe.MIN_VAL_IMAGES <= subset < 101
    validations = -(-got["trainer.epochs"] // got["trainer.validate_every"])
    assert validations * subset * 0.5 * 1.2 <= plan.VALIDATION_SHARE * 600 + 1e-6 or \
        subset == recipe.MIN_VAL_IMAGES
    fast = plan.Speed(step_s=0.5, first_s=8.0, val_image_s=0.001, base_filters=16)
    got = {d.key: d.value for d in plan.choose_schedule(fp, fast, 600.0, 8)}
    assert got["trainer.validation_images"] is None  # cheap: every image, every time


class _FakePilot:
    """A pilot whose mIoU after n steps is a known curve: rate * log(1 + steps), the rate a
    function of the candidate's config."""

    rate_of = staticmethod(lambda cfg: 0.1)

    def __init__(self, cfg, source, train_ds=None):
        self.rate, self.done, self.step_s = self.rate_of(cfg), 0, 0.1

    def train_until(self, deadline):  # 0.1 s a step, tracing free
        import time

        steps = max(int(round((deadline - time.perf_counter()) / 0.1)), 5)
        self.done += steps
        return steps

    def score(self, val_ds):
        return self.rate * np.log1p(self.done)


def _fake_validation(monkeypatch):
    from seg.data import pipeline

    monkeypatch.setattr(pilots, "_Pilot", _FakePilot)
    monkeypatch.setattr(pipeline, "validation", lambda *a, **k: None)


def test_successive_halving_keeps_the_better_half_and_doubles_its_time(monkeypatch):
    _fake_validation(monkeypatch)
    rates = {64: 0.10, 96: 0.12, 128: 0.05, 160: 0.08}
    _FakePilot.rate_of = staticmethod(lambda cfg: rates[cfg["data"]["image_size"]])
    cands = [pilots.Candidate(f"crop {c}", {"data.image_size": c}, step_s=0.1)
             for c in (64, 96, 128, 160)]
    cfg = {"data": {"image_size": 64, "ignore_index": 255}}
    source = type("S", (), {"num_val": 8, "val": type("V", (), {"take": lambda self, n: None})(),
                            "train": type("T", (), {"cache": lambda self: None})()})()
    winner, trained, spent = pilots.halving(cfg, source, cands, share_s=40.0, log=lambda m: None)
    assert winner.label == "crop 96" and trained.rate == 0.12
    by = {c.label: c for c in cands}
    first = by["crop 128"].steps
    assert len(by["crop 128"].scores) == len(by["crop 160"].scores) == 1   # halved away
    assert len(by["crop 96"].scores) == len(by["crop 64"].scores) == 2     # went on
    assert by["crop 96"].steps == pytest.approx(3 * first, abs=2)  # one unit, then two more
    assert spent < 40.0


def _toy_source(tmp_path_factory, compose, *fixed, size=(48, 64)):
    from seg import train
    from seg.data import imbalanced

    root = tmp_path_factory.mktemp("pilot_streets") / "streets"
    info = imbalanced.write_dataset(root, num_train=12, num_val=4, height=size[0],
                                    width=size[1])
    cfg = compose("data=folder", f"data.root={root}", f"data.num_classes={info['num_classes']}",
                  *fixed)
    source, _ = train.open_data(cfg["data"])
    return cfg, source


def test_the_plan_measures_its_candidates_and_records_them(tmp_path_factory, compose,
                                                           monkeypatch):
    cfg, source = _toy_source(tmp_path_factory, compose, size=(256, 320))
    # slow enough that the crop the objects ask for misses the floor of steps
    monkeypatch.setattr(plan, "measure", lambda *a, **k: plan.Speed(2.0, 1.0, 0.01, 16))
    _fake_validation(monkeypatch)
    _FakePilot.rate_of = staticmethod(  # larger crops learn faster here
        lambda cfg: cfg["data"]["image_size"] / 100)
    monkeypatch.setattr(pilots, "save_weights", lambda pilot, path: path)
    fp, decisions, report = plan.plan(cfg, source, 15.0, log=lambda m: None,
                                      weights_path=tmp_path_factory.mktemp("w") / "p.weights.h5")
    got = {d.key: d for d in decisions}
    assert report.winner is not None and len(report.candidates) >= 2
    assert report.winner.scores[-1] == max(c.scores[-1] for c in report.candidates
                                           if len(c.scores) == len(report.winner.scores))
    for key, value in report.winner.changes.items():
        assert got[key].value == value and "measured" in got[key].reason
    assert got["trainer.initial_weights"].value.endswith("p.weights.h5")
    assert report.spent_s <= plan.PILOT_SHARE * 900
    table = plan.pilot_table(report, 15.0, source.num_val)
    assert "<- chosen" in table and "successive halving" in table
    scored = min(source.num_val, 16)
    assert f"{'all' if scored == source.num_val else 'the first'} {scored} validation" in table
    assert "all 6 validation images" in plan.pilot_table(report, 15.0, 6)  # ISBI has 6
    for c in report.candidates:
        assert c.label in table
    # the budget pays for the plan's own time: the run gets what is left
    assert got["trainer.time_budget_minutes"].value <= 15.0


def test_a_short_budget_or_plan_pilots_false_decides_by_the_rules_and_says_why(
        tmp_path_factory, compose, monkeypatch):
    cfg, source = _toy_source(tmp_path_factory, compose, size=(256, 320))
    monkeypatch.setattr(plan, "measure", lambda *a, **k: plan.Speed(2.0, 1.0, 0.01, 16))
    short = plan.plan(cfg, source, 4.0, log=lambda m: None)[2]
    assert short.winner is None and "too short" in short.skipped
    off = plan.plan(cfg, source, 15.0, log=lambda m: None, pilots=False)[2]
    assert off.winner is None and off.skipped == "plan.pilots=false"
    assert "none ran: plan.pilots=false" in plan.pilot_table(off, 15.0)


@pytest.mark.slow
def test_the_pilot_winner_starts_the_run_and_foreign_weights_are_refused(
        tmp_path_factory, compose, tmp_path):
    from seg import parts

    cfg, source = _toy_source(tmp_path_factory, compose, "model.base_filters=4",
                              "model.depth=2", "data.image_size=32", "trainer.batch_size=4")
    cands = [pilots.Candidate("a", {}, 0.05),
             pilots.Candidate("b", {"loss.class_weights": "sqrt_median_frequency"}, 0.05)]
    winner, trained, _ = pilots.halving(cfg, source, cands, share_s=8.0, log=lambda m: None)
    assert winner.steps >= 5 and all(c.scores for c in cands)
    path = pilots.save_weights(trained, tmp_path / "plan.weights.h5")
    run_cfg = config.applied(cfg, {**winner.changes, "trainer.initial_weights": str(path)})
    model = parts.prepare(run_cfg).model
    for a, b in zip(model.get_weights(), trained.model.get_weights(), strict=True):
        np.testing.assert_array_equal(a, b)
    with pytest.raises(ConfigError, match="trainer.initial_weights=.*no such file"):
        parts.prepare(config.applied(cfg, {"trainer.initial_weights": str(tmp_path / "x.h5")}))
    wider = config.applied(cfg, {"trainer.initial_weights": str(path), "model.base_filters": 8})
    with pytest.raises(ConfigError, match="does not fit this model"):
        parts.prepare(wider)


def test_validation_images_scores_a_fixed_subset_and_the_end_the_whole_split(tiny):
    from seg import parts

    got = parts.prepare(tiny("trainer.validation_images=5"))
    count = lambda ds: sum(int(x.shape[0]) for x, _ in ds)  # noqa: E731
    assert count(got.fit_val_ds) == 5 and count(got.val_ds) == 16
    whole = parts.prepare(tiny())
    assert whole.fit_val_ds is whole.val_ds


def test_the_scene_stand_in_has_eleven_classes_a_void_label_and_rare_classes(tmp_path):
    info = scenes.write_dataset(tmp_path / "s", num_train=6, num_val=2, height=120, width=160)
    assert info["num_classes"] == 11 and info["ignore_index"] == 11
    shares = np.array(info["shares"])
    assert shares.max() > 0.15 and (shares < 0.05).sum() >= 4 and 0 < info["void_share"] < 0.1
    from PIL import Image
    mask = np.array(Image.open(tmp_path / "s" / "masks" / "train_0000.png"))
    assert mask.max() == 11 and mask.dtype == np.uint8
    again = scenes.write_dataset(tmp_path / "s", num_train=6, num_val=2, height=120, width=160)
    assert again == info  # deterministic, and an earlier output may be replaced
    (tmp_path / "other").mkdir()
    (tmp_path / "other" / "notes.txt").write_text("mine")
    with pytest.raises(FileExistsError, match="not empty"):
        scenes.write_dataset(tmp_path / "other", num_train=1, num_val=0)
    assert (tmp_path / "other" / "notes.txt").read_text() == "mine"
