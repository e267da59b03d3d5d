"""The comparison table over synthetic run folders, and what a run logs as hyperparameters."""

import json

import pytest


def _run(root, name, *, decoder, seed, miou, lr=0.003, alarms=(), failure=None):
    folder = root / name
    folder.mkdir(parents=True)
    config = {"seed": seed, "decoder": {"name": decoder, "kernel_size": 4},
              "trainer": {"learning_rate": lr, "epochs": 3}, "data": {"name": "shapes"}}
    (folder / "config.json").write_text(json.dumps(config))
    if failure:
        (folder / "failure.json").write_text(json.dumps(failure))
        return folder
    (folder / "metrics.json").write_text(json.dumps({
        "val_mean_iou": miou, "val_iou_per_class": [0.9, miou], "class_names": ["bg", "fg"],
        "epochs_completed": 3, "wall_time_s": 10.0,
        "diagnostics": {"constant_output": bool(alarms), "class_vanished": False,
                        "alarms": [{"epoch": 3, "alarm": a} for a in alarms]}}))
    return folder


@pytest.fixture
def sweep(tmp_path):
    for seed, (up, de) in enumerate([(0.80, 0.90), (0.81, 0.91), (0.79, 0.92)]):
        _run(tmp_path, f"{2 * seed}_decoder=upsample,seed={seed}", decoder="upsample",
             seed=seed, miou=up, alarms=["constant output: 99% background"] if seed == 2 else ())
        _run(tmp_path, f"{2 * seed + 1}_decoder=deconv,seed={seed}", decoder="deconv",
             seed=seed, miou=de)
    _run(tmp_path, "6_decoder=deconv,seed=9", decoder="deconv", seed=9, miou=0,
         failure={"error": "ConfigError", "message": "trainer.optimizer='nope': use one of"})
    return tmp_path


def test_runs_group_by_differing_settings_with_mean_and_spread_over_seeds(sweep):
    from seg import compare

    runs = compare.find_runs(sweep)
    assert [r.status for r in runs].count("failed") == 1
    groups, keys = compare.group_runs(runs)
    assert keys == ["decoder.name"]  # the seed makes repeats, not configs
    rows = compare.rows(groups)
    assert [r["config"] for r in rows] == ["decoder.name=deconv", "decoder.name=upsample"]
    deconv, upsample = rows
    assert deconv["val_mean_iou"] == pytest.approx(0.91)
    assert deconv["val_mean_iou_std"] == pytest.approx(0.01)
    assert (deconv["finished"], deconv["runs"], deconv["failed"]) == (3, 4, 1)
    assert upsample["alarms"] == "1/3: constant output"
    assert upsample["iou_fg"] == pytest.approx(0.80)


def test_markdown_lists_failures_and_says_whether_the_gap_beats_seed_noise(sweep, tmp_path):
    from seg import compare

    runs = compare.find_runs(sweep)
    groups, _ = compare.group_runs(runs)
    text = compare.markdown(groups, runs)
    assert "| decoder.name=deconv | 3/4 | 0.9100 | 0.0100 | 0.9000-0.9200 |" in text
    assert "6_decoder=deconv,seed=9: failed: ConfigError: trainer.optimizer='nope'" in text
    assert "Best: decoder.name=deconv" in text and "larger than the seed spread" in text
    compare.write_csv(tmp_path / "t.csv", compare.rows(groups))
    assert (tmp_path / "t.csv").read_text().splitlines()[0].startswith("config,runs,finished")


def test_close_configs_are_called_indistinguishable(tmp_path):
    from seg import compare

    for seed, (a, b) in enumerate([(0.80, 0.81), (0.82, 0.80), (0.81, 0.82)]):
        _run(tmp_path, f"a{seed}", decoder="upsample", seed=seed, miou=a)
        _run(tmp_path, f"b{seed}", decoder="deconv", seed=seed, miou=b)
    runs = compare.find_runs(tmp_path)
    assert "not distinguishable from seed noise" in compare.markdown(*[compare.group_runs(runs)[0]],
                                                                       runs)


def test_sweep_summary_names_every_failed_job(sweep):
    from seg import compare

    text = compare.sweep_summary(compare.find_runs(sweep), sweep)
    assert "7 job(s), 6 finished, 1 failed" in text
    assert "FAILED" in text and "trainer.optimizer='nope'" in text


def test_hparams_hold_the_main_settings_and_every_overridden_key(compose):
    from seg.hparams import hparams_of

    cfg = compose("+decoder=deconv", "trainer.learning_rate=0.01", "data.num_val=8")
    hp = hparams_of(cfg, ["+decoder=deconv", "trainer.learning_rate=0.01", "data.num_val=8",
                          "+experiment=foo", "+sweep=decoders"], parameters=1234)
    assert hp["decoder.name"] == "deconv" and hp["trainer.learning_rate"] == 0.01
    assert hp["data.num_val"] == 8 and hp["experiment"] == "foo"
    assert hp["model.out_channels"] == "null" and hp["model.parameters"] == 1234
    assert "decoder" not in hp and "sweep" not in hp  # a section's group is logged by its keys
