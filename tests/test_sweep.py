"""A real sweep through Hydra's multirun, read back through a real TensorBoard server, then
compared and evaluated with the scripts a user runs."""

import json
import re
import socket
import subprocess
import sys
import threading
import urllib.parse
import urllib.request

import pytest

from conftest import ROOT

# one worker runs the module, so its module fixtures (a real sweep, a browser) are built once
pytestmark = [pytest.mark.slow, pytest.mark.xdist_group("sweep")]
TINY = ["data.num_train=32", "data.num_val=8", "data.image_size=32", "trainer.batch_size=8",
        "trainer.epochs=2", "trainer.verbose=0", "logging.num_panels=2", "diagnostics.probes=false",
        "trainer.steps_per_epoch=null"]


def _script(name, *args, cwd=ROOT):
    return subprocess.run([sys.executable, str(ROOT / "scripts" / name), *map(str, args)],
                          capture_output=True, text=True, cwd=cwd, timeout=900)


@pytest.fixture(scope="module")
def sweep(tmp_path_factory):
    """Two decoders x seeds 0, 1 and -1; seed -1 is refused (the schema: seeds are >= 0)."""
    out = tmp_path_factory.mktemp("sweep") / "multirun"
    done = _script("train.py", "-m", "+decoder=upsample,deconv", "seed=0,1,-1", *TINY,
                   f"hydra.sweep.dir={out}")
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    return out, done.stdout


def test_failed_jobs_do_not_stop_the_sweep_and_are_summarised(sweep):
    out, stdout = sweep
    summary = stdout[stdout.index("Sweep "):]
    assert "6 job(s), 4 finished, 2 failed" in summary
    assert summary.count("FAILED") == 2 and "seed=-1" in summary and "ConfigError" in summary
    failures = sorted(out.glob("*/failure.json"))
    assert len(failures) == 2
    failure = json.loads(failures[0].read_text())
    assert failure["refused"] and failure["traceback"] == "" and "seed=-1" in failure["message"]
    assert failure["config"]["seed"] == -1  # what the job was given: compare groups by it
    assert len(list(out.glob("*/metrics.json"))) == 4
    assert json.loads((out / "summary.json").read_text())[0]["status"] == "ok"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _get(url, data=None):
    headers = {"X-XSRF-Protected": "1", "Content-Type": "application/json"}
    body = None if data is None else json.dumps(data).encode()
    with urllib.request.urlopen(urllib.request.Request(url, body, headers), timeout=30) as r:
        raw = r.read()
    return raw if raw[:4] == b"\x89PNG" else json.loads(raw)


