"""Benchmark training speed: python scripts/benchmark.py [key=value ...] [--epochs N] [--record F]

Trains the configured model (the same overrides as scripts/train.py) with the real pipeline and
every callback, and in the same process, epoch for epoch, the same model by a bare Keras
`model.fit` on in-memory tensors. Prints a table and, last, one line of JSON:

  images_per_s           end-to-end training images/s (real tf.data pipeline, augmentation,
                         seg's callbacks; validation and epoch-end work outside the window)
  bare_images_per_s      the same model, loss, metrics and optimizer in a bare model.fit on
                         numpy arrays, no callbacks but the clock
  ratio_vs_bare          images_per_s / bare_images_per_s
  pipeline_images_per_s  the input pipeline alone (no model)
  logging_share          image logging (panels, TensorBoard) plus monitors (collapse monitor,
                         NaN/signal guard, throughput) as a share of an epoch's wall time
  ... and model-only images/s, compile time, median/p99 step time, validation and checkpoint
  shares, peak memory, memory per epoch, training FLOPs per image and, on a known GPU, MFU.

Warm-up (compile and the whole first epoch) is left out; every timed step takes the loss to the
host. Method: ../shared/BENCHMARKING.md; recorded figures: docs/benchmarks.md.
"""

import argparse
import datetime
import json
import shlex
import sys
import tempfile
from pathlib import Path

import seg_hydra


