"""One run per folder, nothing lost: the lock, resume=false, refused resumes, signals in every
phase (seg/runfolder.py and the phases of seg.train.run)."""

import hashlib
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from conftest import ROOT

SMALL = ["data.num_train=32", "data.num_val=8", "data.image_size=32", "trainer.batch_size=8",
         "logging.num_panels=2", "trainer.verbose=2"]


def _digests(folder: Path) -> dict[str, str]:
    """Every file under folder (the lock's record aside) -> its content's hash."""
    return {str(p.relative_to(folder)): hashlib.sha1(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file() and p.name != ".lock"}


def _weights(path):
    import keras

    return [w.numpy() for w in keras.saving.load_model(path, safe_mode=True).weights]


def test_the_lock_refuses_a_second_holder_naming_it_and_takes_over_a_dead_ones(tmp_path):
    from seg.runfolder import RunFolderBusy, RunLock

    said = []
    first = RunLock(tmp_path, log=said.append).acquire()
    with pytest.raises(RunFolderBusy, match=f"in use by another run: process {os.getpid()}"):
        RunLock(tmp_path).acquire()
    first.release()
    assert (tmp_path / ".lock").read_text() == ""  # free: an empty record
    with RunLock(tmp_path, log=said.append):
        pass
    assert said == []  # a clean hand-over says nothing
    # a holder killed with -9 leaves its record, and the kernel has freed its lock
    (tmp_path / ".lock").write_text(json.dumps({"pid": 999999, "host": "gone", "started": "then",
                                                "command": "train.py"}))
    with RunLock(tmp_path, log=said.append):
        record = json.loads((tmp_path / ".lock").read_text())
    assert record["pid"] == os.getpid()
    assert len(said) == 1 and "taking over the run folder from process 999999" in said[0]


def _start(run_dir, *overrides):
    return subprocess.Popen(
        [sys.executable, str(ROOT / "scripts" / "train.py"), *SMALL, *overrides,
         f"hydra.run.dir={run_dir}"], cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
        text=True)


def _train_to_end(run_dir, *overrides) -> tuple[int, str]:
    """scripts/train.py run to its end: (exit code, stdout and stderr)."""
    done = subprocess.run(
        [sys.executable, str(ROOT / "scripts" / "train.py"), *SMALL, *overrides,
         f"hydra.run.dir={run_dir}"], cwd=ROOT, capture_output=True, text=True, timeout=600)
    return done.returncode, done.stdout + done.stderr


def _wait_for(proc, marker: str, timeout: float = 240) -> list[str]:
    """Lines of proc's output up to the first holding marker."""
    lines, end = [], time.time() + timeout
    for line in proc.stdout:
        lines.append(line)
        if marker in line or time.time() > end:
            break
    assert proc.poll() is None, "".join(lines)[-3000:]
    return lines


@pytest.mark.slow
def test_two_processes_one_folder_then_kill_9_of_the_holder_and_a_new_start(tmp_path):
    run_dir = tmp_path / "run"
    holder = _start(run_dir, "trainer.epochs=40", "trainer.steps_per_epoch=6")
    _wait_for(holder, "Epoch 2/40")
    code, text = _train_to_end(run_dir, "trainer.epochs=40", "trainer.steps_per_epoch=6")
    assert code == 2, text[-3000:]
    assert f"in use by another run: process {holder.pid}" in text and "Traceback" not in text
    assert "in use by another run" not in (run_dir / "train.log").read_text()  # the run's log
    holder.kill()  # kill -9: no chance to release anything
    holder.wait()
    holder.stdout.close()
    code, text = _train_to_end(run_dir, "trainer.epochs=1", "trainer.steps_per_epoch=6")
    assert code == 0, text[-3000:]
    assert f"taking over the run folder from process {holder.pid}" in text
    assert (run_dir / "metrics.json").is_file() and (run_dir / ".lock").read_text() == ""


@pytest.mark.slow
def test_sigterm_in_the_last_epoch_exits_75_and_the_resume_ends_like_an_uninterrupted_run(
        tmp_path):
    # 40 steps (~3 s at ~80 ms a step): the signal, a second into epoch 2, lands inside it
    args = ["trainer.epochs=2", "trainer.steps_per_epoch=40", "trainer.deterministic=true"]
    code, text = _train_to_end(tmp_path / "straight", *args)
    assert code == 0, text[-3000:]
    proc = _start(tmp_path / "stopped", *args)
    _wait_for(proc, "Epoch 2/2")
    time.sleep(1.0)
    proc.send_signal(signal.SIGTERM)
    out, _ = proc.communicate(timeout=120)
    assert proc.returncode == 75, out[-3000:]
    # it stopped instead of going on to re-score best.keras and write metrics.json
    assert "seg: interrupted: signal 15" in out
    assert not (tmp_path / "stopped" / "metrics.json").exists()
    again = _start(tmp_path / "stopped", *args)
    out, _ = again.communicate(timeout=600)
    assert again.returncode == 0, out[-3000:]
    a = json.loads((tmp_path / "straight" / "metrics.json").read_text())
    b = json.loads((tmp_path / "stopped" / "metrics.json").read_text())
    assert b["epochs_completed"] == a["epochs_completed"] == 2
    assert b["history"]["val_mean_iou"] == a["history"]["val_mean_iou"]
    assert b["val_mean_iou"] == a["val_mean_iou"]


@pytest.mark.slow
@pytest.mark.parametrize("phase", ["re-scoring best.keras", "writing metrics.json"])
def test_a_signal_after_training_stops_at_once_and_the_next_start_finishes(
        tmp_path, compose, monkeypatch, phase):
    """SIGTERM while best.keras is re-scored or metrics.json written: Interrupted (exit 75)
    at once; the committed state makes the next start re-score and write metrics.json."""
    from seg import hparams, train
    from seg.runfolder import Interrupted

    cfg = compose(*SMALL, "trainer.epochs=1", "trainer.steps_per_epoch=2", "trainer.verbose=0")
    real = {"re-scoring best.keras": train.keras.saving.load_model,
            "writing metrics.json": hparams.log_final}[phase]

    def signalling(*args, **kwargs):
        os.kill(os.getpid(), signal.SIGTERM)
        return real(*args, **kwargs)

    target = (train.keras.saving, "load_model") if phase.startswith("re-") else \
        (hparams, "log_final")
    monkeypatch.setattr(*target, signalling)
    with pytest.raises(Interrupted, match=f"while {phase}"):
        train.run(cfg, tmp_path / "run")
    monkeypatch.undo()
    assert not (tmp_path / "run" / "metrics.json").exists()
    metrics = train.run(cfg, tmp_path / "run")
    assert metrics["epochs_completed"] == 1 and (tmp_path / "run" / "metrics.json").is_file()
    assert metrics["resumes"] == [{"epoch": 1, "step": 0}]


@pytest.mark.slow
def test_resume_false_moves_the_whole_run_aside_and_it_still_evaluates(tmp_path, compose,
                                                                        capsys):
    import runpy

    from seg.train import run

    run_dir = tmp_path / "run"
    cfg = compose(*SMALL, "trainer.epochs=1", "trainer.steps_per_epoch=2", "trainer.verbose=0")
    first = run(cfg, run_dir, files={".hydra/overrides.yaml": "- trainer.epochs=1\n"})
    before = _digests(run_dir)
    run({**cfg, "trainer": {**cfg["trainer"], "resume": False}}, run_dir)
    aside = next(run_dir.glob("previous-*"))
    moved = {k: v for k, v in _digests(aside).items() if not k.startswith("evaluation/")}
    assert moved == before  # every file, config.json and .hydra/ included, unchanged
    assert not (run_dir / ".hydra").exists()  # the new run was given no Hydra record
    argv = sys.argv
    sys.argv = ["evaluate.py", str(aside), "--no-progress"]
    try:
        runpy.run_path(str(ROOT / "scripts" / "evaluate.py"), run_name="__main__")
    finally:
        sys.argv = argv
    report = json.loads((aside / "evaluation" / "val" / "evaluation.json").read_text())
    assert report["checkpoint"] == str(aside / "checkpoints" / "best.keras")
    assert report["mean_iou"] == pytest.approx(first["val_mean_iou"], abs=1e-6)
    capsys.readouterr()


@pytest.mark.slow
def test_a_refused_resume_changes_no_file(tmp_path, compose):
    from seg.train import ConfigError, run

    run_dir = tmp_path / "run"
    cfg = compose(*SMALL, "trainer.epochs=1", "trainer.steps_per_epoch=2", "trainer.verbose=0")
    run(cfg, run_dir, files={".hydra/overrides.yaml": "- trainer.epochs=1\n"})
    before = _digests(run_dir)
    with pytest.raises(ConfigError, match="model.base_filters"):
        run(compose(*SMALL, "trainer.epochs=2", "model.base_filters=8"), run_dir,
            files={".hydra/overrides.yaml": "- model.base_filters=8\n"})
    assert _digests(run_dir) == before


@pytest.mark.slow
def test_with_config_json_unreadable_another_architecture_is_still_refused(tmp_path, compose):
    """The resume state keeps a copy of the config: compared when config.json is lost, and
    neither the refused run nor the original command is harmed."""
    from seg.train import ConfigError, run

    run_dir = tmp_path / "run"
    cfg = compose(*SMALL, "trainer.epochs=1", "trainer.steps_per_epoch=2", "trainer.verbose=0")
    run(cfg, run_dir)
    (run_dir / "config.json").write_text("{truncated")
    before = _digests(run_dir)
    with pytest.raises(ConfigError, match="model.depth"):
        run(compose(*SMALL, "trainer.epochs=2", "model.depth=2"), run_dir)
    assert _digests(run_dir) == before
    again = run({**cfg, "trainer": {**cfg["trainer"], "epochs": 2}}, run_dir)
    assert again["epochs_completed"] == 2
    assert json.loads((run_dir / "config.json").read_text())["trainer"]["epochs"] == 2


@pytest.mark.slow
def test_a_run_whose_resume_states_are_all_unreadable_is_kept_aside_not_overwritten(
        tmp_path, compose):
    from seg.checkpoints import CheckpointError
    from seg.train import run

    run_dir = tmp_path / "run"
    cfg = compose(*SMALL, "trainer.epochs=1", "trainer.steps_per_epoch=2", "trainer.verbose=0")
    run(cfg, run_dir)
    best = (run_dir / "checkpoints" / "best.keras").read_bytes()
    for state in (run_dir / "checkpoints" / "resume").glob("state-*.json"):
        state.write_text("{truncated")
    again = {**cfg, "trainer": {**cfg["trainer"], "epochs": 2}}
    with pytest.raises(CheckpointError, match="none of the 1 resume state"):
        run(again, run_dir)
    run(again, run_dir)  # the same command again: starts over, the old run kept whole
    aside = next(run_dir.glob("previous-*"))
    assert (aside / "checkpoints" / "best.keras").read_bytes() == best
    assert (aside / "metrics.json").is_file()
