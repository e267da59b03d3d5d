"""trainer.strategy on a CPU: mirrored over two logical CPU devices, multi_worker with two worker
processes on 127.0.0.1. Each needs a fresh process (devices and collectives are configured
before TensorFlow starts), so they run as subprocesses."""

import json
import os
import socket
import subprocess
import sys

import keras
import numpy as np
import pytest

from conftest import ROOT, TINY
from seg import distribute
from seg.train import run

SAME_STEP = """
import sys
import tensorflow as tf
tf.config.set_logical_device_configuration(tf.config.list_physical_devices("CPU")[0],
                                           [tf.config.LogicalDeviceConfiguration()] * 2)
import keras, numpy as np
from seg.losses import SegmentationLoss
from seg.models import build_model

def model_and_loss():
    model = build_model(num_classes=4, in_channels=3, depth=2, base_filters=8, norm=sys.argv[1])
    model.compile(optimizer=keras.optimizers.SGD(0.05), loss=SegmentationLoss("auto", 4))
    return model

rng = np.random.default_rng(0)
x = rng.random((16, 32, 32, 3), np.float32)
y = rng.integers(0, 4, (16, 32, 32)).astype("int32")
y[:, :4] = 255  # ignored pixels too
keras.utils.set_random_seed(0)
single = model_and_loss()
with tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"]).scope():
    mirrored = model_and_loss()
start = single.get_weights()
mirrored.set_weights(start)
for model in (single, mirrored):  # two steps of the same global batch of 16
    model.fit(x, y, batch_size=16, epochs=2, shuffle=False, verbose=0)
diff = max(float(np.abs(a - b).max()) for a, b in zip(single.get_weights(), mirrored.get_weights()))
moved = max(float(np.abs(a - b).max()) for a, b in zip(single.get_weights(), start))
print("DIFF", diff, moved)
"""


