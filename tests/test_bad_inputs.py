"""Every bad input is refused: exit code 2, the key, value or file named, no traceback.

One table for the scripts users run. Each case runs the script's own `__main__` in this
process (the same code path as the command line, in a fraction of the time); a few cases also
run as real processes at the end, to prove the path through the interpreter.
"""

import os
import runpy
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from conftest import ROOT, write_folder_dataset

# one worker runs the module, so its module fixture is built once
pytestmark = pytest.mark.xdist_group("bad_inputs")


T = ["trainer.epochs=1", "trainer.steps_per_epoch=2", "trainer.batch_size=2",
     "data.image_size=32", "data.num_train=8", "data.num_val=4", "trainer.verbose=0"]
FOLDER = ["data=folder", "data.num_classes=2", "data.image_size=32", "trainer.epochs=1",
          "trainer.batch_size=2", "trainer.verbose=0"]

# (script, arguments, a text the message must hold); {name} is a fixture path below
TRAIN_CASES = [
    (["trainer.epochs=abc"], "trainer.epochs"),
    (["trainer.epochs=0"], "trainer.epochs=0"),
    (["trainer.batch_size=0"], "trainer.batch_size=0"),
    (["trainer.learning_rate=-1"], "trainer.learning_rate=-1"),
    (["trainer.learning_rate=abc"], "trainer.learning_rate"),
    (["trainer.momentum=1.5"], "trainer.momentum=1.5"),
    (["trainer.optimizer=nadam"], "trainer.optimizer='nadam'"),
    (["trainer.verbose=7"], "trainer.verbose=7"),
    (["trainer.steps_per_epoch=0"], "trainer.steps_per_epoch=0"),
    (["data.image_size=0"], "data.image_size=0"),
    (["data.channels=0"], "data.channels=0"),
    (["data.channels=65"], "data.channels=65"),
    (["model.encoder=hub:"], "model.encoder='hub:'"),
    (["model.encoder_args=7"], "model.encoder_args=7"),
    (["model.encoder=hub:ResNetBackbone", "model.encoder_weights=imagenet"],
     "model.encoder_weights='imagenet'"),
    (["data.num_classes=9"], "data.num_classes=9"),
    (["data.ignore_index=1"], "data.ignore_index=1"),
    (["data.scale_range=[2.0,1.0]"], "data.scale_range"),
    (["seed=abc"], "seed"),
    (["seed=-1"], "seed=-1"),
    (["model.norm=bn"], "model.norm='bn'"),
    (["model.depth=0"], "model.depth=0"),
    (["model.depth=9"], "model.depth"),
    (["model.dropout=1.0"], "model.dropout=1.0"),
    (["model.out_channels=3"], "model.out_channels=3"),
    (["model.head_activation=relu"], "model.head_activation='relu'"),
    (["model.encoder=vgg99"], "model.encoder='vgg99'"),
    (["model.encoder_weights=/no/such/weights.h5"], "/no/such/weights.h5"),
    (["loss.class_weights=[1,2]"], "loss.class_weights"),
    (["loss.class_weights=[1,2,-3,4]"], "loss.class_weights"),
    (["loss.name=mse"], "loss.name='mse'"),
    (["loss.focal_gamma=-1"], "loss.focal_gamma=-1"),
    (["decoder.name=transposed"], "decoder.name='transposed'"),
    (["+decoder=deconv", "decoder.kernel_size=0"], "decoder.kernel_size=0"),
    (["diagnostics.preflight=maybe"], "diagnostics.preflight='maybe'"),
    (["diagnostics.constant_share=2"], "diagnostics.constant_share=2"),
    (["logging.num_panels=0"], "logging.num_panels=0"),
    (["logging.panels_every=-1"], "logging.panels_every=-1"),
    (["trainer.epoch=3"], "epoch"),                        # an unknown key
    (["+trainer.foo=1"], "foo"),                           # an unknown key, appended
    (["+decoder=pixel"], "decoder/pixel"),                 # an unknown group option
    (["data=nope"], "data/nope"),
    (["data.label_map=abc"], "label_map"),                 # not a key of the built-in data
    (["hydra.run.dir={file}"], "{file}"),                  # the run folder is a file
    (["hydra.run.dir={tmp}/" + "x" * 300], "File name too long"),
    (["hydra.run.dir=/proc/1/seg-run"], "/proc/1/seg-run"),
    (["seed=4294967296"], "seed=4294967296"),
    (["trainer.epochs=99999999999999999999999"], "trainer.epochs"),
    (["model.activation=notanactivation"], "model.activation='notanactivation'"),
    (["trainer.cpu_devices=4096"], "trainer.cpu_devices=4096"),
    (["trainer.steps_per_execution=1000"], "trainer.steps_per_execution=1000"),
    (["trainer.unfreeze_encoder_after=1"], "model.freeze_encoder=true"),
    (["data.elastic_sigma=1e9"], "data.elastic_sigma"),
    (["model.encoder=mobilenet_v2", "model.encoder_weights={file}"],
     "cannot load the mobilenet_v2 weights"),
    (["hydra.run.dir={tmp}/a[1]"], "hydra.run.dir={tmp}/a[1]"),  # not Hydra's grammar
    (["hydra.run.dir='{tmp}/a[1]'"], "file pattern"),      # TensorFlow would glob it
]
FOLDER_CASES = [
    ([], "data.root"),                                     # a missing mandatory value
    (["data.root={tmp}/missing"], "{tmp}/missing"),
    (["data.root={ds}", "data.label_map=abc"], "data.label_map"),
    (["data.root={ds}", "data.label_map={{0: 7}}"], "data.label_map"),
    (["data.root={ds}", "data.class_names=[a,b,c]"], "data.class_names"),
    (["data.root={ds}", "data.val_fraction=1.5"], "data.val_fraction=1.5"),
    (["data.root={ds}", "data.split=stratified"], "data.split='stratified'"),
    (["data.root={ds}", "data.on_bad_sample=ignore"], "data.on_bad_sample='ignore'"),
    (["data.root={dangling}"], "dangling symbolic link"),  # refused by the preflight's audit
    (["data.root="], "data.root=''"),
    (["data.root={labels7}", "diagnostics.preflight=off"], "mask values [7]"),
    (["data.root={void}"], "all void"),
    (["data.root={ds}", "data.band_stats=[[1.0],[0.0]]"], "data.band_stats"),
    (["data.root={ds}", "data.channels=4"], "data.channels=4"),  # RGB PNGs are not 4 bands
]
INFERENCE_CASES = [
    ("predict.py", ["{run}", "{images}", "--out", "{tmp}/p", "--overlap", "1.0"], "--overlap"),
    ("predict.py", ["{run}", "{images}", "--out", "{tmp}/p", "--overlap", "-1"], "--overlap"),
    ("predict.py", ["{run}", "{images}", "--out", "{tmp}/p", "--batch-size", "0"],
     "--batch-size"),
    ("predict.py", ["{run}", "{images}", "--out", "{tmp}/p", "--tile", "-1"], "--tile"),
    ("predict.py", ["{run}", "{images}", "--out", "{tmp}/p", "--alpha", "2"], "--alpha"),
    ("predict.py", ["{run}", "{images}", "--out", "{file}"], "{file}"),
    ("predict.py", ["{run}", "{link}", "--out", "{tmp}/p"], "dangling symbolic link"),
    ("predict.py", ["{run}", "{tmp}/none.png", "--out", "{tmp}/p"], "{tmp}/none.png"),
    ("predict.py", ["{run}", "{file}", "--out", "{tmp}/p"], "unsupported extension"),
    ("predict.py", ["{tmp}/no-run", "{images}", "--out", "{tmp}/p"], "{tmp}/no-run"),
    ("predict.py", ["{truncated}", "{images}", "--out", "{tmp}/p"], "truncated"),
    ("predict.py", ["{badjson}", "{images}", "--out", "{tmp}/p"], "config.json"),
    ("predict.py", ["{run}", "{images}", "--out", "{images}/out"], "inside the input folder"),
    ("predict.py", ["{run}", "{pc}/a.png", "{pc}/a_mask.png", "--out", "{pc}"],
     "would be overwritten"),
    ("evaluate.py", ["{run}", "data.num_classes=3"], "data.num_classes=3"),
    ("evaluate.py", ["{run}", "data.image_size=abc"], "data.image_size"),
    ("evaluate.py", ["{run}", "data.image_size=0"], "data.image_size=0"),
    ("evaluate.py", ["{run}", "trainer.nope=1"], "nope"),
    ("evaluate.py", ["{run}", "model.depth=4"], "data.* overrides only"),
    ("evaluate.py", ["{run}", "data=folder"], "data.* overrides only"),
    ("evaluate.py", ["{run}", "--out", "{file}"], "{file}"),
    ("evaluate.py", ["{run}", "--overlap", "1"], "--overlap"),
    ("evaluate.py", ["{run}", "--worst", "-2"], "--worst"),
    ("evaluate.py", ["{truncated}"], "truncated"),
    ("evaluate.py", ["{badjson}"], "config.json"),
    ("export.py", ["{run}", "--out", "{file}"], "{file}"),
    ("export.py", ["{tmp}/no-run"], "{tmp}/no-run"),
    ("export.py", ["{run}", "--out", "{file}/sub"], "is a file"),
    ("compare.py", ["{run}", "--images", "-1"], "--images"),
    ("compare.py", ["{file}"], "a file, not a folder"),
    ("diagnose.py", ["--model", "{truncated}"], "not a usable .keras file"),
    ("check_data.py", ["data=folder", "data.num_classes=2", "data.root={tmp}/missing"],
     "{tmp}/missing"),
    ("check_data.py", ["data=folder", "data.root={ds}", "data.num_classes=0"],
     "data.num_classes=0"),
    ("diagnose.py", ["trainer.epochs=0"], "trainer.epochs=0"),
    ("diagnose.py", ["model.norm=bn"], "model.norm='bn'"),
    ("diagnose.py", ["--model", "{tmp}/none.keras"], "{tmp}/none.keras"),
]


