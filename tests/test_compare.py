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
    assert [line for line in text.splitlines() if "COLLAPSED" in line] == [
        "  ok      0.7900  4_decoder=upsample,seed=2  COLLAPSED (constant output)"]
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


def test_a_config_is_labelled_by_what_it_changes_not_every_differing_key(tmp_path):
    from seg import compare

    for seed in range(3):  # a decoder x seed sweep
        _run(tmp_path, f"up{seed}", decoder="upsample", seed=seed, miou=0.8 + seed / 100)
        _run(tmp_path, f"de{seed}", decoder="deconv", seed=seed, miou=0.9 + seed / 100)
    _run(tmp_path, "lr", decoder="upsample", seed=0, miou=0.7, lr=0.01)
    yellow = _run(tmp_path, "yellow", decoder="upsample", seed=0, miou=0.1)
    config = json.loads((yellow / "config.json").read_text())
    config["model"] = {"out_channels": 1, "head_activation": "sigmoid"}
    config["trainer"]["epochs"] = 2
    (yellow / "config.json").write_text(json.dumps(config))
    for name in ("up0", "up1", "up2", "de0", "de1", "de2", "lr"):  # the others: the defaults
        c = json.loads((tmp_path / name / "config.json").read_text())
        c["model"] = {"out_channels": None, "head_activation": None}
        (tmp_path / name / "config.json").write_text(json.dumps(c))
    runs = compare.find_runs(tmp_path)
    groups, keys = compare.group_runs(runs)
    assert len(keys) == 5  # decoder, lr, epochs and two model keys differ somewhere
    assert [g.label for g in groups] == [
        "decoder.name=deconv", "common settings", "trainer.learning_rate=0.01",
        "model.head_activation=sigmoid,model.out_channels=1,trainer.epochs=2"]
    assert groups[1].settings.count("=") == 5  # the whole setting stays in compare.csv
    text = compare.markdown(groups, runs)
    assert "| decoder.name=deconv | 3/3 |" in text and "| common settings | 3/3 |" in text
    assert ("the others (common settings): decoder.name=upsample, model.head_activation=None, "
            "model.out_channels=None, trainer.epochs=3, trainer.learning_rate=0.003") in text
    assert compare.rows(groups)[1]["settings"] == groups[1].settings


def test_refused_runs_are_listed_as_refused_with_the_reason(tmp_path):
    from seg import compare

    _run(tmp_path, "ok", decoder="upsample", seed=0, miou=0.8)
    refused = _run(tmp_path, "refused", decoder="deconv", seed=0, miou=0)
    (refused / "metrics.json").unlink()
    (refused / "refused.json").write_text(json.dumps({
        "error": "PreflightError", "message": "[  ERROR] head/loss: one output channel\n  why",
        "overrides": ["+experiment=yellow_image"], "time": "2026-01-01 00:00:00"}))
    bad = _run(tmp_path, "bad", decoder="deconv", seed=1, miou=0)
    (bad / "metrics.json").unlink()
    (bad / "refused.json").write_text(json.dumps({"error": 3, "message": "x"}))
    runs = {r.name: r for r in compare.find_runs(tmp_path)}
    assert runs["refused"].status == "refused"
    assert runs["refused"].why == "PreflightError: [  ERROR] head/loss: one output channel why"
    text = compare.markdown(compare.group_runs(list(runs.values()))[0], list(runs.values()))
    assert "- refused: refused: PreflightError: [  ERROR] head/loss" in text
    # a refused.json seg did not write is named and skipped, as every record read back
    assert runs["bad"].status == "incomplete" and "refused.json" in runs["bad"].problems[0]
    assert "error is a number" in runs["bad"].problems[0]


@pytest.mark.slow
def test_a_refused_train_run_leaves_refused_json_and_compare_says_refused(tmp_path):
    """Through scripts/train.py: the preflight refuses the yellow image (exit 2) after the run
    folder holds config.json; compare lists the run as refused, not as still running."""
    import subprocess
    import sys

    from conftest import ROOT

    from seg import compare

    run = tmp_path / "runs" / "yellow"
    r = subprocess.run([sys.executable, str(ROOT / "scripts" / "train.py"),
                        "+experiment=yellow_image", "data.num_train=16", "data.num_val=8",
                        "data.image_size=32", "trainer.batch_size=8", f"hydra.run.dir={run}"],
                       cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert r.returncode == 2 and "Traceback" not in r.stderr, r.stderr[-2000:]
    record = json.loads((run / "refused.json").read_text())
    assert record["error"] == "PreflightError" and "head/loss" in record["message"]
    assert "+experiment=yellow_image" in record["overrides"]
    (listed,) = compare.find_runs(tmp_path / "runs")
    assert listed.status == "refused" and listed.why.startswith("PreflightError: ")
    assert "still running" not in compare.markdown(*compare.group_runs([listed])[:1], [listed])