@pytest.mark.slow
@pytest.mark.parametrize("norm", ["none", "sync_batch"])
def test_two_replicas_of_8_take_the_same_step_as_one_device_of_16(norm):
    """The global batch is split, each replica's loss is 1/replicas of its mean (CE + Dice,
    ignored pixels) and the gradients are summed: the step equals one device's step."""
    proc = subprocess.run([sys.executable, "-c", SAME_STEP, norm], cwd=ROOT,
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    diff, moved = map(float, proc.stdout.split("DIFF")[1].split())
    assert moved > 2e-4  # the steps moved the weights by far more than the tolerance...
    assert diff < 1e-5, (diff, moved)  # ...and a summed loss (a doubled step) would show


@pytest.mark.slow
def test_mirrored_over_two_cpus_trains_with_the_global_batch_and_scaled_rate(tiny, tmp_path):
    fast = ("trainer.epochs=2", "trainer.steps_per_epoch=4", "logging.panels_every=1")
    single = run(tiny(*fast, "trainer.batch_size=16"), tmp_path / "single")
    proc = subprocess.run(
        [sys.executable, "scripts/train.py", *TINY, *fast, "trainer.strategy=mirrored",
         "trainer.cpu_devices=2", f"hydra.run.dir={tmp_path / 'mirrored'}"],
        cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "mirrored strategy: 2 replica(s) in sync, global batch 16 (8 per replica); learning " \
           "rate 0.006 (x2, trainer.lr_scaling=linear)" in proc.stdout
    mirrored = json.loads((tmp_path / "mirrored" / "metrics.json").read_text())
    assert (mirrored["strategy"], mirrored["replicas"], mirrored["global_batch_size"]) == (
        "mirrored", 2, 16)
    assert mirrored["learning_rate"] == pytest.approx(0.006)
    # the logged loss is the mean over the global batch (a sum over replicas would double it)
    assert mirrored["history"]["loss"][0] == pytest.approx(single["history"]["loss"][0], rel=0.1)
    model = keras.saving.load_model(tmp_path / "mirrored" / "checkpoints" / "best.keras")
    assert any(getattr(layer, "synchronized", False) for layer in model.layers)
    assert (tmp_path / "mirrored" / "panels" / "epoch_002.png").exists()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


DRIVER = """
import json, os, sys
import seg_hydra, keras, numpy as np
from seg.train import run
index, out = int(sys.argv[1]), sys.argv[2]

class SaveFinalWeights(keras.callbacks.Callback):
    def on_train_end(self, logs=None):
        np.savez(f"{{out}}/weights_{{index}}.npz", *self.model.get_weights())

cfg = seg_hydra.compose_dict({overrides!r})
metrics = run(cfg, f"{{out}}/worker_{{index}}", callbacks=[SaveFinalWeights()])
print("RESULT", json.dumps({{k: metrics[k] for k in ("val_mean_iou", "epochs_completed")}}))
"""


@pytest.mark.slow
def test_multi_worker_two_processes_end_with_the_same_weights_and_only_the_chief_writes(
        tmp_path):
    overrides = [*TINY, "trainer.batch_size=4", "trainer.epochs=2", "trainer.steps_per_epoch=4",
                 "trainer.strategy=multi_worker"]
    (tmp_path / "driver.py").write_text(DRIVER.format(overrides=overrides))
    ports = [_free_port(), _free_port()]
    workers = []
    for index in range(2):
        env = {**os.environ, "TF_CONFIG": json.dumps({
            "cluster": {"worker": [f"127.0.0.1:{p}" for p in ports]},
            "task": {"type": "worker", "index": index}})}
        workers.append(subprocess.Popen(
            [sys.executable, str(tmp_path / "driver.py"), str(index), str(tmp_path)], cwd=ROOT,
            env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True))
    try:
        outputs = [w.communicate(timeout=600) for w in workers]
    finally:
        for w in workers:
            w.kill()
    for w, (out, err) in zip(workers, outputs):
        assert w.returncode == 0, err[-3000:]
        assert "RESULT" in out
    results = [json.loads(out.split("RESULT", 1)[1]) for out, _ in outputs]
    assert results[0] == results[1]  # the same validation figure on both workers
    w0, w1 = np.load(tmp_path / "weights_0.npz"), np.load(tmp_path / "weights_1.npz")
    assert len(w0.files) == len(w1.files) > 0
    for k in w0.files:  # trainable weights and (synchronised) batch-norm statistics alike
        np.testing.assert_array_equal(w0[k], w1[k])
    chief = json.loads((tmp_path / "worker_0" / "metrics.json").read_text())
    assert (chief["strategy"], chief["workers"], chief["replicas"], chief["global_batch_size"]) \
        == ("multi_worker", 2, 2, 8)
    assert (tmp_path / "worker_0" / "checkpoints" / "best.keras").exists()
    assert (tmp_path / "worker_0" / "tb").is_dir()
    assert not (tmp_path / "worker_1").exists()  # the other worker wrote nothing


class _Resolver:
    def __init__(self, spec, kind, index):
        self.spec, self.task_type, self.task_id = spec, kind, index

    def cluster_spec(self):
        return type("Spec", (), {"as_dict": lambda _: self.spec})()


@pytest.mark.parametrize("spec,kind,index,expected", [
    ({"worker": ["a:1", "b:1"]}, "worker", 0, (True, 0, 2)),
    ({"worker": ["a:1", "b:1"]}, "worker", 1, (False, 1, 2)),
    ({"chief": ["c:1"], "worker": ["a:1"]}, "chief", 0, (True, 0, 2)),
    ({"chief": ["c:1"], "worker": ["a:1"]}, "worker", 0, (False, 1, 2)),
])
def test_the_chief_is_worker_0_or_the_chief_task(spec, kind, index, expected):
    assert distribute._chief(_Resolver(spec, kind, index)) == expected


def test_multi_worker_without_tf_config_is_refused_with_an_example(monkeypatch):
    monkeypatch.delenv("TF_CONFIG", raising=False)
    with pytest.raises(distribute.StrategyError, match="TF_CONFIG"):
        distribute.make("multi_worker")
    with pytest.raises(distribute.StrategyError, match="trainer.strategy='ring'"):
        distribute.make("ring")


def test_what_keras_cannot_do_under_several_replicas_is_refused_before_training():
    plan = distribute.Plan(strategy=None, name="mirrored", replicas=2)
    with pytest.raises(distribute.StrategyError, match="steps_per_execution=4"):
        distribute.check_compile(plan, "auto", 4)
    with pytest.raises(distribute.StrategyError, match="jit_compile=true"):
        distribute.check_compile(plan, True, 1)
    distribute.check_compile(plan, "auto", 1)
    distribute.check_compile(distribute.Plan(None, "default", 1), True, 8)  # one replica: fine
