"""The glue between Hydra and seg, installed beside it: seg itself never imports Hydra.

- compose: where configs/ is, the schema (seg/config.py) in Hydra's ConfigStore, the
  resolvers, DictConfig -> the plain dicts seg reads (compose_dict, to_dict, apply_overrides).
- errors: seg's refusals and Hydra's own errors as one message and exit code 2 (launch,
  refusing, fail).
- jobs: the training job of scripts/train.py (exit codes 2/3/75) and, in sweeps, one process
  per job with failure.json.
- sweep: the summary at the end of a sweep (hydra.callbacks).
- cli, names: argparse types for the scripts' options; run and job folder names.
- DEVICE: the line naming the device that trains ("no GPU found: training on CPU"), from
  seg.console.quiet_tensorflow(), which imports TensorFlow without its start-up noise on stderr.
"""

import os
import signal
import sys
import threading

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")  # keep TensorFlow's start-up chatter out


def _stopped_early(signum, frame):
    print(f"\nseg: signal {signum} before the run began: stopped, nothing was written",
          file=sys.stderr, flush=True)
    sys.exit(75)  # as for a run stopped later: the same command starts it


# SIGTERM/SIGINT during the imports (TensorFlow takes seconds): exit 75, as in every later phase
_script = os.path.basename(os.path.dirname(os.path.abspath(sys.argv[0]))) == "scripts" \
    if sys.argv and sys.argv[0] else False
if _script and threading.current_thread() is threading.main_thread():
    for _sig in (signal.SIGTERM, signal.SIGINT):
        if signal.getsignal(_sig) in (signal.SIG_DFL, signal.default_int_handler):
            signal.signal(_sig, _stopped_early)


# before the imports below, which pull in TensorFlow: importing seg drops its start-up noise;
# the line naming the device is printed by the training job
from seg.console import quiet_tensorflow  # noqa: E402

DEVICE = quiet_tensorflow()

from seg_hydra.cli import file_to_write, folder_to_write, number, whole  # noqa: E402
from seg_hydra.compose import (CONFIG_DIR, PROJECT_ROOT, apply_overrides,  # noqa: E402
                               compose_dict, config_dir, hydra_record, to_dict)
from seg_hydra.errors import REFUSALS, fail, forget_unused, launch, refusing  # noqa: E402
from seg_hydra.jobs import in_own_process, train_job  # noqa: E402
from seg_hydra.names import job_name, run_name  # noqa: E402
from seg_hydra.sweep import SweepSummary  # noqa: E402

__all__ = ["CONFIG_DIR", "DEVICE", "PROJECT_ROOT", "REFUSALS", "SweepSummary", "apply_overrides",
           "compose_dict", "config_dir", "fail", "file_to_write", "folder_to_write",
           "forget_unused", "hydra_record", "in_own_process", "job_name", "launch", "number",
           "refusing", "run_name", "to_dict", "train_job", "whole"]
