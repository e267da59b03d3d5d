"""Launcher configs for sweeps (+launcher=joblib, +launcher=slurm): what they compose to, and one
real joblib sweep whose jobs run in parallel worker processes with the project's resolvers and
sweep summary. Skipped where the optional launcher plugins (pip install -e .[dev]) are missing."""

import json
import subprocess
import sys

import pytest
from conftest import ROOT

TINY = ["data.num_train=32", "data.num_val=8", "data.image_size=32", "trainer.batch_size=8",
        "trainer.epochs=1", "trainer.steps_per_epoch=2", "trainer.verbose=0",
        "diagnostics.preflight=off", "diagnostics.probes=false", "logging.panels_every=0"]


def _compose(*overrides):
    """configs/train.yaml with the hydra node, as scripts/train.py composes it."""
    import seg_hydra  # the project's resolvers (project_root, job_name)
    from hydra import compose, initialize_config_dir

    with initialize_config_dir(config_dir=seg_hydra.CONFIG_DIR, version_base="1.3"):
        return compose(config_name="train", overrides=list(overrides), return_hydra_config=True)


def _settings(cfg) -> dict:
    from omegaconf import OmegaConf

    return {k: v for k, v in OmegaConf.to_container(cfg).items() if k != "hydra"}


def test_joblib_launcher_config(monkeypatch):
    pytest.importorskip("hydra_plugins.hydra_joblib_launcher")
    cfg = _compose("+launcher=joblib")
    launcher = cfg.hydra.launcher
    assert launcher._target_ == "hydra_plugins.hydra_joblib_launcher.joblib_launcher.JoblibLauncher"
    assert launcher.n_jobs == 2 and launcher.prefer == "processes"
    assert _compose("+launcher=joblib", "hydra.launcher.n_jobs=4").hydra.launcher.n_jobs == 4
    # TensorFlow's thread pools follow joblib's share of the cores per worker (OMP_NUM_THREADS,
    # read in the worker when the job starts); without it TensorFlow keeps its default (0)
    env = cfg.hydra.job.env_set
    monkeypatch.setenv("OMP_NUM_THREADS", "3")
    assert env.TF_NUM_INTRAOP_THREADS == "3"
    monkeypatch.delenv("OMP_NUM_THREADS")
    assert env.TF_NUM_INTRAOP_THREADS == "0"
    assert env.TF_FORCE_GPU_ALLOW_GROWTH == "true"
    # only Hydra's settings change (seg's short epoch line suits parallel jobs: whole lines)
    assert _settings(cfg) == _settings(_compose())


def test_slurm_launcher_config():
    pytest.importorskip("hydra_plugins.hydra_submitit_launcher")
    cfg = _compose("+launcher=slurm", "hydra.sweep.dir=/shared/sweep",
                   "hydra.launcher.partition=gpu", "hydra.launcher.timeout_min=30")
    launcher = cfg.hydra.launcher
    assert launcher._target_ == (
        "hydra_plugins.hydra_submitit_launcher.submitit_launcher.SlurmLauncher")
    assert launcher.partition == "gpu" and launcher.timeout_min == 30
    assert (launcher.gpus_per_node, launcher.tasks_per_node, launcher.nodes) == (1, 1, 1)
    assert launcher.cpus_per_task > 0 and launcher.mem_gb > 0 and launcher.array_parallelism > 0
    assert launcher.submitit_folder == "/shared/sweep/.submitit/%j"  # inside the sweep folder
    # the SLURM job unpickles train.py's function, which imports the installed seg_hydra:
    # no PYTHONPATH line is needed any more
    assert list(launcher.setup) == []
    assert _compose("+launcher=slurm").hydra.launcher.partition is None
    assert _settings(cfg) == _settings(_compose())


@pytest.mark.slow
def test_joblib_sweep_runs_jobs_in_parallel_workers(tmp_path):
    pytest.importorskip("hydra_plugins.hydra_joblib_launcher")
    out = tmp_path / "multirun"
    done = subprocess.run(
        [sys.executable, str(ROOT / "scripts" / "train.py"), "-m", "+launcher=joblib",
         "hydra.launcher.n_jobs=2", "seed=0,1", *TINY, f"hydra.sweep.dir={out}"],
        capture_output=True, text=True, cwd=tmp_path, timeout=300, check=False)
    log = done.stdout + done.stderr
    assert done.returncode == 0, log[-3000:]
    assert "Joblib.Parallel(n_jobs=2" in log and "is launching 2 jobs" in log
    # the job_name resolver ran in the workers: the swept setting leads each folder's name
    jobs = sorted(p.parent for p in out.glob("*/metrics.json"))
    assert [p.name.split(",")[0] for p in jobs] == ["0_seed=0", "1_seed=1"], jobs
    # in parallel: each job started (config.json) before the other one finished (metrics.json)
    started = [(p / "config.json").stat().st_mtime for p in jobs]
    finished = [(p / "metrics.json").stat().st_mtime for p in jobs]
    assert max(started) < min(finished)
    summary = json.loads((out / "summary.json").read_text())
    assert [(s["run"], s["status"]) for s in summary] == [(p.name, "ok") for p in jobs]
    assert "2 job(s), 2 finished, 0 failed" in (out / "summary.md").read_text()
