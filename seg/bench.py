"""What scripts/benchmark.py measures with: step clocks, the bare-Keras baseline, FLOPs, memory.

The method is ../shared/BENCHMARKING.md's: warm-up (compile and the first epoch) left out, the
loss taken to the host at every timed step so the device has finished, validation and
callbacks priced separately, and ours compared with a bare Keras `model.fit` of the same model
in the same process, epoch for epoch (A B A B), because absolute CPU figures are noise.
"""

from __future__ import annotations

import os
import platform
import resource
import time

import keras
import numpy as np
import tensorflow as tf

# Dense peak FLOP/s of the chips we may be lent, for model FLOPs utilisation:
# (name fragment, {precision: peak}); float32 runs on TF32 tensor cores.
PEAKS = (("H200", {"bf16": 989e12, "fp16": 989e12, "tf32": 495e12}),
         ("H100 PCIe", {"bf16": 756e12, "fp16": 756e12, "tf32": 378e12}),
         ("H100", {"bf16": 989e12, "fp16": 989e12, "tf32": 495e12}),
         ("A100", {"bf16": 312e12, "fp16": 312e12, "tf32": 156e12}))
_PEAK_KEY = {"mixed_bfloat16": "bf16", "mixed_float16": "fp16", "float32": "tf32"}


class StepClock(keras.callbacks.Callback):
    """The wall time at the end of every training step, per epoch, and what the epoch spent in
    validation; the first step's time from the start of fit() is the compile time."""

    def __init__(self):
        super().__init__()
        self.steps: list[list[tuple[int, float]]] = []  # per epoch: (steps done, time)
        self.epoch_s: list[float] = []
        self.validation_s: list[float] = []
        self.compile_s: float | None = None

    def on_train_begin(self, logs=None):
        self._fit_start = time.perf_counter()

    def on_epoch_begin(self, epoch, logs=None):
        self._epoch_start = time.perf_counter()
        self.steps.append([])
        self.validation_s.append(0.0)

    def on_train_batch_end(self, batch, logs=None):
        float(logs["loss"])  # the loss on the host: the step has finished on the device
        now = time.perf_counter()
        if self.compile_s is None:
            self.compile_s = now - self._fit_start
        self.steps[-1].append((batch + 1, now))

    def on_test_begin(self, logs=None):
        self._test_start = time.perf_counter()

    def on_test_end(self, logs=None):
        if self.validation_s:
            self.validation_s[-1] += time.perf_counter() - self._test_start

    def on_epoch_end(self, epoch, logs=None):
        self.epoch_s.append(time.perf_counter() - self._epoch_start)

    def window(self, skip_epochs: int = 1) -> dict:
        """Images/s-ready figures over the epochs after the warm-up: steps, seconds, step times.

        Each epoch's window runs from the end of its first step to the end of its last, so
        the epoch boundaries (validation, callbacks) stay out of it.
        """
        steps, seconds, per_step = 0, 0.0, []
        for epoch in self.steps[skip_epochs:]:
            for (n0, t0), (n1, t1) in zip(epoch, epoch[1:], strict=False):
                per_step += [(t1 - t0) / (n1 - n0)] * (n1 - n0)
            if len(epoch) > 1:
                steps += epoch[-1][0] - epoch[0][0]
                seconds += epoch[-1][1] - epoch[0][1]
        return {"steps": steps, "seconds": seconds,
                "median_step_ms": 1e3 * float(np.median(per_step)) if per_step else None,
                "p99_step_ms": 1e3 * float(np.percentile(per_step, 99)) if per_step else None}


def arrays(dataset: tf.data.Dataset, max_images: int) -> tuple[np.ndarray, np.ndarray]:
    """The first max_images (image, mask) pairs of a batched dataset as numpy arrays."""
    x, y = next(iter(dataset.unbatch().batch(max_images)))
    return x.numpy(), y.numpy()


def pipeline_images_per_s(dataset: tf.data.Dataset, batch_size: int, steps: int,
                          warmup: int = 20) -> float:
    """Images/s of the input pipeline alone (decode, augment, batch), no model."""
    iterator = iter(dataset)
    for _ in range(warmup):
        next(iterator)
    start = time.perf_counter()
    for _ in range(steps):
        next(iterator)
    return steps * batch_size / (time.perf_counter() - start)


def profiled_flops(model: keras.Model, image_size: int, channels: int) -> int:
    """Floating-point operations of one forward pass of one image, counted from the model's
    graph by TensorFlow's profiler (convolutions, transposed convolutions, matmuls, ...)."""
    from tensorflow.python.framework.convert_to_constants import (
        convert_variables_to_constants_v2_as_graph)

    spec = tf.TensorSpec([1, image_size, image_size, channels], tf.float32)
    concrete = tf.function(lambda x: model(x, training=False)).get_concrete_function(spec)
    frozen, _ = convert_variables_to_constants_v2_as_graph(concrete)
    options = tf.compat.v1.profiler.ProfileOptionBuilder.float_operation()
    options["output"] = "none"
    level = tf.get_logger().level
    tf.get_logger().setLevel("ERROR")  # the v1 profiler's deprecation notices
    try:
        info = tf.compat.v1.profiler.profile(graph=frozen.graph, cmd="op", options=options)
    finally:
        tf.get_logger().setLevel(level)
    return int(info.total_float_ops)


def peak_rss_mb() -> float:
    return round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)  # KB on Linux


def device() -> dict:
    """The accelerator's name and peak memory so far, or the CPU's name."""
    gpus = tf.config.list_physical_devices("GPU")
    if gpus:
        details = tf.config.experimental.get_device_details(gpus[0])
        peak = tf.config.experimental.get_memory_info("GPU:0")["peak"]
        return {"device": details.get("device_name", "GPU"), "gpus": len(gpus),
                "device_peak_mb": round(peak / 2**20, 1)}
    name = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as f:
            name = next(line.split(":", 1)[1].strip() for line in f
                        if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    return {"device": f"CPU: {name} ({len(os.sched_getaffinity(0))} cores)", "gpus": 0,
            "device_peak_mb": None}


def peak_flops(device_name: str, precision: str) -> float | None:
    """The dense peak FLOP/s of a known GPU in this precision, or None (CPUs, unknown chips)."""
    for fragment, peaks in PEAKS:
        if fragment in device_name:
            return peaks[_PEAK_KEY[precision]]
    return None
