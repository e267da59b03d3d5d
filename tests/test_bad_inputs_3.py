"""The third bad-input round: every unreadable path named by every reader, JSON read back
checked against what seg wrote, plans and sweeps that never replace each other's files, and
messages that say what is true. In-process and fast; one real sweep process at the end (slow).
"""

import json
import os
import socket
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
from PIL import Image

from conftest import ROOT, write_folder_dataset

# --- every reader names every kind of unreadable path ----------------------------------------


def _directory(p):
    p.mkdir()


def _fifo(p):
    os.mkfifo(p)


def _socket(p):
    s = socket.socket(socket.AF_UNIX)
    s.bind(str(p))
    s.close()  # the socket file stays


def _dangling(p):
    os.symlink(p.parent / "nowhere", p)


def _loop(p):
    os.symlink(p, p)


def _device(p):
    os.symlink("/dev/null", p)


def _vanished(p):
    pass  # listed once, gone now


def _empty(p):
    p.write_bytes(b"")


PATH_KINDS = [  # (name, make, what the message says)
    ("directory", _directory, "is a folder"),
    ("fifo", _fifo, "is a named pipe (fifo)"),
    ("socket", _socket, "is a socket"),
    ("dangling", _dangling, "dangling symbolic link"),
    ("loop", _loop, "loop of symbolic links"),
    ("device", _device, "is a character device"),
    ("vanished", _vanished, "no such file"),
    ("empty", _empty, "zero-byte"),
]


def _read_image(path):
    from seg.data import folder

    return folder.read_image(str(path), 3)


def _read_image_raw(path):
    from seg.data import folder

    return folder.read_image(str(path), 3, raw=True)


def _read_mask(path):
    from seg.data import folder

    return folder.read_mask(str(path), folder.label_lookup(None))


READERS = [("image", _read_image), ("raw image", _read_image_raw), ("mask", _read_mask)]


@pytest.mark.parametrize("suffix", [".png", ".npy", ".tif"])
@pytest.mark.parametrize("reader", READERS, ids=[r[0] for r in READERS])
@pytest.mark.parametrize("kind", PATH_KINDS, ids=[k[0] for k in PATH_KINDS])
def test_every_reader_names_every_kind_of_unreadable_path(tmp_path, kind, reader, suffix):
    from seg.data import DataError

    name, make, said = kind
    path = tmp_path / f"x{suffix}"
    make(path)
    with pytest.raises(DataError) as e:
        reader[1](path)  # a fifo must not block: the reader looks before it opens
    assert str(e.value).startswith(str(path)) and said in str(e.value), str(e.value)


def test_permission_denied_is_named(tmp_path, monkeypatch):
    """Root reads every file, so the check is shown with os.access saying no."""
    from seg.data import DataError, folder

    path = tmp_path / "locked.png"
    Image.fromarray(np.zeros((4, 4), np.uint8)).save(path)
    monkeypatch.setattr(folder.os, "access", lambda p, mode: False)
    for read in (_read_image, _read_mask):
        with pytest.raises(DataError, match="permission denied"):
            read(path)


def _non_finite(path: Path, value, bands: int):
    """A float image of 12x10 pixels and `bands` bands with `value` at row 4, column 6."""
    a = np.random.default_rng(0).random((12, 10, bands)).astype(np.float32)
    a[4, 6, 0] = value
    if path.suffix == ".npy":
        np.save(path, a)
    else:
        import tifffile

        tifffile.imwrite(path, a[..., 0] if bands == 1 else a)


@pytest.mark.parametrize("suffix,value,bands,channels", [
    (".npy", np.nan, 3, 3), (".npy", np.inf, 3, 3), (".npy", -np.inf, 3, 3),
    (".npy", np.nan, 4, 4), (".tif", np.nan, 3, 3), (".tif", np.nan, 1, 1),
    (".tif", np.inf, 1, 3),  # a float grey TIFF read as RGB (Pillow's mode F)
])
@pytest.mark.parametrize("raw", [False, True])
def test_nan_or_inf_in_an_image_is_an_error_naming_the_file_and_pixel(tmp_path, suffix, value,
                                                                        bands, channels, raw):
    from seg.data import DataError, folder

    path = tmp_path / f"bad{suffix}"
    _non_finite(path, value, bands)
    if raw and bands != channels:
        pytest.skip("raw values keep their bands: refused for the band count first")
    with pytest.raises(DataError, match=r"NaN and .*Inf value\(s\) \(the first at row 4, "
                                        r"column 6\)") as e:
        folder.read_image(str(path), channels, raw=raw)
    assert str(path) in str(e.value)


