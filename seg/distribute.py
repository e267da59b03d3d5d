"""trainer.strategy: TensorFlow's own distribution strategies, picked by name.

  auto          all local GPUs (MirroredStrategy) when there are several, else no strategy
  one_device    the first GPU, or the CPU
  mirrored      MirroredStrategy over every local GPU (or the CPU's logical devices: see
                trainer.cpu_devices), gradients all-reduced every step
  multi_worker  MultiWorkerMirroredStrategy over the machines of the TF_CONFIG environment
                variable ({"cluster": {"worker": [host:port, ...]}, "task": {"type": "worker",
                "index": i}}); every worker runs the same command

trainer.batch_size is the batch of one replica (what fits on one device); the global batch is
batch_size x replicas, and with trainer.lr_scaling=linear the learning rate grows with it.
Only the chief (worker 0, or the task of type chief) writes checkpoints, TensorBoard and
pictures; the other workers train in lock-step and write nothing.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass

import tensorflow as tf

STRATEGIES = ("auto", "one_device", "mirrored", "multi_worker")


class StrategyError(ValueError):
    """A strategy that cannot be set up here; the message names the key and the fix."""


@dataclass
class Plan:
    strategy: tf.distribute.Strategy
    name: str
    replicas: int
    is_chief: bool = True
    worker: int = 0
    workers: int = 1

    @property
    def distributed(self) -> bool:
        return self.name != "default"

    def describe(self, batch_size: int) -> str:
        where = f"worker {self.worker} of {self.workers}, " if self.workers > 1 else ""
        return (f"{self.name} strategy: {where}{self.replicas} replica(s) in sync, global batch "
                f"{batch_size * self.replicas} ({batch_size} per replica)")


def _split_cpu(count: int):
    """Make the CPU count logical devices (before TensorFlow starts its runtime)."""
    cpu = tf.config.list_physical_devices("CPU")[0]
    try:
        tf.config.set_logical_device_configuration(
            cpu, [tf.config.LogicalDeviceConfiguration() for _ in range(count)])
    except RuntimeError as e:  # already initialised: fine if it already has that many
        if len(tf.config.list_logical_devices("CPU")) != count:
            raise StrategyError(
                f"trainer.cpu_devices={count}: TensorFlow had already started in this process "
                f"with {len(tf.config.list_logical_devices('CPU'))} CPU device(s) ({e}); set it "
                "in a fresh process (python scripts/train.py ...)") from e


def _chief(resolver) -> tuple[bool, int, int]:
    """(is chief, worker index, number of workers) of a cluster resolver."""
    spec = resolver.cluster_spec().as_dict()
    workers = sum(len(tasks) for kind, tasks in spec.items() if kind in ("chief", "worker"))
    kind, index = resolver.task_type, resolver.task_id or 0
    if kind in (None, "chief"):
        return True, 0, workers
    offset = len(spec.get("chief", []))
    return kind == "worker" and index == 0 and not offset, index + offset, workers


def make(name: str = "auto", cpu_devices: int | None = None) -> Plan:
    """The strategy for trainer.strategy. Call it before anything else touches TensorFlow
    (multi_worker and cpu_devices must configure the runtime before it starts)."""
    if name not in STRATEGIES:
        raise StrategyError(f"trainer.strategy={name!r}: use one of {list(STRATEGIES)}")
    if cpu_devices:
        _split_cpu(int(cpu_devices))
    if name == "multi_worker":
        if "TF_CONFIG" not in os.environ:
            raise StrategyError(
                "trainer.strategy=multi_worker needs the TF_CONFIG environment variable on "
                'every worker, e.g. TF_CONFIG=\'{"cluster": {"worker": ["host1:12345", '
                '"host2:12345"]}, "task": {"type": "worker", "index": 0}}\'')
        try:
            json.loads(os.environ["TF_CONFIG"])
        except ValueError as e:
            raise StrategyError(f"TF_CONFIG is not valid JSON ({e})") from e
        strategy = tf.distribute.MultiWorkerMirroredStrategy()
        _patch_keras_for_multi_worker()
        is_chief, worker, workers = _chief(strategy.cluster_resolver)
        return Plan(strategy, name, strategy.num_replicas_in_sync, is_chief, worker, workers)
    gpus = [d.name for d in tf.config.list_logical_devices("GPU")]
    if name == "auto":
        if len(gpus) < 2:
            strategy = tf.distribute.get_strategy()  # no strategy: Keras' default placement
            return Plan(strategy, "default", 1)
        name = "mirrored"
    if name == "one_device":
        return Plan(tf.distribute.OneDeviceStrategy(gpus[0] if gpus else "/cpu:0"), name, 1)
    devices = gpus or [d.name for d in tf.config.list_logical_devices("CPU")]
    strategy = tf.distribute.MirroredStrategy(devices)
    return Plan(strategy, name, strategy.num_replicas_in_sync)


def check_compile(plan: Plan, jit_compile, steps_per_execution: int):
    """Refuse what Keras cannot do under a strategy of several replicas (errors deep in fit
    otherwise)."""
    if plan.replicas < 2:
        return
    if steps_per_execution > 1:
        raise StrategyError(
            f"trainer.steps_per_execution={steps_per_execution} with trainer.strategy="
            f"{plan.name} ({plan.replicas} replicas): Keras 3 fails inside fit() with several "
            "steps per execution under a distribution strategy (keras-team/keras#19246); use "
            "trainer.steps_per_execution=1")
    if jit_compile is True and not tf.config.list_logical_devices("GPU"):
        raise StrategyError(
            f"trainer.jit_compile=true with trainer.strategy={plan.name} on CPU devices: XLA "
            "has no cross-device collectives on a CPU; use trainer.jit_compile=auto")


def _patch_keras_for_multi_worker():
    """Two Keras 3 bugs stop model.fit under MultiWorkerMirroredStrategy (keras-team/keras#20585):

    1. The symbolic build reduces the first (x, y) batch with strategy.reduce("MEAN", (x, y)),
       which the multi-worker strategy cannot do for a tuple. Only shapes and dtypes are
       needed: this worker's own part of the batch is used, with no communication.
    2. Step logs are reduced with strategy.reduce("MEAN", scalar, axis=0), invalid for a
       scalar; axis=None averages them over the workers.
    """
    from keras.src.backend.tensorflow import trainer

    if getattr(trainer, "_seg_multi_worker_patch", False):
        return

    def maybe_symbolic_build(self, iterator=None, data_batch=None):
        if self._distribute_strategy is None:
            return
        if iterator is not None:
            for _, _, it in iterator:
                data_batch = tf.nest.map_structure(
                    lambda v: self.distribute_strategy.experimental_local_results(v)[0]
                    if isinstance(v, tf.distribute.DistributedValues) else v, next(it))
                break
        with self.distribute_strategy.scope():
            self._symbolic_build(data_batch=data_batch)

    original = trainer.reduce_per_replica

    def reduce_per_replica(values, strategy, reduction):
        if reduction in ("auto", "mean") and trainer._collective_all_reduce_multi_worker(strategy):
            return tf.nest.map_structure(
                lambda v: strategy.reduce("MEAN", v, axis=None)
                if isinstance(v, tf.distribute.DistributedValues) else v, values)
        return original(values, strategy, reduction)

    trainer.TensorFlowTrainer._maybe_symbolic_build = maybe_symbolic_build
    trainer.reduce_per_replica = reduce_per_replica
    trainer._seg_multi_worker_patch = True


def shard_by_data(ds: tf.data.Dataset) -> tf.data.Dataset:
    """Split batches between workers by element: seg's datasets come from memory or decoded
    file lists, not from files a worker could own (the AUTO policy would warn and do this)."""
    options = tf.data.Options()
    options.experimental_distribute.auto_shard_policy = tf.data.experimental.AutoShardPolicy.DATA
    return ds.with_options(options)