def parse(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("overrides", nargs="*", help="config overrides, as for scripts/train.py")
    p.add_argument("--epochs", type=int, default=4,
                   help="epochs of each of ours and bare (the first is warm-up; default 4)")
    p.add_argument("--model-only-steps", type=int, default=100,
                   help="timed steps on one batch repeated from memory (default 100)")
    p.add_argument("--bare-images", type=int, default=2048,
                   help="at most this many images in the bare baseline's arrays (default 2048)")
    p.add_argument("--out", help="run folder of the benchmark's training (default: a temporary "
                                 "folder)")
    p.add_argument("--record", help="also append the JSON line to this file")
    p.add_argument("--peak-tflops", type=float,
                   help="the device's dense peak, for MFU (default: known GPUs only)")
    return p.parse_args(argv)


def _share(part: float, whole: float) -> float:
    return round(part / whole, 4) if whole else float("nan")


def main(argv=None) -> dict:
    args = parse(argv)
    if args.epochs < 2:
        sys.exit("benchmark: --epochs must be at least 2 (the first is warm-up)")
    cfg = seg_hydra.compose_dict([f"trainer.epochs={args.epochs}", "trainer.verbose=0",
                               "trainer.early_stopping_patience=null", *args.overrides])
    import keras
    import tensorflow as tf

    from seg import bench, train

    cfg, _ = train.sized(cfg)  # the auto crop, depth and batch, as a run makes them
    trainer, bs = cfg["trainer"], cfg["trainer"]["batch_size"]
    out = Path(args.out or tempfile.mkdtemp(prefix="seg-benchmark-"))
    print(f"benchmark: run folder {out}", flush=True)

    # 1. The input pipeline alone, and the arrays for the bare baseline (the same distribution
    #    of images: augmented crops of the training split).
    parts = train.prepare(cfg)
    steps, source = parts.steps, parts.source
    pipeline_ips = bench.pipeline_images_per_s(parts.train_ds, bs, steps=max(steps, 50))
    # An epoch of bare is as many images as one of ours (up to --bare-images).
    x, y = bench.arrays(parts.train_ds, max_images=min(steps, max(args.bare_images // bs, 1))
                        * bs)
    val_ds = parts.val_ds
    del parts

    def compiled(model, loss, metrics, total_steps):
        train.compile_for_training(model, loss, metrics, trainer, train.make_schedule(
            trainer["schedule"], float(trainer["learning_rate"]), total_steps))
        return model

    # 2. Ours (train.run, everything on) and bare Keras, alternating epoch by epoch.
    bare, bare_clock, ours_clock, spent, timings = {}, bench.StepClock(), bench.StepClock(), [], {}

    def bare_epoch(epoch):
        spent.append(dict(timings))  # seg's callbacks' seconds so far, at the end of our epoch
        if "model" not in bare:  # built inside run(), which starts from a clear Keras session
            model, loss, metrics = train.build(cfg, source)
            bare["model"] = compiled(model, loss, metrics, args.epochs * len(x) // bs)
        bare["model"].fit(x, y, batch_size=bs, epochs=epoch + 1, initial_epoch=epoch,
                          callbacks=[bare_clock], verbose=0, shuffle=True)

    metrics = train.run(cfg, out, run_name="benchmark", timings=timings,
                        callbacks=[ours_clock, keras.callbacks.LambdaCallback(
                            on_epoch_end=lambda epoch, logs: bare_epoch(epoch))])
    bare_val = bare["model"].evaluate(val_ds, return_dict=True, verbose=0)["mean_iou"]

    # 3. Model only: one batch repeated from memory, after both.
    model, loss, metric_list = train.build(cfg, source)
    model = compiled(model, loss, metric_list, 2 * args.model_only_steps)
    batch = tf.data.Dataset.from_tensors((x[:bs], y[:bs])).repeat()
    model_clock = bench.StepClock()
    model.fit(batch, epochs=2, steps_per_epoch=args.model_only_steps, callbacks=[model_clock],
              verbose=0, shuffle=False)
    flops = bench.profiled_flops(model, cfg["data"]["image_size"], source.channels)

    # 4. Figures.
    ours, base, alone = ours_clock.window(), bare_clock.window(), model_clock.window()
    ips = lambda w: w["steps"] * bs / w["seconds"] if w["seconds"] else float("nan")  # noqa: E731
    epoch_s = sum(ours_clock.epoch_s[1:])
    cost = {k: spent[-1].get(k, 0.0) - spent[0].get(k, 0.0) for k in spent[-1]}
    monitors = sum(cost.get(k, 0.0) for k in ("CollapseMonitor", "Guard", "Throughput",
                                              "ResumableEarlyStopping"))
    image_logging = sum(cost.get(k, 0.0) for k in ("PredictionPanels", "EpochScalars"))
    dev = bench.device()
    peak = args.peak_tflops * 1e12 if args.peak_tflops else bench.peak_flops(
        dev["device"], trainer["precision"])
    train_flops = 3 * flops  # forward + backward (twice the forward)
    result = {
        "images_per_s": round(ips(ours), 1),
        "bare_images_per_s": round(ips(base), 1),
        "ratio_vs_bare": round(ips(ours) / ips(base), 3),
        "pipeline_images_per_s": round(pipeline_ips, 1),
        "pipeline_vs_step": round(pipeline_ips / ips(ours), 2),
        "logging_share": _share(image_logging + monitors, epoch_s),
        "image_logging_share": _share(image_logging, epoch_s),
        "monitors_share": _share(monitors, epoch_s),
        "validation_share": _share(sum(ours_clock.validation_s[1:]), epoch_s),
        "checkpoint_share": _share(cost.get("Checkpointer", 0.0), epoch_s),
        "callback_seconds_per_epoch": {k: round(v / (len(spent) - 1), 4) for k, v in cost.items()},
        "model_only_images_per_s": round(ips(alone), 1),
        "compile_s": round(ours_clock.compile_s, 2),
        "bare_compile_s": round(bare_clock.compile_s, 2),
        "median_step_ms": round(ours["median_step_ms"], 2),
        "p99_step_ms": round(ours["p99_step_ms"], 2),
        "bare_median_step_ms": round(base["median_step_ms"], 2),
        "bare_p99_step_ms": round(base["p99_step_ms"], 2),
        "model_only_median_step_ms": round(alone["median_step_ms"], 2),
        "timed_steps": ours["steps"],
        "peak_rss_mb": bench.peak_rss_mb(),
        "device_peak_mb": dev["device_peak_mb"],
        "rss_mb_per_epoch": metrics["rss_mb_per_epoch"],
        "train_gflops_per_image": round(train_flops / 1e9, 3),
        "tflops_per_s": round(ips(ours) * train_flops / 1e12, 3),
        "mfu": round(ips(ours) * train_flops / peak, 4) if peak else None,
        "val_mean_iou": round(metrics["val_mean_iou"], 4),
        "bare_val_mean_iou": round(float(bare_val), 4),
        "decoder": cfg["decoder"]["name"], "image_size": cfg["data"]["image_size"],
        "batch_size": bs, "precision": trainer["precision"],
        "jit_compile": trainer["jit_compile"],
        "steps_per_execution": trainer["steps_per_execution"], "epochs": args.epochs,
        "data": cfg["data"]["name"], "device": dev["device"],
        "tensorflow": tf.__version__, "keras": keras.__version__,
        "date": datetime.date.today().isoformat(),
        "command": "python scripts/benchmark.py " + shlex.join(sys.argv[1:] if argv is None
                                                               else argv),
    }
    pair = lambda a, b: f"{result[a]} / {result[b]}"  # noqa: E731
    rows = [
        ("end-to-end images/s (ours)", result["images_per_s"]),
        ("bare Keras fit images/s", result["bare_images_per_s"]),
        ("ratio ours / bare", result["ratio_vs_bare"]),
        ("model-only images/s (one batch from memory)", result["model_only_images_per_s"]),
        ("input pipeline alone images/s", result["pipeline_images_per_s"]),
        ("pipeline / training step", result["pipeline_vs_step"]),
        ("compile + first step s (ours / bare)", pair("compile_s", "bare_compile_s")),
        ("step ms median / p99 (ours)", pair("median_step_ms", "p99_step_ms")),
        ("step ms median / p99 (bare)", pair("bare_median_step_ms", "bare_p99_step_ms")),
        ("share of an epoch: image logging", result["image_logging_share"]),
        ("share of an epoch: monitors", result["monitors_share"]),
        ("share of an epoch: logging + monitors", result["logging_share"]),
        ("share of an epoch: validation", result["validation_share"]),
        ("share of an epoch: checkpoints", result["checkpoint_share"]),
        ("peak host memory MB", result["peak_rss_mb"]),
        ("peak device memory MB", result["device_peak_mb"]),
        ("host memory per epoch MB", result["rss_mb_per_epoch"]),
        ("training GFLOPs per image", result["train_gflops_per_image"]),
        ("achieved TFLOP/s (MFU)", f"{result['tflops_per_s']} ({result['mfu']})"),
        ("val mIoU after the run (ours / bare)", pair("val_mean_iou", "bare_val_mean_iou")),
    ]
    print(f"\n{result['decoder']} decoder, {result['image_size']}px, batch {bs}, "
          f"{result['precision']}, jit_compile={result['jit_compile']}, steps_per_execution="
          f"{result['steps_per_execution']}; {result['device']}; TensorFlow "
          f"{result['tensorflow']}, Keras {result['keras']}; {result['timed_steps']} timed steps")
    width = max(len(name) for name, _ in rows)
    for name, value in rows:
        print(f"  {name:<{width}}  {value}")
    line = json.dumps(result)
    if args.record:
        with open(args.record, "a") as f:
            f.write(line + "\n")
    print(line, flush=True)
    return result


if __name__ == "__main__":
    seg_hydra.refusing(main)
