"""scripts/board.py's log folder (seg.board): runs ranked, named apart, every key a column,
one experiment config; the runs themselves untouched. The browser check is in
tests/test_tensorboard_ui.py."""

import json
import subprocess
import sys

import pytest
import tensorflow as tf
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
from tensorboard.plugins.hparams import metadata as hp_metadata

from conftest import ROOT
from seg import board, hparams
from seg.compare import find_runs


def _run(folder, compose, overrides, miou):
    """A finished run as train.py leaves it: config.json, metrics.json, .hydra/overrides.yaml,
    tb/validation with seg's hparams files and a scalar of Keras'."""
    cfg = compose(*overrides)
    folder.mkdir(parents=True)
    (folder / "config.json").write_text(json.dumps(cfg))
    (folder / "metrics.json").write_text(json.dumps(
        {"val_mean_iou": miou, "class_names": ["background", "shape"]}))
    (folder / ".hydra").mkdir()
    (folder / ".hydra" / "overrides.yaml").write_text(
        "".join(f"- {o}\n" for o in [*overrides, "hydra.run.dir=x"]))
    validation = folder / "tb" / "validation"
    hparams.log_start(validation, hparams.hparams_of(cfg, overrides),
                      hparams.Trial(folder.name), ["background", "shape"])
    with tf.summary.create_file_writer(str(validation)).as_default():
        tf.summary.scalar("IoU/mean", miou, step=1)
    return folder


@pytest.fixture
def runs(tmp_path, compose):
    root = tmp_path / "outputs"
    _run(root / "sweep" / "0_decoder=upsample", compose, ["+decoder=upsample", "seed=0"], 0.6)
    _run(root / "sweep" / "1_decoder=deconv", compose, ["+decoder=deconv", "seed=0"], 0.8)
    _run(root / "yellow", compose, ["+experiment=yellow_image", "diagnostics.preflight=warn"],
         0.1)
    (root / "refused").mkdir()  # a refused run: its folder, without a result
    (root / "refused" / "config.json").write_text(json.dumps(compose()))
    return root


def _tags(folder):
    acc = EventAccumulator(str(folder))
    acc.Reload()
    return acc


def test_board_ranks_names_and_links_the_runs(runs, tmp_path):
    before = sorted((p, p.stat().st_size) for p in runs.rglob("*") if p.is_file())
    entries = board.build(find_runs(runs), tmp_path / "board")
    names = [e.name for e in entries]
    # best first, named by rank and what tells them apart (logging/diagnostics keys aside)
    assert names[:3] == ["01 deconv seed=0", "02 upsample seed=0", "03 yellow_image"], names
    assert len(names) == 3  # the refused run has no tb/ folder: listed by the script only
    assert len(set(names)) == len(names)
    assert [e.run.path.name for e in entries[:3]] == ["1_decoder=deconv", "0_decoder=upsample",
                                                      "yellow"]
    # the runs are not touched
    assert sorted((p, p.stat().st_size) for p in runs.rglob("*") if p.is_file()) == before
    experiments, sessions = [], {}
    for entry in entries[:3]:
        folder = tmp_path / "board" / entry.name / "validation"
        links = list(folder.glob("events.*"))
        assert any(p.is_symlink() for p in links) and any(not p.is_symlink() for p in links)
        acc = _tags(folder)
        assert "IoU/mean" in acc.Tags()["tensors"]  # the run's own curves, through the links
        content = acc.PluginTagToContent("hparams")
        if hp_metadata.EXPERIMENT_TAG in content:
            experiments.append(entry.name)
        sessions[entry.name] = hp_metadata.parse_session_start_info_plugin_data(
            content[hp_metadata.SESSION_START_INFO_TAG])
    # one experiment config for the whole board (the runs' own ones left out)
    assert experiments == ["01 deconv seed=0"]
    # every key of every run's config, read from config.json; the trial named like the row
    yellow = sessions["03 yellow_image"]
    assert yellow.group_name == "03 yellow_image"
    assert yellow.hparams["model.head_activation"].string_value == "sigmoid"
    assert yellow.hparams["experiment"].string_value == "yellow_image"
    assert {"data.num_train", "trainer.weight_decay", "loss.from_logits"} <= set(yellow.hparams)
    experiment = hp_metadata.parse_experiment_plugin_data(
        _tags(tmp_path / "board" / entries[0].name / "validation")
        .PluginTagToContent("hparams")[hp_metadata.EXPERIMENT_TAG])
    shown = {h.name for h in experiment.hparam_infos if h.differs}
    # the head and loss keys that differ lead (they decide a collapse), then the decoder
    assert shown == {"model.head_activation", "model.out_channels", "loss.name",
                     "loss.from_logits", "decoder.name"}, shown
    assert experiment.metric_infos[0].name.tag == "hparams/val_mean_iou"


def test_ticked_never_the_seed_and_at_most_five():
    differs = {"seed", "run", "decoder.name", "trainer.learning_rate", "a.b", "c.d", "e.f", "g"}
    assert board.ticked(differs, {"trainer.learning_rate"}) == {
        "decoder.name", "trainer.learning_rate", "a.b", "c.d", "e.f"}


def _script(*args):
    return subprocess.run([sys.executable, "scripts/board.py", *map(str, args)], cwd=ROOT,
                          capture_output=True, text=True, timeout=120)


@pytest.mark.slow
def test_board_script_refuses_with_the_folder_named(runs, tmp_path):
    done = _script(tmp_path / "nowhere", "--no-serve")
    assert done.returncode == 2 and "nowhere" in done.stderr and "Traceback" not in done.stderr
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "notes.txt").write_text("keep me")
    done = _script(runs, "--no-serve", "--logdir", mine)
    assert done.returncode == 2 and "--logdir" in done.stderr and "Traceback" not in done.stderr
    assert (mine / "notes.txt").read_text() == "keep me"
    done = _script(runs, "--no-serve", "--logdir", tmp_path / "kept")
    assert done.returncode == 0, done.stderr[-2000:]
    assert "01 deconv seed=0" in done.stdout.splitlines()[1]
    assert "not on the board (no tb/ folder): refused" in done.stdout
    done = _script(runs, "--no-serve", "--logdir", tmp_path / "kept")  # a board is remade
    assert done.returncode == 0 and (tmp_path / "kept" / "01 deconv seed=0").is_dir()