@pytest.mark.parametrize("shape,channels,said", [
    ((20, 20, 5), 3, "5 band(s), data.channels=3"),     # not a size: Pillow read 5x20
    ((5, 20, 20), 3, "5 band(s), data.channels=3"),     # Pillow read the first page alone
    ((2, 20, 20), 1, "2 band(s), data.channels=1"),
    ((20, 20, 5), 4, "5 band(s), data.channels=4"),
])
def test_a_multi_band_tiff_is_refused_by_its_band_count(tmp_path, shape, channels, said):
    import tifffile

    from seg.data import DataError, folder

    path = tmp_path / "bands.tif"
    tifffile.imwrite(path, np.zeros(shape, np.uint8))
    with pytest.raises(DataError) as e:
        folder.read_image(str(path), channels)
    assert said in str(e.value) and str(path) in str(e.value)
    assert "x20" not in str(e.value)  # no size


def test_a_multi_page_tiff_mask_is_refused_naming_its_shape(tmp_path):
    import tifffile

    from seg.data import DataError, folder

    path = tmp_path / "m.tif"
    tifffile.imwrite(path, np.zeros((20, 20, 5), np.uint8))
    with pytest.raises(DataError, match=r"a mask of shape \(20, 20, 5\)"):
        folder.read_mask(str(path), folder.label_lookup(None))


@pytest.fixture
def bad_dataset(tmp_path):
    """Eight pairs; s1's image is a folder, s2's mask a fifo, s3's image a NaN .npy, s4's
    image a socket."""
    rng = np.random.default_rng(0)
    root = write_folder_dataset(tmp_path / "ds", {f"s{i}": rng.integers(0, 2, (16, 16))
                                                  for i in range(8)})
    (root / "images" / "s1.png").unlink()
    (root / "images" / "s1.png").mkdir()
    (root / "masks" / "s2.png").unlink()
    os.mkfifo(root / "masks" / "s2.png")
    (root / "images" / "s3.png").unlink()
    a = rng.random((16, 16, 3)).astype(np.float32)
    a[0, 0, 0] = np.nan
    np.save(root / "images" / "s3.npy", a)
    (root / "images" / "s4.png").unlink()
    _socket(root / "images" / "s4.png")
    return root


def test_the_audit_names_every_bad_path_and_nan_and_does_not_hang(bad_dataset):
    import seg_hydra
    from seg.train import check_data

    report = check_data(seg_hydra.compose_dict(["data=folder", f"data.root={bad_dataset}",
                                                "data.num_classes=2"]), progress=False)
    errors = "\n".join(p.detail for p in report.errors)
    assert f"{bad_dataset}/images/s1.png: is a folder" in errors
    assert f"{bad_dataset}/masks/s2.png: is a named pipe (fifo)" in errors
    assert f"{bad_dataset}/images/s3.npy: 1 NaN and 0 Inf" in errors
    assert f"{bad_dataset}/images/s4.png: is a socket" in errors
    assert "nan" not in str(report.band_stats)


def test_the_audit_script_exits_1_naming_them_without_a_traceback(bad_dataset, capsys):
    from test_bad_inputs import run_script

    code, text = run_script("check_data.py", ["data=folder", f"data.root={bad_dataset}",
                                              "data.num_classes=2"], capsys)
    assert code == 1 and "Traceback" not in text, text[-3000:]
    for name in ("images/s1.png", "masks/s2.png", "images/s3.npy", "images/s4.png"):
        assert name in text