def test_tensorboard_serves_scalars_prediction_images_and_hparams(sweep):
    out, _ = sweep
    port = _free_port()
    # --reload_task=blocking with --reload_interval=0: the event files are read completely
    # before the server starts listening, so what it serves does not depend on timing.
    server = subprocess.Popen([sys.executable, "-m", "tensorboard.main", "--logdir", str(out),
                               "--host", "127.0.0.1", "--port", str(port), "--load_fast=false",
                               "--reload_task=blocking", "--reload_interval=0"],
                              stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    base = f"http://127.0.0.1:{port}/data"
    try:
        for line in server.stderr:  # "TensorBoard x.y at http://127.0.0.1:PORT/ ..." once serving
            if f"127.0.0.1:{port}" in line:
                break
        else:
            pytest.fail(f"tensorboard exited with {server.wait()} before serving")
        threading.Thread(target=server.stderr.read, daemon=True).start()  # keep the pipe open
        runs = _get(f"{base}/runs")  # 4 jobs x tb/train, tb/validation
        assert len(runs) == 8, runs
        job = next(r[: -len("/tb/validation")] for r in runs
                   if r.endswith("/tb/validation") and "deconv" in r)
        assert job.startswith(("0_", "1_", "2_", "3_", "4_", "5_")) and "seed=" in job
        assert "trainer.epochs" not in job  # the job's folder is named by what the sweep varies

        q = urllib.parse.urlencode({"run": f"{job}/tb/validation", "tag": "IoU/mean"})
        points = _get(f"{base}/plugin/scalars/scalars?{q}")
        assert [step for _, step, _ in points] == [1, 2]

        q = urllib.parse.urlencode({"run": f"{job}/tb/validation", "tag": "predictions"})
        images = _get(f"{base}/plugin/images/images?{q}")
        assert len(images) == 2  # one panel per epoch
        png = _get(f"{base}/plugin/images/individualImage?{images[-1]['query']}")
        assert png[:4] == b"\x89PNG"

        # the explicit experiment config: the swept keys lead, val_mean_iou is the first metric
        experiment = _get(f"{base}/plugin/hparams/experiment", {"experimentName": ""})
        names = [h["name"] for h in experiment["hparamInfos"]]
        assert names[:2] == ["decoder.name", "seed"], names
        assert {"trainer.learning_rate", "loss.name", "model.parameters"} <= set(names)
        metrics = [m["name"]["tag"] for m in experiment["metricInfos"]]
        assert metrics[:3] == ["hparams/val_mean_iou", "hparams/val_pixel_accuracy",
                               "hparams/val_iou/background"], metrics
        assert not [m for m in metrics if "share" in m]
        groups = _get(f"{base}/plugin/hparams/session_groups", {
            "experimentName": "", "allowedStatuses": ["STATUS_UNKNOWN", "STATUS_SUCCESS"],
            "colParams": [], "startIndex": 0, "sliceSize": 100})["sessionGroups"]
        assert len(groups) == 4  # the two seed=-1 jobs were refused before training
        for group in groups:
            # named by the swept settings first, compact (the trial ID), then job number and
            # sweep
            decoder, seed = re.fullmatch(r"(upsample|deconv) seed=([01]) #\d \S+",
                                         group["name"]).groups()
            folder = next(out.glob(f"*_decoder={decoder},seed={seed}"))
            metrics = json.loads((folder / "metrics.json").read_text())
            final = next(m["value"] for m in group["metricValues"]
                         if m["name"]["tag"] == "hparams/val_mean_iou")
            assert final == pytest.approx(metrics["val_mean_iou"], abs=1e-6)
            assert group["hparams"]["decoder.name"] == metrics["decoder"]
    finally:
        server.terminate()
        server.wait(timeout=30)


def test_compare_answers_which_decoder_is_better(sweep):
    out, _ = sweep
    done = _script("compare.py", out, "--images", "2")
    assert done.returncode == 0, done.stderr[-3000:]
    assert "settings that differ: decoder.name" in done.stdout
    rows = [line for line in done.stdout.splitlines() if line.startswith("| decoder.name=")]
    assert len(rows) == 2 and all(" 2/3 | " in row for row in rows)  # 2 seeds done, 1 failed
    assert "Best: decoder.name=" in done.stdout and "seed=-1" in done.stdout
    assert len((out / "compare.csv").read_text().splitlines()) == 3
    assert len((out / "compare_runs.csv").read_text().splitlines()) == 7
    from PIL import Image

    assert Image.open(out / "compare.png").size[0] > 4 * 128  # input, truth, two decoders


def test_evaluate_reproduces_the_training_figure_and_writes_its_report(sweep):
    out, _ = sweep
    run = sorted(p.parent for p in out.glob("*/metrics.json"))[0]
    done = _script("evaluate.py", run, "--tile", "0", "--worst", "2")
    assert done.returncode == 0, done.stderr[-3000:]
    report = json.loads((run / "evaluation" / "val" / "evaluation.json").read_text())
    trained = json.loads((run / "metrics.json").read_text())
    assert report["images"] == 8
    assert report["mean_iou"] == pytest.approx(trained["val_mean_iou"], abs=1e-5)
    assert list(report["iou_per_class"].values()) == pytest.approx(
        trained["val_iou_per_class"], abs=1e-5)
    assert len(report["worst"]) == 2 and report["worst"][0]["file"].startswith("shapes:val[")
    assert (run / "evaluation" / "val" / "confusion_matrix.png").is_file()
    refused = _script("evaluate.py", run, "data.no_such_key=1")
    assert refused.returncode == 2 and "no_such_key" in refused.stderr


def test_each_job_runs_in_a_process_of_its_own_so_memory_stays_flat(sweep):
    """In one process TensorFlow keeps ~65 MB per trained model (keras-team/keras#17458): the
    fourth job would end ~200 MB above the first. In processes of their own they end level."""
    out, _ = sweep
    ends = [json.loads(m.read_text())["rss_mb_at_end"]
            for m in sorted(out.glob("*_decoder=upsample*/metrics.json"))]
    assert len(ends) == 2 and abs(ends[1] - ends[0]) < 40, ends


def test_sigterm_stops_a_sweep_resumably_and_the_same_command_finishes_it(tmp_path):
    import signal
    import time

    out = tmp_path / "multirun"
    args = [sys.executable, str(ROOT / "scripts" / "train.py"), "-m", "seed=0,1", *TINY,
            "trainer.epochs=12", "trainer.steps_per_epoch=2", "diagnostics.preflight=off",
            f"hydra.sweep.dir={out}"]
    proc = subprocess.Popen(args, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            text=True)
    while proc.poll() is None and not list(out.glob("0_*/checkpoints/resume/state-*.json")):
        time.sleep(0.2)  # until job 0's process has saved its first epoch
    proc.send_signal(signal.SIGTERM)  # to the sweep's process: passed on to the job's
    text, _ = proc.communicate(timeout=300)
    assert proc.returncode == 75, text[-3000:]
    assert "run the same command to resume" in text
    assert not list(out.glob("1_*"))  # the sweep stopped: job 1 never started
    again = subprocess.run(args, cwd=ROOT, capture_output=True, text=True, timeout=900)
    assert again.returncode == 0, again.stdout[-3000:]
    assert "seg: resuming" in again.stdout
    for job in ("0_*", "1_*"):
        metrics = json.loads(next(out.glob(f"{job}/metrics.json")).read_text())
        assert metrics["epochs_completed"] == 12
