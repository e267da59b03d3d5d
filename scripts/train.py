"""Train a segmentation model: python scripts/train.py [+decoder=deconv] [key=value ...]

Returns the validation mean IoU, so Hydra sweepers can maximise it.
"""

import hydra
from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode

import _hydra


@hydra.main(config_path=_hydra.CONFIG_DIR, config_name="train", version_base="1.3")
def main(cfg) -> float:
    from seg.train import run

    hc = HydraConfig.get()
    try:
        metrics = run(_hydra.to_dict(cfg), hc.runtime.output_dir,
                      run_name=_hydra._run_name(hc.job.override_dirname))
    except _hydra.refusal_types() as e:
        if hc.mode == RunMode.MULTIRUN:  # one refused job must not stop the sweep
            print(f"seg: job {hc.job.num} refused: {e}")
            return float("nan")
        _hydra.fail(e)
    print(f"\nval mIoU {metrics['val_mean_iou']:.4f} ({metrics['decoder']} decoder, "
          f"{metrics['epochs_completed']} epochs, {metrics['wall_time_s']:.0f} s); "
          f"run folder {hc.runtime.output_dir}")
    return metrics["val_mean_iou"]


if __name__ == "__main__":
    main()