def test_skip_mode_leaves_out_and_names_every_bad_pair_in_the_pipeline(bad_dataset):
    from seg.data import folder, pipeline

    listing = folder.list_splits(bad_dataset, split="contiguous", val_fraction=0.125)
    skipped = {}
    ds = pipeline.from_pairs(listing.train, on_bad_sample="skip", skipped=skipped,
                             channels=3, table=folder.label_lookup(None), num_classes=2)
    kept = list(ds.as_numpy_iterator())
    assert len(kept) == len(listing.train) - 4
    by_name = {Path(f).name: why for f, why in skipped.items()}
    assert set(by_name) == {"s1.png", "s2.png", "s3.npy", "s4.png"}
    assert "is a folder" in by_name["s1.png"] and "fifo" in by_name["s2.png"]
    assert "NaN" in by_name["s3.npy"] and "socket" in by_name["s4.png"]


def test_error_mode_stops_the_pipeline_naming_the_file(bad_dataset):
    import tensorflow as tf

    from seg.data import folder, pipeline

    pairs = [p for p in folder.list_splits(bad_dataset, split="contiguous").train
             if p.stem == "s1"]
    ds = pipeline.from_pairs(pairs, channels=3, table=folder.label_lookup(None))
    with pytest.raises(tf.errors.OpError, match=r"DataError: .*images/s1.png: is a folder"):
        list(ds.as_numpy_iterator())


def test_a_file_that_vanishes_between_listing_and_reading_is_named(tmp_path):
    from seg.data import folder

    rng = np.random.default_rng(0)
    root = write_folder_dataset(tmp_path / "ds", {f"s{i}": rng.integers(0, 2, (8, 8))
                                                  for i in range(3)})
    listing = folder.list_splits(root, split="contiguous", val_fraction=0.34)
    (root / "masks" / "s0.png").unlink()
    with pytest.raises(folder.DataError, match=r"masks/s0.png: cannot read mask: no such file "
                                               r"\(removed or renamed since the folder"):
        folder.read_pair(listing.train[0], channels=3, table=folder.label_lookup(None))


# --- JSON read back: checked against what seg wrote ------------------------------------------

METRICS = {"val_mean_iou": 0.5, "val_iou_per_class": [0.9, 0.1], "class_names": ["bg", "fg"],
           "epochs_completed": 2, "wall_time_s": 3.0,
           "diagnostics": {"alarms": [{"epoch": 2, "alarm": "constant output: x"}]}}
CONFIG = {"seed": 0, "data": {"name": "shapes", "num_classes": 2, "image_size": 32},
          "trainer": {"epochs": 2, "learning_rate": 0.001}, "decoder": {"name": "upsample"}}

MALFORMED = [  # (file, content, what the message says)
    ("metrics.json", [1, 2], "holds a list"),
    ("metrics.json", "0.5", "holds a text"),
    ("metrics.json", {**METRICS, "val_mean_iou": "0.5"}, "val_mean_iou is a text"),
    ("metrics.json", {**METRICS, "val_iou_per_class": [0.9]}, "1 values for 2 class_names"),
    ("metrics.json", {**METRICS, "class_names": "bg,fg"}, "class_names is a text"),
    ("metrics.json", {**METRICS, "diagnostics": {"alarms": [3]}}, "diagnostics.alarms"),
    ("metrics.json", {k: v for k, v in METRICS.items() if k != "val_mean_iou"},
     "no val_mean_iou"),
    ("metrics.json", json.dumps(METRICS)[:40], "not valid JSON"),
    ("metrics.json", b"\xff\xfe\x00", "not text (UTF-8)"),
    ("config.json", [CONFIG], "holds a list"),
    ("config.json", {**CONFIG, "seed": "0"}, "seed='0'"),
    ("config.json", {**CONFIG, "trainer": 3}, "trainer: a section of keys"),
    ("config.json", {**CONFIG, "data": {"num_classes": 2}}, "data.name"),
    ("config.json", {**CONFIG, "trainer": {"epochs": "two"}}, "trainer.epochs='two'"),
    ("failure.json", [], "holds a list"),
    ("failure.json", {"error": 1, "message": "m", "overrides": []}, "error is a number"),
    ("failure.json", {"error": "E", "message": "m", "overrides": "seed=1"},
     "overrides is a text"),
]


def _write(path: Path, content):
    path.parent.mkdir(parents=True, exist_ok=True)
    if isinstance(content, bytes):
        path.write_bytes(content)
    elif isinstance(content, str) and not content.startswith(('"', "0")):
        path.write_text(content)
    else:
        path.write_text(json.dumps(content))


