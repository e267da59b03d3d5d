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

import hydra

import seg_hydra


@hydra.main(config_path=seg_hydra.CONFIG_DIR, config_name="train", version_base="1.3")
def main(cfg) -> float:
    return seg_hydra.train_job(cfg)


if __name__ == "__main__":
    seg_hydra.launch(main)
