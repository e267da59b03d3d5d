"""The fault-injection suite: crashes, kills, signals, NaN, bad files and unwritable folders.

Every test breaks something on purpose and checks that nothing good is lost: the previous
checkpoint survives, the run resumes where it stopped, and every error names what broke.
"""

import errno
import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from conftest import ROOT

SMALL = ["data.num_train=32", "data.num_val=8", "data.image_size=32", "trainer.batch_size=8",
         "trainer.verbose=0", "logging.num_panels=1", "diagnostics.probes=false",
         "trainer.steps_per_epoch=null"]  # one pass (4 steps), not the default's floor of 50


def _model():
    from seg.models import build_model

    return build_model(num_classes=3, in_channels=3, depth=2, base_filters=4)


def _weights(path):
    import keras

    import seg  # noqa: F401  (registers seg's layers, losses and metrics)

    return keras.saving.load_model(path, safe_mode=True).get_weights()


def _max_diff(a, b):
    return max(float(np.abs(x - y).max()) for x, y in zip(a, b))


# --- atomic writes --------------------------------------------------------------------------

@pytest.mark.parametrize("where", ["rename", "mid-save"])
def test_a_failed_checkpoint_write_keeps_the_previous_file(tmp_path, monkeypatch, where):
    from seg import checkpoints

    model = _model()
    target = tmp_path / "last.keras"
    checkpoints.save_keras(model, target)
    before = _weights(target)
    model.set_weights([w + 1 for w in model.get_weights()])
    if where == "rename":  # the disk fills up at the last moment
        def full(*args):
            raise OSError(errno.ENOSPC, "No space left on device")
        monkeypatch.setattr(checkpoints.os, "replace", full)
    else:  # the process dies half-way through Keras' write: a truncated temporary file
        real_save = type(model).save

        def half(self, path, *a, **k):
            real_save(self, path, *a, **k)
            data = Path(path).read_bytes()
            Path(path).write_bytes(data[: len(data) // 2])
        monkeypatch.setattr(type(model), "save", half)
    with pytest.raises(checkpoints.CheckpointError, match="last.keras"):
        checkpoints.save_keras(model, target)
    assert _max_diff(_weights(target), before) == 0  # the old file, intact
    assert [p.name for p in tmp_path.iterdir()] == ["last.keras"]  # no temporary left


def test_non_finite_weights_are_never_saved(tmp_path):
    from seg import checkpoints

    model = _model()
    weights = model.get_weights()
    weights[0][...] = np.nan
    model.set_weights(weights)
    with pytest.raises(checkpoints.NonFiniteWeights):
        checkpoints.save_keras(model, tmp_path / "best.keras")
    assert not (tmp_path / "best.keras").exists()


def test_a_planted_corrupt_resume_state_falls_back_to_the_one_before(tmp_path):
    import keras

    from seg import checkpoints

    model = _model()
    model.compile(optimizer=keras.optimizers.Adam(), loss="mse")
    model.optimizer.build(model.trainable_variables)
    folder = tmp_path / "resume"
    for step in (4, 8):
        model.optimizer.iterations.assign(step)
        checkpoints.save_state(model, folder, {"global_step": step, "epoch": step // 4})
    newest = sorted(folder.glob("state-00000008.data*"))[0]
    newest.write_bytes(newest.read_bytes()[:100])  # truncated, as by a failing disk
    messages = []
    fresh = _model()
    fresh.compile(optimizer=keras.optimizers.Adam(), loss="mse")
    fresh.optimizer.build(fresh.trainable_variables)
    state = checkpoints.restore_latest(fresh, folder, log=messages.append)
    assert state["global_step"] == 4 and int(fresh.optimizer.iterations.numpy()) == 4
    assert "state-00000008.json" in messages[0] and "unreadable" in messages[0]
    assert not (folder / "state-00000008.json").exists()  # moved aside, named .corrupt
    assert (folder / "state-00000008.json.corrupt").exists()


# --- resume ---------------------------------------------------------------------------------

class _CrashAfterEpoch:
    """A Keras callback that 'crashes' the process after the given epoch was committed."""

    def __new__(cls, epoch):
        import keras

        class Crash(keras.callbacks.Callback):
            def on_epoch_end(self, e, logs=None):
                if e + 1 == epoch:
                    raise RuntimeError(f"injected crash after epoch {epoch}")
        return Crash()


@pytest.mark.slow
def test_a_crash_at_an_epoch_boundary_resumes_to_the_same_bits(tmp_path, compose):
    """trainer.deterministic=true: crash after epoch 2 of 4, resume, compare with no crash."""
    from seg.train import run

    cfg = compose(*SMALL, "trainer.epochs=4", "trainer.deterministic=true")
    straight = run(cfg, tmp_path / "straight")
    with pytest.raises(RuntimeError, match="injected crash after epoch 2"):
        run(cfg, tmp_path / "crashed", callbacks=[_CrashAfterEpoch(2)])
    (tmp_path / "crashed" / "checkpoints" / "last.keras").write_bytes(b"planted garbage")
    resumed = run(cfg, tmp_path / "crashed")
    assert resumed["resumes"] == [{"epoch": 2, "step": 0}]
    assert (tmp_path / "crashed" / "checkpoints" / "last.keras.corrupt").exists()
    diff = _max_diff(_weights(tmp_path / "straight" / "checkpoints" / "last.keras"),
                     _weights(tmp_path / "crashed" / "checkpoints" / "last.keras"))
    assert diff == 0.0
    for key in ("history", "val_iou_per_class", "epochs_completed"):
        assert resumed[key] == straight[key], key
    _assert_tensorboard_steps(tmp_path / "crashed", 4)


def _assert_tensorboard_steps(run_dir, epochs):
    """Every epoch scalar of every TensorBoard run once, at steps 1..epochs in order."""
    import tensorflow as tf

    for sub in ("train", "validation"):
        seen = {}
        for f in sorted((run_dir / "tb" / sub).glob("events.out.tfevents.*")):
            for event in tf.compat.v1.train.summary_iterator(str(f)):
                for value in event.summary.value:
                    if value.tag.startswith(("IoU/", "Loss", "diagnostics/pred_share")):
                        seen.setdefault(value.tag, []).append(event.step)
        assert seen, sub
        for tag, steps in seen.items():
            assert steps == list(range(1, epochs + 1)), (sub, tag, steps)


@pytest.mark.slow
def test_resuming_with_another_architecture_is_refused_with_the_differences(tmp_path, compose):
    from seg.train import ConfigError, run

    run(compose(*SMALL, "trainer.epochs=1"), tmp_path / "r")
    with pytest.raises(ConfigError) as e:
        run(compose(*SMALL, "trainer.epochs=2", "model.base_filters=8", "data.num_classes=3"),
            tmp_path / "r")
    assert "model.base_filters: 16 in the run, 8 now" in str(e.value)
    assert "data.num_classes: 4 in the run, 3 now" in str(e.value)
    assert "trainer.resume=false" in str(e.value)


# --- NaN ------------------------------------------------------------------------------------

@pytest.mark.slow
def test_a_nan_at_a_known_step_stops_the_run_and_keeps_the_good_checkpoints(tmp_path, compose):
    import keras

    from seg.runfolder import NonFiniteLoss
    from seg.train import run

    class PoisonAtStep6(keras.callbacks.Callback):
        def on_train_batch_begin(self, batch, logs=None):
            if int(self.model.optimizer.iterations.numpy()) == 5:  # the 6th step
                layer = self.model.get_layer("head")
                layer.kernel.assign(np.full(layer.kernel.shape, np.nan, np.float32))

    with pytest.raises(NonFiniteLoss, match=r"at step 6 \(epoch 2, batch 2\)") as e:
        run(compose(*SMALL, "trainer.epochs=3"), tmp_path / "r", callbacks=[PoisonAtStep6()])
    assert "state-00000004" in str(e.value)  # the last good state is named
    ckpt = tmp_path / "r" / "checkpoints"
    for name in ("best.keras", "last.keras"):
        assert all(np.isfinite(w).all() for w in _weights(ckpt / name))
    assert [p.name for p in sorted((ckpt / "resume").glob("*.json"))] == ["state-00000004.json"]
    assert not (tmp_path / "r" / "metrics.json").exists()


# --- files and folders ------------------------------------------------------------------------

def test_an_unwritable_run_folder_is_named_before_anything_runs(tmp_path, compose):
    from seg.checkpoints import CheckpointError
    from seg.train import run

    blocker = tmp_path / "a_file"
    blocker.write_text("not a folder")
    with pytest.raises(CheckpointError, match="a_file/run: the run folder cannot be written"):
        run(compose(*SMALL, "trainer.epochs=1"), blocker / "run")


def test_a_run_folder_tensorflow_would_read_as_a_file_pattern_is_refused(tmp_path, compose):
    """TensorFlow writes a checkpoint under "[1.0,1.0]" but cannot read it back (it globs the
    path): seen with a run folder named after data.scale_range=[1.0,1.0]. Refused up front."""
    import keras

    from seg.checkpoints import CheckpointError, save_state
    from seg.train import run

    model = keras.Sequential([keras.Input((2,)), keras.layers.Dense(1)])
    model.compile(optimizer="adam", loss="mse")
    with pytest.raises(CheckpointError, match="cannot write the resume state"):
        save_state(model, tmp_path / "scale=[1.0,1.0]", {"global_step": 1})
    out = tmp_path / "scale=[1.0,1.0]-run"
    with pytest.raises(CheckpointError, match=r"contains \[ \], which TensorFlow reads as a "
                                              "file pattern"):
        run(compose(*SMALL, "trainer.epochs=1"), out)
    assert not out.exists()


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes into read-only folders anyway")
def test_a_read_only_run_folder_is_refused_and_left_as_it_was(tmp_path, compose):
    from seg.checkpoints import CheckpointError
    from seg.train import run

    out = tmp_path / "ro"
    out.mkdir()
    (out / "notes.txt").write_text("mine")
    out.chmod(0o555)
    try:
        with pytest.raises(CheckpointError, match="ro: the run folder cannot be written"):
            run(compose(*SMALL, "trainer.epochs=1"), out)
    finally:
        out.chmod(0o755)
    assert [p.name for p in out.iterdir()] == ["notes.txt"]


def test_a_model_file_with_a_lambda_layer_is_refused(tmp_path):
    import keras

    from seg import inference

    inputs = keras.Input((8, 8, 3))
    model = keras.Model(inputs, keras.layers.Lambda(lambda x: x * 2)(inputs))
    model.save(tmp_path / "lambda.keras")
    with pytest.raises(inference.LoadError, match="lambda.keras: cannot load") as e:
        inference.load(tmp_path / "lambda.keras")
    assert "Lambda" in str(e.value) or "safe" in str(e.value)


def test_a_split_list_cannot_reach_outside_the_dataset_root(tmp_path):
    from seg.data import DataError
    from seg.data.folder import read_list

    (tmp_path / "train.txt").write_text("a\n../../etc/passwd\n")
    with pytest.raises(DataError, match=r"train.txt:2: '../../etc/passwd' points outside"):
        read_list(tmp_path, "train.txt")


def test_config_values_cannot_name_code_to_import_or_call(compose):
    from seg.train import ConfigError, build, open_data

    with pytest.raises(ConfigError, match="_target_"):
        from seg.train import check_sections
        cfg = compose(*SMALL, "+trainer._target_=os.system")
        check_sections(cfg)
    cfg = compose(*SMALL, "model.activation=os.system")
    source, _ = open_data(cfg["data"])
    with pytest.raises(Exception, match="os.system"):
        build(cfg, source)


# --- processes: signals and kill -9 ---------------------------------------------------------

def _train(run_dir, *overrides):
    return subprocess.Popen(
        [sys.executable, str(ROOT / "scripts" / "train.py"), *SMALL, *overrides,
         f"hydra.run.dir={run_dir}"], cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
        text=True)


def _unloadable(run_dir) -> list[str]:
    """Every checkpoint in a run folder that would not load (should be none)."""
    import tensorflow as tf

    from seg import checkpoints

    ckpt = Path(run_dir) / "checkpoints"
    files = [p for p in ckpt.glob("*.keras") if not p.name.startswith(".tmp-")]  # temporaries
    bad = [f"{p}: {checkpoints.keras_problem(p)}" for p in files if checkpoints.keras_problem(p)]
    for p in files:
        try:
            _weights(p)
        except Exception as e:  # noqa: BLE001 - any failure counts
            bad.append(f"{p}: {e}")
    for sidecar in checkpoints.committed(ckpt / "resume"):
        try:
            state = json.loads(sidecar.read_text())
            tf.train.list_variables(str(sidecar.parent / state["checkpoint"]))
        except Exception as e:  # noqa: BLE001
            bad.append(f"{sidecar}: {e}")
    return bad


@pytest.mark.slow
def test_sigterm_checkpoints_mid_epoch_and_the_same_command_resumes(tmp_path):
    run_dir = tmp_path / "run"
    args = ["trainer.epochs=15", "trainer.steps_per_epoch=6"]
    proc = _train(run_dir, *args)
    resume = run_dir / "checkpoints" / "resume"
    while proc.poll() is None and not list(resume.glob("state-*.json")):
        time.sleep(0.2)  # until the first epoch has been saved
    assert proc.poll() is None, proc.communicate()[0][-3000:]
    time.sleep(0.7)  # somewhere inside a later epoch
    proc.send_signal(signal.SIGTERM)
    out, _ = proc.communicate(timeout=300)
    assert proc.returncode == 75, out[-3000:]
    assert "run the same command to resume" in out
    assert _unloadable(run_dir) == []
    again = _train(run_dir, *args)
    out, _ = again.communicate(timeout=600)
    assert again.returncode == 0, out[-3000:]
    assert "seg: resuming" in out
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert metrics["epochs_completed"] == 15 and len(metrics["resumes"]) == 1
    _assert_tensorboard_steps(run_dir, 15)


def _saved_since(resume, started):
    """Whether a state was committed after `started`. A state listed by glob can be pruned by
    the run before it is stat-ed (only the newest are kept): that one does not count."""
    for state in resume.glob("state-*.json"):
        try:
            if state.stat().st_mtime > started:
                return True
        except FileNotFoundError:
            continue
    return False


@pytest.mark.slow
def test_ten_kill_9_at_random_moments_all_resume_to_the_same_weights(tmp_path):
    """The headline figure: kills survived out of kills tried, unloadable checkpoints found,
    and the largest weight difference to an uninterrupted run (deterministic ops)."""
    from seg import checkpoints

    # 10 kills use about 11 epochs (killed at epochs 0..11 when measured): 30 leave room
    args = ["trainer.epochs=30", "trainer.steps_per_epoch=2", "trainer.deterministic=true",
            "logging.panels_every=0"]
    reference = _train(tmp_path / "reference", *args)
    out, _ = reference.communicate(timeout=900)
    assert reference.returncode == 0, out[-3000:]

    rng, run_dir = random.Random(7), tmp_path / "killed"
    kills, unloadable, killed_at = 0, [], []
    while kills < 10:
        started = time.time()
        proc = _train(run_dir, *args)
        config = run_dir / "config.json"  # rewritten when run() starts, after the imports
        while proc.poll() is None and not (config.exists() and config.stat().st_mtime > started):
            time.sleep(0.05)
        if kills % 2:  # a random moment of the training proper (after this start's 1st save)
            resume = run_dir / "checkpoints" / "resume"
            while proc.poll() is None and not _saved_since(resume, started):
                time.sleep(0.05)
            time.sleep(rng.uniform(0.0, 2.0))
        else:  # any moment: start-up, graph tracing, preflight, training, a save
            time.sleep(rng.uniform(0.0, 8.0))
        if proc.poll() is not None:
            break  # finished before this kill: not counted
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        kills += 1
        unloadable += _unloadable(run_dir)
        states = checkpoints.committed(run_dir / "checkpoints" / "resume")
        killed_at.append(json.loads(states[0].read_text())["epoch"] if states else 0)
    final = _train(run_dir, *args)
    out, _ = final.communicate(timeout=900)
    assert final.returncode == 0, out[-3000:]
    diff = _max_diff(_weights(tmp_path / "reference" / "checkpoints" / "last.keras"),
                     _weights(run_dir / "checkpoints" / "last.keras"))
    a = json.loads((tmp_path / "reference" / "metrics.json").read_text())
    b = json.loads((run_dir / "metrics.json").read_text())
    print(f"\nkill -9: {kills} kills survived of {kills} tried; unloadable checkpoints found: "
          f"{len(unloadable)}; committed epochs at the kills {killed_at}; resumes recorded: "
          f"{len(b['resumes'])}; largest weight difference to the uninterrupted run: {diff}")
    assert kills == 10 and unloadable == []
    assert not list(run_dir.rglob(".tmp-*"))  # the next start cleans up cut-short writes
    assert len(set(killed_at)) >= 4 and len(b["resumes"]) >= 5  # kills all along the run
    assert diff == 0.0
    assert b["val_mean_iou"] == a["val_mean_iou"] and b["history"] == a["history"]


@pytest.mark.slow
def test_sigterm_in_the_middle_of_an_epoch_resumes_that_epoch_to_the_same_bits(tmp_path, compose):
    """The signal arrives during step 7 (epoch 2 of 4 steps each): the state is written after
    that step, Interrupted is raised, and the resumed run ends with the uninterrupted weights."""
    import keras

    from seg.runfolder import Interrupted
    from seg.train import run

    class SigtermAtStep7(keras.callbacks.Callback):
        def on_train_batch_end(self, batch, logs=None):
            if int(self.model.optimizer.iterations.numpy()) == 7:
                os.kill(os.getpid(), signal.SIGTERM)

    cfg = compose(*SMALL, "trainer.epochs=3", "trainer.deterministic=true")
    straight = run(cfg, tmp_path / "straight")
    before = signal.getsignal(signal.SIGTERM)
    with pytest.raises(Interrupted, match="stopped after step 7"):
        run(cfg, tmp_path / "stopped", callbacks=[SigtermAtStep7()])
    assert signal.getsignal(signal.SIGTERM) is before  # the handlers are given back
    resumed = run(cfg, tmp_path / "stopped")
    assert resumed["resumes"] == [{"epoch": 1, "step": 3}]
    diff = _max_diff(_weights(tmp_path / "straight" / "checkpoints" / "last.keras"),
                     _weights(tmp_path / "stopped" / "checkpoints" / "last.keras"))
    assert diff == 0.0
    assert resumed["val_mean_iou"] == straight["val_mean_iou"]
    assert resumed["history"]["val_mean_iou"] == straight["history"]["val_mean_iou"]
    _assert_tensorboard_steps(tmp_path / "stopped", 3)


@pytest.mark.slow
def test_a_crash_at_the_unfreeze_boundary_resumes_into_the_fine_tuning_phase(tmp_path, compose):
    """State written at the end of the frozen phase (with the frozen phase's optimizer); the
    resumed run must restore it, then unfreeze, and end where an uninterrupted run ends."""
    from seg.train import run

    cfg = compose(*SMALL, "model.encoder=mobilenet_v2", "model.freeze_encoder=true",
                  "trainer.unfreeze_encoder_after=1", "trainer.epochs=2",
                  "trainer.steps_per_epoch=2", "trainer.deterministic=true",
                  "logging.panels_every=0")
    straight = run(cfg, tmp_path / "straight")
    with pytest.raises(RuntimeError, match="injected crash after epoch 1"):
        run(cfg, tmp_path / "crashed", callbacks=[_CrashAfterEpoch(1)])
    resumed = run(cfg, tmp_path / "crashed")
    assert resumed["resumes"] == [{"epoch": 1, "step": 0}]
    assert _max_diff(_weights(tmp_path / "straight" / "checkpoints" / "last.keras"),
                     _weights(tmp_path / "crashed" / "checkpoints" / "last.keras")) == 0.0
    for key, values in straight["history"].items():  # the training-set metric averages of
        if key.startswith("val_") or key == "loss":  # the epoch after a re-compile differ
            assert resumed["history"][key] == values, key
    assert not list((tmp_path / "crashed" / "checkpoints" / "resume").glob("*.corrupt"))


@pytest.mark.slow
def test_a_resume_with_another_optimizer_is_refused_and_the_states_are_kept(tmp_path, compose):
    from seg.train import ConfigError, run

    run(compose(*SMALL, "trainer.epochs=1"), tmp_path / "r")
    with pytest.raises(ConfigError, match="trainer.optimizer: 'adam' in the run, 'sgd' now"):
        run(compose(*SMALL, "trainer.epochs=2", "trainer.optimizer=sgd"), tmp_path / "r")
    assert len(list((tmp_path / "r" / "checkpoints" / "resume").glob("state-*.json"))) == 1
    again = run(compose(*SMALL, "trainer.epochs=2", "trainer.resume=false"), tmp_path / "r")
    assert again["resumes"] == [] and again["epochs_completed"] == 2
    assert (next((tmp_path / "r").glob("previous-*")) / "metrics.json").is_file()
