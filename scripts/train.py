"""Train a segmentation model: python scripts/train.py [+decoder=deconv] [key=value ...]

Returns the validation mean IoU, so Hydra sweepers (+sweep=optuna) can maximise it. In a sweep
(-m, +sweep=...), every job trains in a process of its own (memory stays flat across jobs), a
job that fails writes failure.json into its folder and the sweep goes on; the summary at the
end lists every failed job and why.

Exit codes (one run):
  0   done
  1   a crash (a traceback)
  2   refused: a bad key, value, file or set-up, or an unwritable run folder; the message names
      it and says what to do. A run folder that stays behind holds refused.json with the reason
      (compare.py lists the run as refused)
  3   the loss became NaN/Inf (the step is named; the last good checkpoint is kept)
  4   finished, but the output collapsed into a constant (the 'yellow image'): the last lines
      give the cause and the fix as config keys; metrics.json and the checkpoints are written
  75  stopped by SIGTERM/SIGINT after writing a checkpoint: run the same command (with the same
      hydra.run.dir) to resume
  130 stopped at once by a second Ctrl-C (the last committed resume state is kept)
A sweep (-m) exits 0 when it ran all its jobs, whatever each job gave: a failed or refused job
writes failure.json, a collapsed one is named by its closing lines, and the summary at the end
and compare.py list them (codes 2, 75 and 130 apply to the sweep as a whole).
"""

import hydra

import seg_hydra


@hydra.main(config_path=seg_hydra.CONFIG_DIR, config_name="train", version_base="1.3")
def main(cfg) -> float:
    return seg_hydra.train_job(cfg)


if __name__ == "__main__":
    seg_hydra.launch(main)