@pytest.fixture(scope="module")
def places(tmp_path_factory):
    """The paths the cases name: datasets, a trained run, broken copies of it."""
    base = tmp_path_factory.mktemp("bad_inputs")
    rng = np.random.default_rng(0)
    masks = {f"s{i}": rng.integers(0, 2, (40, 40)) for i in range(6)}
    ds = write_folder_dataset(base / "ds", masks)
    dangling = write_folder_dataset(base / "dangling", masks)
    for sub in ("images", "masks"):
        os.symlink(base / "gone.png", dangling / sub / "s9.png")
    void = write_folder_dataset(base / "void", {k: np.full_like(m, 255) for k, m in masks.items()})
    labels7 = write_folder_dataset(base / "labels7", {**masks, "s0": np.full((40, 40), 7)})
    pc = write_folder_dataset(base / "pc", {"a": masks["s0"]})
    (pc / "a.png").write_bytes((pc / "images" / "a.png").read_bytes())
    (pc / "a_mask.png").write_bytes((pc / "masks" / "a.png").read_bytes())
    (base / "a.txt").write_text("not an image")
    os.symlink(base / "gone.png", base / "link.png")

    from seg.train import run
    import seg_hydra

    run_dir = base / "run"
    run(seg_hydra.compose_dict(T), run_dir)
    truncated = base / "truncated.keras"
    data = (run_dir / "checkpoints" / "best.keras").read_bytes()
    truncated.write_bytes(data[: len(data) // 2])
    badjson = base / "badjson"
    (badjson / "checkpoints").mkdir(parents=True)
    (badjson / "checkpoints" / "best.keras").write_bytes(data)
    (badjson / "config.json").write_text("{not json")
    return {"tmp": base, "ds": ds, "dangling": dangling, "void": void, "file": base / "a.txt",
            "labels7": labels7, "pc": pc,
            "link": base / "link.png", "run": run_dir, "images": ds / "images",
            "truncated": truncated, "badjson": badjson}


def run_script(script: str, args: list[str], capsys) -> tuple[int, str]:
    """A script's __main__ in this process: (exit code, what it printed)."""
    argv = sys.argv
    if script == "train.py":  # Hydra's log handlers would outlive this test's captured streams
        args = [*args, "hydra/job_logging=none", "hydra/hydra_logging=none"]
    sys.argv = [str(ROOT / "scripts" / script), *args]
    try:
        runpy.run_path(str(ROOT / "scripts" / script), run_name="__main__")
        code = 0
    except SystemExit as e:
        code = e.code if isinstance(e.code, int) else (0 if e.code is None else 1)
    finally:
        sys.argv = argv
    out = capsys.readouterr()
    return code, out.out + out.err


def _fill(items, places):
    return [str(a).format(**places) for a in items]


def _assert_refused(code, text, expected):
    assert code == 2, text[-3000:]
    assert expected in text, text[-3000:]
    assert "Traceback" not in text, text[-3000:]


@pytest.mark.parametrize("args,expected", TRAIN_CASES, ids=[" ".join(a)[:60] for a, _ in
                                                            TRAIN_CASES])
def test_train_refuses(places, capsys, tmp_path, args, expected):
    args = _fill(args, {**places, "tmp": tmp_path})
    run_dir = tmp_path / "run"
    has_dir = any(a.startswith("hydra.run.dir=") for a in args)
    code, text = run_script("train.py", T + args + ([] if has_dir else
                                                    [f"hydra.run.dir={run_dir}"]), capsys)
    _assert_refused(code, text, expected.format(**{**places, "tmp": tmp_path}))
    assert not run_dir.exists(), "a refused run leaves no run folder behind"


@pytest.mark.parametrize("args,expected", FOLDER_CASES, ids=[" ".join(a)[:60] for a, _ in
                                                             FOLDER_CASES])
def test_train_refuses_bad_folder_data(places, capsys, tmp_path, args, expected):
    args = _fill(args, places)
    code, text = run_script("train.py", FOLDER + args + [f"hydra.run.dir={tmp_path / 'run'}"],
                            capsys)
    _assert_refused(code, text, expected.format(**places))


@pytest.mark.parametrize("script,args,expected", INFERENCE_CASES,
                         ids=[f"{s} {' '.join(a[1:])}"[:60] for s, a, _ in INFERENCE_CASES])
def test_scripts_refuse(places, capsys, script, args, expected):
    code, text = run_script(script, _fill(args, places), capsys)
    _assert_refused(code, text, expected.format(**places))


def test_predict_names_every_file_it_cannot_read_and_predicts_the_rest(places, capsys, tmp_path):
    images = tmp_path / "in"
    images.mkdir()
    for f in sorted(Path(places["images"]).iterdir())[:2]:
        (images / f.name).write_bytes(f.read_bytes())
    os.symlink(tmp_path / "gone.png", images / "dangling.png")
    (images / "notes.txt").write_text("x")
    code, text = run_script("predict.py", [str(places["run"]), str(images), "--out",
                                           str(tmp_path / "out")], capsys)
    assert code == 1, text[-3000:]  # some files could not be read
    assert "dangling.png: a dangling symbolic link" in text
    assert "notes.txt: unsupported extension '.txt'" in text
    assert len(list((tmp_path / "out").glob("*_mask.png"))) == 2


def test_the_audit_calls_an_all_void_dataset_an_error_and_names_unsupported_files(places,
                                                                                  tmp_path):
    import seg_hydra
    from seg.train import check_data

    report = check_data(seg_hydra.compose_dict(["data=folder", f"data.root={places['void']}",
                                             "data.num_classes=2"]), progress=False)
    assert any(p.kind == "all void" for p in report.errors), report.text()
    (Path(places["ds"]) / "masks" / "README.md").write_text("x")
    try:
        report = check_data(seg_hydra.compose_dict(["data=folder", f"data.root={places['ds']}",
                                                 "data.num_classes=2"]), progress=False)
    finally:
        (Path(places["ds"]) / "masks" / "README.md").unlink()
    assert not report.errors
    assert any(p.kind == "unsupported files" and "README.md" in p.detail
               for p in report.problems)


@pytest.mark.slow
def test_a_bad_file_met_during_training_is_named_by_seg(tmp_path, compose):
    """With the preflight off, the file is met inside tf.data: still seg's message."""
    from seg.data import DataError
    from seg.train import run

    rng = np.random.default_rng(0)
    ds = write_folder_dataset(tmp_path / "ds", {f"s{i}": rng.integers(0, 2, (40, 40))
                                                for i in range(6)})
    broken = sorted((ds / "images").iterdir())[0]
    broken.write_bytes(broken.read_bytes()[:100])
    cfg = compose(*FOLDER, f"data.root={ds}", "diagnostics.preflight=off")
    with pytest.raises(DataError, match=f"{broken}: cannot decode image"):
        run(cfg, tmp_path / "run")


@pytest.mark.slow
def test_on_bad_sample_skip_skips_dangling_links(places, compose, tmp_path):
    from seg.train import run

    metrics = run(compose(*FOLDER, f"data.root={places['dangling']}", "data.on_bad_sample=skip",
                          "trainer.steps_per_epoch=1"), tmp_path / "run")
    assert any("s9.png" in s["file"] for s in metrics["skipped_samples"])


@pytest.mark.slow
@pytest.mark.parametrize("args,expected", [
    (["trainer.epochs=abc"], "trainer.epochs"),
    (["model.norm=bn"], "model.norm='bn'"),
    (["+decoder=pixel"], "decoder/pixel"),
])
def test_refusals_as_real_processes(tmp_path, args, expected):
    result = subprocess.run([sys.executable, str(ROOT / "scripts" / "train.py"), *T, *args,
                             f"hydra.run.dir={tmp_path / 'run'}"], cwd=ROOT,
                            capture_output=True, text=True, timeout=300)
    _assert_refused(result.returncode, result.stdout + result.stderr, expected)
    assert not (tmp_path / "run").exists()


def test_every_yaml_key_is_in_the_schema_and_every_schema_key_in_the_yaml():
    """The schema (seg/config.py) and configs/*.yaml describe the same tree."""
    import dataclasses

    import yaml

    from seg import config

    tree = yaml.safe_load((ROOT / "configs" / "train.yaml").read_text())
    for section, schema in config.SCHEMAS.items():
        assert set(tree[section]) == {f.name for f in dataclasses.fields(schema)}, section
    for path in (ROOT / "configs" / "data").glob("*.yaml"):
        data = {k: v for k, v in yaml.safe_load(path.read_text()).items() if k != "defaults"}
        schema = config.DATA[data["name"]]
        assert set(data) == {f.name for f in dataclasses.fields(schema)}, path.name
    assert sorted(config.SECTIONS) == sorted(["data"] + [k for k in tree
                                                    if k not in ("defaults", "hydra")])


def test_an_empty_run_folder_is_refused_and_nothing_is_written_here(capsys, tmp_path,
                                                                     monkeypatch):
    monkeypatch.chdir(tmp_path)
    code, text = run_script("train.py", T + ["hydra.run.dir="], capsys)
    _assert_refused(code, text, "hydra.run.dir is empty")
    assert list(tmp_path.iterdir()) == []


@pytest.mark.slow
def test_out_of_range_labels_are_skipped_with_on_bad_sample_skip(places, compose, tmp_path):
    from seg.train import run

    metrics = run(compose(*FOLDER, f"data.root={places['labels7']}", "data.on_bad_sample=skip",
                          "diagnostics.preflight=off", "trainer.steps_per_epoch=1"),
                  tmp_path / "run")
    assert [s["file"].endswith("s0.png") for s in metrics["skipped_samples"]] == [True]
    assert "mask values [7]" in metrics["skipped_samples"][0]["reason"]