@pytest.mark.parametrize("name,content,said", MALFORMED,
                         ids=[f"{n} {s}"[:50] for n, _, s in MALFORMED])
def test_a_malformed_json_is_named_and_skipped_by_compare(tmp_path, name, content, said):
    from seg import compare, records

    _write(tmp_path / "good" / "config.json", CONFIG)
    _write(tmp_path / "good" / "metrics.json", METRICS)
    _write(tmp_path / "bad" / "config.json", CONFIG)
    _write(tmp_path / "bad" / "metrics.json", METRICS)
    _write(tmp_path / "bad" / name, content)
    with pytest.raises(records.RecordError) as e:
        records.read(tmp_path / "bad" / name)
    assert str(e.value).startswith(str(tmp_path / "bad" / name)) and said in str(e.value)
    runs = compare.find_runs(tmp_path)
    bad = next(r for r in runs if r.name == "bad")
    assert any(said in p for p in bad.problems), bad.problems
    groups, keys = compare.group_runs(runs)
    compare.markdown(groups, runs)  # no traceback anywhere
    records_ = compare.run_records(runs, keys)
    compare.summary_json(runs)
    assert next(r for r in records_ if r["run"] == "good")["status"] == "ok"
    if bad.status != "ok":
        assert str(tmp_path / "bad" / name) in bad.why


def test_compare_script_names_malformed_files_and_exits_0(tmp_path, capsys):
    from test_bad_inputs import run_script

    _write(tmp_path / "a" / "config.json", CONFIG)
    _write(tmp_path / "a" / "metrics.json", [1, 2])
    _write(tmp_path / "b" / "config.json", CONFIG)
    _write(tmp_path / "b" / "metrics.json", {**METRICS, "val_mean_iou": "0.7"})
    _write(tmp_path / "c" / "config.json", "[1]")
    _write(tmp_path / "c" / "metrics.json", METRICS)
    code, text = run_script("compare.py", [str(tmp_path)], capsys)
    assert code == 0 and "Traceback" not in text, text[-3000:]
    for run in ("a/metrics.json", "b/metrics.json", "c/config.json"):
        assert f"skipped: {tmp_path / run}" in text


@pytest.mark.parametrize("name,content,said", [m for m in MALFORMED if m[0] != "failure.json"],
                         ids=[f"{n} {s}"[:50] for n, _, s in MALFORMED if n != "failure.json"])
def test_evaluate_and_predict_refuse_a_malformed_run_json_naming_it(tmp_path, name, content,
                                                                    said):
    from seg import inference

    _write(tmp_path / name, content)
    with pytest.raises(inference.LoadError) as e:
        inference._read_json(tmp_path / name)
    assert str(tmp_path / name) in str(e.value) and said in str(e.value)


@pytest.mark.parametrize("state,said", [
    ([], "holds a list"), ({"epoch": 1}, "no checkpoint"),
    ({"checkpoint": 5, "epoch": 1, "step_in_epoch": 0, "history": {}, "best": None,
      "best_epoch": None, "callbacks": {}}, "checkpoint is a number"),
    ({"checkpoint": "../../x", "epoch": 1, "step_in_epoch": 0, "history": {}, "best": None,
      "best_epoch": None, "callbacks": {}}, "not a file name"),
    ({"checkpoint": "state-1", "epoch": "1", "step_in_epoch": 0, "history": {}, "best": None,
      "best_epoch": None, "callbacks": {}}, "epoch is a text"),
    ({"checkpoint": "state-1", "epoch": 1, "step_in_epoch": 0, "history": [], "best": None,
      "best_epoch": None, "callbacks": {}}, "history is a list"),
])
def test_a_malformed_resume_state_is_named(tmp_path, state, said):
    from seg import records

    _write(tmp_path / "state-00000001.json", state)
    with pytest.raises(records.RecordError, match=said):
        records.read(tmp_path / "state-00000001.json", "state")


def test_a_malformed_config_json_is_not_compared_on_resume(tmp_path):
    from seg.runfolder import previous_config

    _write(tmp_path / "config.json", [1, 2])
    said = []
    assert previous_config(tmp_path, log=said.append) is None
    assert "holds a list" in said[0] and str(tmp_path / "config.json") in said[0]


