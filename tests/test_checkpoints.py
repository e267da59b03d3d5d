"""seg.checkpoints: atomic files, resume states, and what a resume may not change."""

import json

import keras
import numpy as np
import pytest

from seg import checkpoints


def _model():
    inputs = keras.Input((4,))
    model = keras.Model(inputs, keras.layers.Dense(2, name="d")(inputs))
    model.compile(optimizer="adam", loss="mse")
    return model


def test_save_keras_round_trips_and_leaves_no_temporary(tmp_path):
    model = _model()
    checkpoints.save_keras(model, tmp_path / "m.keras")
    assert checkpoints.keras_problem(tmp_path / "m.keras") is None
    again = keras.saving.load_model(tmp_path / "m.keras", safe_mode=True)
    assert all(np.array_equal(a, b) for a, b in zip(model.get_weights(), again.get_weights()))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.keras"]


def test_keras_problem_names_missing_truncated_and_foreign_files(tmp_path):
    checkpoints.save_keras(_model(), tmp_path / "m.keras")
    data = (tmp_path / "m.keras").read_bytes()
    (tmp_path / "half.keras").write_bytes(data[: len(data) // 2])
    (tmp_path / "text.keras").write_text("hello")
    assert checkpoints.keras_problem(tmp_path / "none.keras") == "missing"
    assert "not a readable .keras file" in checkpoints.keras_problem(tmp_path / "half.keras")
    assert "not a readable .keras file" in checkpoints.keras_problem(tmp_path / "text.keras")


def test_non_finite_weights_are_refused_and_the_old_file_kept(tmp_path):
    model = _model()
    checkpoints.save_keras(model, tmp_path / "m.keras")
    before = (tmp_path / "m.keras").read_bytes()
    model.get_layer("d").kernel.assign(np.full((4, 2), np.nan, np.float32))
    with pytest.raises(checkpoints.NonFiniteWeights):
        checkpoints.save_keras(model, tmp_path / "m.keras")
    assert (tmp_path / "m.keras").read_bytes() == before


def test_write_json_is_atomic_and_readable(tmp_path):
    checkpoints.write_json(tmp_path / "a.json", {"x": [1, 2]})
    checkpoints.write_json(tmp_path / "a.json", {"x": [3]})
    assert json.loads((tmp_path / "a.json").read_text()) == {"x": [3]}
    assert [p.name for p in tmp_path.iterdir()] == ["a.json"]


def test_resume_states_are_committed_newest_first_and_restore_the_weights(tmp_path):
    model = _model()
    model.optimizer.build(model.trainable_variables)
    first = checkpoints.save_state(model, tmp_path, {"epoch": 1, "global_step": 1})
    weights = model.get_weights()
    model.get_layer("d").kernel.assign(np.ones((4, 2), np.float32))
    second = checkpoints.save_state(model, tmp_path, {"epoch": 2, "global_step": 2})
    assert checkpoints.committed(tmp_path) == [second, first]
    other = _model()
    other.optimizer.build(other.trainable_variables)
    state = checkpoints.restore_latest(other, tmp_path, log=lambda _: None)
    assert state["epoch"] == 2
    assert np.array_equal(other.get_layer("d").kernel.numpy(), np.ones((4, 2)))
    assert not np.array_equal(weights[0], np.ones((4, 2)))


def test_a_state_that_does_not_fit_the_model_is_refused_not_moved(tmp_path):
    model = _model()
    model.optimizer.build(model.trainable_variables)
    checkpoints.save_state(model, tmp_path, {"epoch": 1, "global_step": 1})
    inputs = keras.Input((5,))
    wider = keras.Model(inputs, keras.layers.Dense(2, name="d")(inputs))
    wider.compile(optimizer="adam", loss="mse")
    wider.optimizer.build(wider.trainable_variables)
    with pytest.raises(checkpoints.CheckpointError, match="does not fit"):
        checkpoints.restore_latest(wider, tmp_path, log=lambda _: None)
    assert not list(tmp_path.glob("*.corrupt"))


def test_incompatibilities_name_the_architecture_keys_only():
    old = {"model": {"depth": 3}, "data": {"num_classes": 4, "image_size": 64},
           "trainer": {"optimizer": "adam", "epochs": 2}}
    new = {"model": {"depth": 4}, "data": {"num_classes": 4, "image_size": 32},
           "trainer": {"optimizer": "adam", "epochs": 5}}
    assert checkpoints.incompatibilities(old, new) == ["model.depth: 3 in the run, 4 now"]
    assert checkpoints.other_differences(old, new) == ["data.image_size: 64 -> 32",
                                                       "trainer.epochs: 2 -> 5"]


def test_check_writable_refuses_a_file_and_a_glob_pattern(tmp_path):
    (tmp_path / "f").write_text("x")
    with pytest.raises(checkpoints.CheckpointError, match="cannot be written"):
        checkpoints.check_writable(tmp_path / "f")
    with pytest.raises(checkpoints.CheckpointError, match="file pattern"):
        checkpoints.check_writable(tmp_path / "a[1]")
