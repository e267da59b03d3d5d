"""Speed settings (precision, XLA, steps per execution), the benchmark script and its clocks.

These tests check that the fast paths train correctly and that the benchmark measures what it
says; they never assert a time (figures live in docs/benchmarks.md).
"""

import json
import subprocess
import sys

import keras
import numpy as np
import pytest

from conftest import ROOT
from seg import callbacks as seg_callbacks
from seg.bench import StepClock, profiled_flops
from seg.train import ConfigError, run

FAST = ("trainer.epochs=2", "trainer.steps_per_epoch=8", "diagnostics.preflight=off")


@pytest.mark.slow
@pytest.mark.parametrize("precision,extra", [
    ("mixed_bfloat16", ("trainer.jit_compile=true", "trainer.steps_per_execution=3")),
    ("mixed_float16", ("+decoder=deconv", "trainer.steps_per_execution=2")),
])
def test_mixed_precision_xla_and_steps_per_execution_train(tiny, tmp_path, precision, extra):
    """The GPU fast paths run on the CPU too: bf16 with XLA, fp16 with loss scaling, several
    steps per execution."""
    cfg = tiny(f"trainer.precision={precision}", *extra, *FAST)
    out = tmp_path / precision
    metrics = run(cfg, out)
    assert metrics["epochs_completed"] == 2 and metrics["precision"] == precision
    assert all(np.isfinite(metrics["history"]["loss"]))
    model = keras.saving.load_model(out / "checkpoints" / "last.keras")
    compute = {layer.dtype_policy.compute_dtype for layer in model.layers if layer.weights}
    assert precision.split("_")[1] in compute  # the convolutions compute in 16 bits...
    assert model.get_layer("head").dtype_policy.name == "float32"  # ...the head does not
    assert model.output.dtype == "float32"
    assert all(w.dtype == "float32" for w in model.weights)  # weights stay float32
    # Keras runs whole executions: 8 steps per epoch become 6 with 3 per call (not 9, which
    # would run into the next epoch's data), 8 with 2 per call
    steps = 6 if "trainer.steps_per_execution=3" in extra else 8
    state = json.loads(sorted((out / "checkpoints" / "resume").glob("*.json"))[-1].read_text())
    assert state["global_step"] == 2 * steps and state["steps_per_epoch"] == steps
    assert metrics["train_images_per_s"] > 0
    assert len(metrics["rss_mb_per_epoch"]) == 2


@pytest.mark.parametrize("key,value,message", [
    ("precision", "float16", "trainer.precision='float16'"),
    ("jit_compile", "maybe", "trainer.jit_compile='maybe'"),
    ("steps_per_execution", "0", "trainer.steps_per_execution=0"),
    ("lr_scaling", "sqrt", "trainer.lr_scaling='sqrt'"),
])
def test_bad_speed_settings_are_refused_naming_the_key(tiny, tmp_path, key, value, message):
    with pytest.raises(ConfigError, match=message.replace("(", r"\(")):
        run(tiny(f"trainer.{key}={value}"), tmp_path / key)


def test_throughput_counts_steps_not_calls_with_steps_per_execution():
    throughput = seg_callbacks.Throughput(batch_size=4)
    throughput.on_epoch_begin(0)
    for end_step in (2, 5, 7):  # three calls of 3, 3 and 2 steps
        throughput.on_train_batch_end(end_step)
    throughput.on_epoch_end(0)
    assert throughput._steps == 8
    assert throughput.rates[0] > 0 and throughput.rss_mb[0] > 0


def test_timed_wrapper_forwards_every_hook_and_adds_its_seconds():
    calls = []

    class Probe(keras.callbacks.Callback):
        def on_epoch_end(self, epoch, logs=None):
            calls.append(("epoch_end", epoch, self.model))

        def on_train_batch_end(self, batch, logs=None):
            calls.append(("batch_end", batch))

    seconds = {}
    timed = seg_callbacks.Timed(Probe(), seconds)
    model = keras.Sequential([keras.Input((2,)), keras.layers.Dense(1)])
    timed.set_model(model)
    timed.on_train_batch_end(3, {})
    timed.on_epoch_end(1, {})
    assert calls == [("batch_end", 3), ("epoch_end", 1, model)]
    assert set(seconds) == {"Probe"} and seconds["Probe"] > 0


def test_step_clock_window_leaves_out_warm_up_and_epoch_boundaries():
    clock = StepClock()
    # epoch 0 (warm-up) then two epochs of 4 steps, 0.1 s each, in executions of 2 steps
    clock.steps = [[(1, 0.0), (2, 5.0)],
                   [(2, 10.0), (4, 10.2)],
                   [(2, 20.0), (4, 20.2)]]
    window = clock.window(skip_epochs=1)
    assert window["steps"] == 4 and window["seconds"] == pytest.approx(0.4)
    assert window["median_step_ms"] == pytest.approx(100.0)


def test_flops_are_counted_from_the_graph_for_convolutions_and_transposed_ones():
    for layer, expected in ((keras.layers.Conv2D(16, 3, padding="same"), 2 * 32 * 32 * 8 * 16 * 9),
                            (keras.layers.Conv2DTranspose(16, 4, strides=2, padding="same"),
                             2 * 32 * 32 * 8 * 16 * 16)):
        inputs = keras.Input((None, None, 8))
        flops = profiled_flops(keras.Model(inputs, layer(inputs)), 32, 8)
        assert expected <= flops <= expected * 1.05  # + bias additions


@pytest.mark.slow
def test_benchmark_prints_a_table_and_a_json_line_last(tmp_path):
    record = tmp_path / "bench.jsonl"
    proc = subprocess.run(
        [sys.executable, "scripts/benchmark.py", "data.num_train=64", "data.num_val=16",
         "data.image_size=32", "trainer.batch_size=8", "diagnostics.preflight=off",
         "trainer.steps_per_epoch=null", "--epochs", "2", "--model-only-steps", "10", "--out", str(tmp_path / "run"),
         "--record", str(record)],
        cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    lines = proc.stdout.strip().splitlines()
    result = json.loads(lines[-1])
    assert json.loads(record.read_text()) == result
    for key in ("images_per_s", "bare_images_per_s", "ratio_vs_bare", "pipeline_images_per_s",
                "logging_share"):
        assert isinstance(result[key], float) and result[key] > 0, key
    assert result["ratio_vs_bare"] == pytest.approx(
        result["images_per_s"] / result["bare_images_per_s"], rel=0.01)
    assert 0 < result["logging_share"] < 1 and result["timed_steps"] == 7
    assert {"CollapseMonitor", "PredictionPanels", "Checkpointer", "EpochScalars"} <= set(
        result["callback_seconds_per_epoch"])
    assert result["train_gflops_per_image"] > 0 and result["mfu"] is None  # no GPU peak
    assert "ratio ours / bare" in proc.stdout and "input pipeline alone" in proc.stdout
    assert (tmp_path / "run" / "metrics.json").exists()  # the real training run, kept