# --- plans: names that differ only in dropped letters never replace each other -------------

def _plan_cfg(root):
    return {"data": {"name": "folder", "root": str(root)}}


def test_a_plan_of_other_data_under_the_same_file_name_is_kept_and_the_new_one_named(tmp_path):
    from seg import recipe

    configs = tmp_path / "experiment"
    configs.mkdir()
    first, second = tmp_path / "My Data", tmp_path / "my_data"
    names = []
    for root in (first, second, first, second):
        cfg = _plan_cfg(root)
        identity = recipe.plan_identity(cfg, None)
        name, note = recipe.plan_file(configs, recipe.experiment_name(cfg, None), identity)
        recipe.write_plan(configs / f"{name}.yaml", f"# @package _global_\n"
                          f"{recipe.PLAN_OF}{identity}\n# for {root}\n", identity)
        names.append((name, note))
    assert names[0] == ("plan_my_data", None)
    assert names[1][0].startswith("plan_my_data_") and "holds another plan" in names[1][1]
    assert names[2] == names[0] and names[3][0] == names[1][0]  # a re-plan replaces its own
    assert f"for {first}" in (configs / "plan_my_data.yaml").read_text()
    assert f"for {second}" in (configs / f"{names[1][0]}.yaml").read_text()
    assert sorted(p.name for p in configs.iterdir()) == sorted(
        ["plan_my_data.yaml", f"{names[1][0]}.yaml"])


def test_plan_names_given_that_differ_only_in_dropped_letters_are_kept_apart(tmp_path):
    from seg import recipe

    cfg = _plan_cfg(tmp_path / "data")
    made = []
    for given in ("my-data", "my_data", "My.Data"):
        identity = recipe.plan_identity(cfg, given)
        name, _ = recipe.plan_file(tmp_path, recipe.experiment_name(cfg, given), identity)
        recipe.write_plan(tmp_path / f"{name}.yaml", f"{recipe.PLAN_OF}{identity}\n", identity)
        made.append(name)
    assert len(set(made)) == 3


def test_a_hand_written_experiment_is_never_replaced_by_a_plan(tmp_path):
    from seg import recipe

    (tmp_path / "plan_data.yaml").write_text("# mine\ntrainer:\n  epochs: 3\n")
    identity = recipe.plan_identity(_plan_cfg(tmp_path / "data"), None)
    name, note = recipe.plan_file(tmp_path, "plan_data", identity)
    assert name != "plan_data" and "no plan-of record" in note
    assert (tmp_path / "plan_data.yaml").read_text().startswith("# mine")


def test_a_plan_written_meanwhile_by_another_process_is_refused_not_replaced(tmp_path):
    from seg import recipe

    path = tmp_path / "plan_x.yaml"
    path.write_text(f"{recipe.PLAN_OF}{{\"name\": \"other\"}}\n")
    with pytest.raises(ValueError, match="another plan was written there meanwhile"):
        recipe.write_plan(path, "mine\n", '{"name": "x"}')
    assert "other" in path.read_text() and not list(tmp_path.glob(".*tmp*"))


# --- sweeps: one sweep per folder, its own summary, nothing written into others' folders ---

def _sweep_config(folder, task):
    from omegaconf import OmegaConf

    return OmegaConf.create({"hydra": {"sweep": {"dir": str(folder)},
                                       "overrides": {"task": list(task)}}})


def test_a_second_sweep_into_a_folder_in_use_is_refused_naming_the_first(tmp_path, capsys):
    from seg_hydra.sweep import SweepSummary

    first = SweepSummary()
    first.on_multirun_start(_sweep_config(tmp_path, ["seed=0,1"]))
    try:
        with pytest.raises(SystemExit) as e:
            SweepSummary().on_multirun_start(_sweep_config(tmp_path, ["seed=0,1"]))
        assert e.value.code == 2
        text = capsys.readouterr().err
        assert "in use by another sweep" in text and f"process {os.getpid()}" in text
    finally:
        first.release()
    again = SweepSummary()  # free again once the first ends
    again.on_multirun_start(_sweep_config(tmp_path, ["seed=0,1"]))
    again.release()


