"""Train a segmentation model: python scripts/train.py [+decoder=deconv] [key=value ...]

Returns the validation mean IoU, so Hydra sweepers (+sweep=optuna) can maximise it. In a sweep
(-m, +sweep=...), every job trains in a process of its own (memory stays flat across jobs), a
job that fails writes failure.json into its folder and the sweep goes on; the summary at the
end lists every failed job and why.

Exit codes: 0 done; 1 a crash (traceback); 2 a refused set-up or an unwritable run folder (the
message names the key, file or path); 3 the loss became NaN/Inf (the step is named; the last
good checkpoint is kept); 75 stopped by SIGTERM/SIGINT after writing a checkpoint: run the same
command (with the same hydra.run.dir) to resume.
"""

import json
import logging
import sys
import traceback
from pathlib import Path

import hydra
from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode

import _hydra


@hydra.main(config_path=_hydra.CONFIG_DIR, config_name="train", version_base="1.3")
def main(cfg) -> float:
    from seg.runfolder import Interrupted, NonFiniteLoss
    from seg.train import run

    # Hydra logs INFO to the console; TensorFlow's checkpoint writer (absl) would add a line
    # per save.
    logging.getLogger("absl").setLevel(logging.WARNING)
    hc = HydraConfig.get()
    try:
        args = (_hydra.to_dict(cfg), hc.runtime.output_dir)
        kwargs = {"run_name": _hydra._run_name(hc.job.override_dirname),
                  "overrides": list(hc.overrides.task), "files": _hydra.hydra_record(cfg)}
        if hc.mode == RunMode.MULTIRUN:  # a process of its own: memory stays flat across jobs
            metrics = _hydra.in_own_process(run, *args, **kwargs)
        else:
            metrics = run(*args, **kwargs)
    except Interrupted as e:  # the whole sweep stops too: the next start resumes
        folder = (f"hydra.sweep.dir={hc.sweep.dir}" if hc.mode == RunMode.MULTIRUN
                  else f"hydra.run.dir={hc.runtime.output_dir}")
        print(f"\nseg: interrupted: {e}\nseg: run the same command to resume, with {folder}",
              flush=True)
        sys.exit(Interrupted.exit_code)
    except Exception as e:
        if hc.mode != RunMode.MULTIRUN:
            if isinstance(e, _hydra.refusal_types()):
                _hydra.forget_unused(hc.runtime.output_dir)
                _hydra.fail(e)
            if isinstance(e, NonFiniteLoss):
                _hydra.fail(e, code=3)
            raise
        # One failed job must not stop the sweep: record why, and let the next job run.
        refused = isinstance(e, _hydra.refusal_types())
        failure = {"job": hc.job.num, "overrides": list(hc.overrides.task),
                   "config": _hydra.to_dict(cfg, missing_ok=True),  # compare groups by it
                   "error": type(e).__name__, "refused": refused, "message": str(e),
                   "traceback": "" if refused else getattr(e, "child_traceback", None)
                   or traceback.format_exc()}
        out = Path(hc.runtime.output_dir)
        out.mkdir(parents=True, exist_ok=True)
        (out / "failure.json").write_text(json.dumps(failure, indent=2))
        print(f"\nseg: job {hc.job.num} failed ({type(e).__name__}): {str(e)[:2000]}\n"
              f"seg: details in {out / 'failure.json'}; the sweep goes on", flush=True)
        return float("nan")
    print(f"\nval mIoU {metrics['val_mean_iou']:.4f} ({metrics['decoder']} decoder, "
          f"{metrics['epochs_completed']} epochs, {metrics['wall_time_s']:.0f} s); "
          f"run folder {hc.runtime.output_dir}")
    return metrics["val_mean_iou"]


if __name__ == "__main__":
    _hydra.launch(main)