def test_a_sweep_of_other_overrides_never_replaces_a_multirun_yaml(tmp_path, capsys):
    from omegaconf import OmegaConf

    from seg_hydra.sweep import SweepSummary

    OmegaConf.save(_sweep_config(tmp_path, ["seed=0,1", "trainer.epochs=2"]),
                   tmp_path / "multirun.yaml")
    before = (tmp_path / "multirun.yaml").read_text()
    with pytest.raises(SystemExit) as e:
        SweepSummary().on_multirun_start(_sweep_config(tmp_path, ["seed=5,6",
                                                                  "trainer.epochs=2"]))
    assert e.value.code == 2
    text = capsys.readouterr().err
    assert "holds another sweep" in text and "seed=0,1 where this one has seed=5,6" in text
    assert (tmp_path / "multirun.yaml").read_text() == before
    same = SweepSummary()  # the same sweep again (a resume) goes on
    same.on_multirun_start(_sweep_config(tmp_path, ["trainer.epochs=2", "seed=0,1"]))
    same.release()
    (tmp_path / "multirun.yaml").write_text("{not: yaml: [")
    with pytest.raises(SystemExit):
        SweepSummary().on_multirun_start(_sweep_config(tmp_path, ["seed=0,1"]))
    assert "multirun.yaml: unreadable" in capsys.readouterr().err


def test_summaries_are_merged_and_a_malformed_one_is_kept_aside(tmp_path, capsys):
    from seg_hydra.sweep import write_summary

    _write(tmp_path / "0_seed=0" / "config.json", CONFIG)
    _write(tmp_path / "0_seed=0" / "metrics.json", METRICS)
    _write(tmp_path / "summary.json", [{"run": "9_gone", "status": "ok", "val_mean_iou": 0.3,
                                       "error": None}])
    write_summary(tmp_path)
    runs = [e["run"] for e in json.loads((tmp_path / "summary.json").read_text())]
    assert runs == ["0_seed=0", "9_gone"]
    (tmp_path / "summary.json").write_text('{"run": 1}')
    text = write_summary(tmp_path)
    assert "kept as summary.json.unreadable" in text
    assert (tmp_path / "summary.json.unreadable").read_text() == '{"run": 1}'


def test_a_busy_job_is_reported_in_its_own_sweep_and_nothing_is_written_into_its_folder(
        tmp_path, capsys):
    from seg.runfolder import RunFolderBusy, RunLock
    from seg_hydra.jobs import _record_failure
    from seg_hydra.sweep import write_summary

    job = tmp_path / "0_seed=0"
    _write(job / "config.json", CONFIG)
    with RunLock(job, log=lambda m: None):  # another process's run, as far as the job knows
        before = sorted((p.name, p.stat().st_mtime_ns) for p in job.iterdir())
        try:
            RunLock(job).acquire()
        except RunFolderBusy as e:
            busy = e
        hc = SimpleNamespace(runtime=SimpleNamespace(output_dir=str(job)), job=SimpleNamespace(
            num=0), overrides=SimpleNamespace(task=["seed=0"]),
            sweep=SimpleNamespace(dir=str(tmp_path)))
        assert np.isnan(_record_failure(busy, None, hc))
        assert sorted((p.name, p.stat().st_mtime_ns) for p in job.iterdir()) == before
        text = write_summary(tmp_path)
    assert "BUSY            0_seed=0" in text and "in use by another run" in text
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert [(e["run"], e["status"]) for e in summary] == [("0_seed=0", "busy")]
    assert not (job / "failure.json").exists() and not (tmp_path / ".busy").exists()


@pytest.mark.slow
def test_a_second_sweep_process_is_refused_while_the_first_holds_the_folder(tmp_path):
    from seg.runfolder import RunLock
    from seg_hydra.sweep import SWEEP_LOCK

    with RunLock(tmp_path, log=lambda m: None, name=SWEEP_LOCK):
        result = subprocess.run(
            [sys.executable, str(ROOT / "scripts" / "train.py"), "-m", "seed=0,1",
             "trainer.epochs=1", f"hydra.sweep.dir={tmp_path}"], cwd=ROOT,
            capture_output=True, text=True, timeout=300)
    text = result.stdout + result.stderr
    assert result.returncode == 2 and "Traceback" not in text, text[-3000:]
    assert "in use by another sweep" in text
    assert sorted(p.name for p in tmp_path.iterdir()) == [SWEEP_LOCK]  # nothing else written


# --- messages that say what is true ---------------------------------------------------------

@pytest.mark.parametrize("args,said", [
    (["~data", "data.root=/x"], "~data deletes the config group data, and data.root sets a key"),
    (["~model", "model.depth=3", "model.norm=batch"], "model.depth, model.norm set a key"),
    (["~trainer.epochs", "trainer.epochs=3"], "~trainer.epochs deletes the key"),
    (["~trainer.epochs"], "cannot be deleted"),
])
def test_a_deleted_group_or_key_is_named_as_deleted(args, said):
    from seg.config import ConfigError
    from seg_hydra.errors import deleted_then_used

    assert said in deleted_then_used(args)
    import seg_hydra

    with pytest.raises(ConfigError, match="delete"):
        seg_hydra.compose_dict(args)


def test_deleting_an_opt_in_group_alone_is_left_to_hydra():
    from seg_hydra.errors import deleted_then_used

    assert deleted_then_used(["+decoder=deconv", "~decoder"]) is None
    assert deleted_then_used(["data.root=/x", "seed=1"]) is None


@pytest.mark.parametrize("key,value,said", [
    ("trainer.verbose", "1", "'1' is a text (it was quoted), not 1: write 1 without quotes"),
    ("trainer.verbose", "2", "write 2 without quotes"),
    ("trainer.jit_compile", "true", "write true without quotes"),
    ("trainer.verbose", "7", "use one of auto, 0, 1, 2"),
])
def test_a_quoted_number_is_refused_saying_it_is_a_text(compose, key, value, said):
    from seg import config

    cfg = compose()
    section, name = key.split(".")
    cfg[section][name] = value
    assert any(p.startswith(f"{key}={value!r}: ") and said in p
               for p in config.problems(cfg)), \
        config.problems(cfg)


def test_a_run_folder_that_cannot_be_written_is_refused_before_hydra_logs(tmp_path,
                                                                          monkeypatch):
    from seg_hydra.errors import run_folder_problem

    run = tmp_path / "run"
    run.mkdir()
    (run / "config.json").write_text("{}")
    real = os.access
    monkeypatch.setattr(os, "access", lambda p, m: False if Path(p) == run else real(p, m))
    said = run_folder_problem([f"hydra.run.dir={run}"])
    assert f"hydra.run.dir={run}: {run} is not writable" in said and "It holds a run" in said
    assert run_folder_problem(["-m", f"hydra.sweep.dir={run}/sweep"]).startswith(
        f"hydra.sweep.dir={run}/sweep: {run} is not writable")
    os.symlink(tmp_path / "gone", tmp_path / "link")
    assert "dangling symbolic link" in run_folder_problem([f"hydra.run.dir={tmp_path}/link"])
    assert run_folder_problem([f"hydra.run.dir={tmp_path}/new/deeper"]) is None
    assert run_folder_problem(["hydra.run.dir=${now:%H}"]) is None


def test_a_run_folder_that_vanishes_mid_run_is_named_as_vanished(tmp_path):
    from seg import checkpoints

    run = tmp_path / "run"
    (run / "checkpoints").mkdir(parents=True)
    checkpoints.write_json(run / "metrics.json", {"a": 1})
    import shutil

    shutil.rmtree(run)
    with pytest.raises(checkpoints.CheckpointError, match="the run folder vanished"):
        checkpoints.write_json(run / "metrics.json", {"a": 1})
    with pytest.raises(checkpoints.CheckpointError, match=f"{run}: the run folder vanished"):
        checkpoints.save_keras(None, run / "checkpoints" / "best.keras", check_finite=False)
    assert not run.exists()  # not made again


@pytest.mark.parametrize("make,said", [
    (_directory, "is a folder, not a split list file"),
    (_fifo, "is a named pipe (fifo), not a split list file"),
    (lambda p: p.write_bytes(b"\xff\xfe\x00"), "not text (UTF-8)"),
    (_dangling, "dangling symbolic link"),
])
def test_a_split_list_that_is_no_readable_file_is_named(tmp_path, make, said):
    from seg.data import DataError, folder

    rng = np.random.default_rng(0)
    root = write_folder_dataset(tmp_path / "ds", {f"s{i}": rng.integers(0, 2, (8, 8))
                                                  for i in range(3)})
    make(root / "train.txt")
    (root / "val.txt").write_text("s2\n")
    with pytest.raises(DataError) as e:
        folder.list_splits(root, train_list="train.txt", val_list="val.txt")
    assert str(e.value).startswith(f"{root / 'train.txt'}: ") and said in str(e.value)


def test_predict_names_a_fifo_or_socket_among_its_inputs():
    import runpy

    not_a_file = runpy.run_path(str(ROOT / "scripts" / "predict.py"))["_not_a_file"]
    import tempfile

    with tempfile.TemporaryDirectory() as folder:
        os.mkfifo(Path(folder) / "f.png")
        _socket(Path(folder) / "s.png")
        assert not_a_file(Path(folder) / "f.png").endswith("is a named pipe (fifo), not an "
                                                           "image file (move it out of the data "
                                                           "folder, or put the file there)")
        assert "is a socket" in not_a_file(Path(folder) / "s.png")


def test_compare_on_a_folder_it_cannot_write_is_refused_before_the_work(tmp_path, capsys,
                                                                        monkeypatch):
    from test_bad_inputs import run_script

    _write(tmp_path / "runs" / "a" / "config.json", CONFIG)
    _write(tmp_path / "runs" / "a" / "metrics.json", METRICS)
    real = os.access
    monkeypatch.setattr(os, "access", lambda p, m: False if Path(p) == tmp_path / "runs"
                        else real(p, m))
    code, text = run_script("compare.py", [str(tmp_path / "runs"), "--no-picture"], capsys)
    assert code == 2 and "Traceback" not in text and "give --csv" in text, text[-2000:]
    code, text = run_script("compare.py", [str(tmp_path / "runs"), "--no-picture", "--csv",
                                           str(tmp_path / "out" / "c.csv")], capsys)
    assert code == 0, text[-2000:]
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["c.csv", "c_runs.csv",
                                                                     "compare.md"]


def test_a_lock_record_that_is_not_a_mapping_is_described_not_a_traceback(tmp_path):
    import fcntl

    from seg.runfolder import RunFolderBusy, RunLock

    (tmp_path / ".lock").write_text("[1, 2]")
    fd = os.open(tmp_path / ".lock", os.O_RDWR)
    fcntl.flock(fd, fcntl.LOCK_EX)
    try:
        with pytest.raises(RunFolderBusy, match="unreadable lock record"):
            RunLock(tmp_path).acquire()
    finally:
        os.close(fd)


TRAIN_CASES_3 = [  # train.py's refusals of this round, as the command line gives them
    (['trainer.verbose="1"'], "'1' is a text (it was quoted), not 1: write 1 without quotes"),
    (["trainer.jit_compile='false'"], "write false without quotes"),
    (["~data", "data.root=/x"], "~data deletes the config group data"),
    (["~model.depth"], "~model.depth: model.depth is a key of every run's config"),
    (["~loss.name", "loss.name=dice"], "~loss.name deletes the key loss.name"),
    (["hydra.run.dir={tmp}/link"], "dangling symbolic link"),
]


@pytest.mark.parametrize("args,expected", TRAIN_CASES_3,
                         ids=[" ".join(a)[:60] for a, _ in TRAIN_CASES_3])
def test_train_refuses_round_3(capsys, tmp_path, args, expected):
    from test_bad_inputs import T, _assert_refused, run_script

    os.symlink(tmp_path / "gone", tmp_path / "link")
    args = [a.format(tmp=tmp_path) for a in args]
    has_dir = any(a.startswith("hydra.run.dir=") for a in args)
    code, text = run_script("train.py", T + args + ([] if has_dir else
                                                    [f"hydra.run.dir={tmp_path / 'run'}"]),
                            capsys)
    _assert_refused(code, text, expected)
    assert not (tmp_path / "run").exists() and not (tmp_path / "gone").exists()
