"""seg.console: TensorFlow's start-up noise kept off stderr, other lines passed on, one device
line."""

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

NOISE_MARKS = ("E0000", "I0000", "W0000", "cuInit", "absl::InitializeLog")
NOISE_LINES = (
    b"WARNING: All log messages before absl::InitializeLog() is called are written to STDERR\n",
    b"I0000 00:00:1796283806.917995    4426 port.cc:153] oneDNN custom operations are on. "
    b"You may see slightly different numerical results.\n",
    b"I0000 00:00:1796283806.918377    4426 cudart_stub.cc:31] Could not find cuda drivers on "
    b"your machine, GPU will not be used.\n",
    b"E0000 00:00:1796283809.189412    4426 cuda_platform.cc:52] failed call to cuInit: INTERNAL: "
    b"CUDA error: Failed call to cuInit: UNKNOWN ERROR (303)\n",
)


def _quiet_run(*args, cwd=ROOT):
    env = {k: v for k, v in os.environ.items() if k != "TF_CPP_MIN_LOG_LEVEL"}  # as a user's
    return subprocess.run([sys.executable, *args], cwd=cwd, env=env, capture_output=True,
                          text=True, timeout=120)


@pytest.mark.slow
@pytest.mark.parametrize("args", [("-c", "import seg_hydra; print(seg_hydra.DEVICE)"),
                                  ("scripts/compare.py", "EMPTY")], ids=["import", "compare"])
def test_no_start_up_noise_on_stderr(args, tmp_path):
    args = tuple(str(tmp_path) if a == "EMPTY" else a for a in args)
    r = _quiet_run(*args)
    assert not [m for m in NOISE_MARKS if m in r.stderr], r.stderr
    if args[0] == "-c":
        assert r.returncode == 0 and r.stdout.strip(), r.stderr
    else:  # an empty folder is refused, and the refusal still reaches stderr
        assert r.returncode == 2 and "no run folders" in r.stderr, r.stderr


def test_other_lines_pass_noise_is_dropped(capfd):
    from seg.console import filtered_stderr

    def start_up():  # as TensorFlow's C++ code writes: straight to file descriptor 2
        for line in NOISE_LINES:
            os.write(2, line)
        os.write(2, b"E0000 00:00:1.2    7 real.cc:1] a real error\n")
        os.write(2, b"custom line\n")

    capfd.readouterr()
    with filtered_stderr():
        start_up()
        assert capfd.readouterr().err == ""  # held until the block ends
    err = capfd.readouterr().err
    assert err == "E0000 00:00:1.2    7 real.cc:1] a real error\ncustom line\n"


def test_stderr_restored_when_the_block_raises(capfd):
    from seg.console import filtered_stderr

    capfd.readouterr()
    with pytest.raises(ImportError), filtered_stderr():
        os.write(2, NOISE_LINES[-1] + b"why the import failed\n")
        raise ImportError("no tensorflow")
    os.write(2, b"after\n")
    assert capfd.readouterr().err == "why the import failed\nafter\n"


def test_closed_stderr_does_not_break_it(tmp_path):
    # seg.console loaded from its file: no TensorFlow, a fast subprocess
    path = str(ROOT / "seg" / "console.py")
    code = ("import importlib.util, os\n"
            f"spec = importlib.util.spec_from_file_location('c', {path!r})\n"
            "c = importlib.util.module_from_spec(spec); spec.loader.exec_module(c)\n"
            "with c.filtered_stderr():\n"
            "    print('ran')\n")
    r = subprocess.run([sys.executable, "-c", code], stderr=subprocess.DEVNULL,
                       stdout=subprocess.PIPE, text=True, timeout=60,
                       preexec_fn=lambda: os.close(2))
    assert r.returncode == 0 and r.stdout == "ran\n"


def test_is_noise():
    from seg.console import is_noise

    assert all(is_noise(line) for line in NOISE_LINES)
    assert is_noise("To enable the following instructions: AVX2 FMA, in other operations, "
                    "rebuild TensorFlow with the appropriate compiler flags.")
    assert not is_noise("E0000 00:00:1796283809.1    4426 cuda_platform.cc:52] out of memory")
    assert not is_noise("Traceback (most recent call last):")


def test_device_line_on_this_machine():
    import tensorflow as tf

    from seg.console import quiet_tensorflow

    line = quiet_tensorflow()
    assert quiet_tensorflow() is line  # once: the second call is the cached line
    if tf.config.list_physical_devices("GPU"):
        assert line.startswith("GPU: ")
    else:
        assert line == "no GPU found: training on CPU"


def test_device_line_names_each_gpu():
    from seg.console import device_line

    assert device_line([]) == "no GPU found: training on CPU"
    assert device_line(["NVIDIA H200"], [("NVIDIA H200", 143771)]) == "GPU: NVIDIA H200 (140 GiB)"
    assert device_line(["NVIDIA H200"], []) == "GPU: NVIDIA H200"
    assert device_line(["A", "B"], [("B", 2048), ("A", 1024)]) == "GPU: A (1 GiB); GPU: B (2 GiB)"


def test_train_log_keeps_what_stayed_on_screen(tmp_path):
    import io

    from seg_hydra.jobs import _Tee

    screen, log = io.StringIO(), io.StringIO()
    tee = _Tee(screen, log)
    for text in ("seg: start\n", "\r  step 1/9", "\r  step 2/9", "\r" + " " * 9 + "\repoch 1/2  loss 0.5\n",
                 "windows line\r\n", "a\nb\n", "no end"):
        tee.write(text)
    assert screen.getvalue().startswith("seg: start\n\r  step 1/9")
    assert log.getvalue() == "seg: start\nepoch 1/2  loss 0.5\nwindows line\na\nb\nno end"


def test_console_to_appends_to_the_log_and_restores_the_streams(tmp_path, capsys):
    from seg_hydra.jobs import console_to

    log = tmp_path / "train.log"
    log.write_text("[HYDRA] earlier\n")
    before = sys.stdout, sys.stderr
    with console_to(log):
        print("to both")
        print("an error", file=sys.stderr)
    assert (sys.stdout, sys.stderr) == before
    assert log.read_text() == "[HYDRA] earlier\nto both\nan error\n"
    assert "to both" in capsys.readouterr().out
    with console_to(None):  # a worker that is not the chief: the console alone
        print("only here")
    assert "only here" not in log.read_text()
    with console_to(log), console_to(log):  # a job run inside a launcher's worker: once
        print("once")
    assert log.read_text().count("once") == 1


@pytest.mark.parametrize("tf_config, chief", [
    (None, True),
    ('{"cluster": {"worker": ["a:1", "b:1"]}, "task": {"type": "worker", "index": 0}}', True),
    ('{"cluster": {"worker": ["a:1", "b:1"]}, "task": {"type": "worker", "index": 1}}', False),
    ('{"cluster": {"chief": ["a:1"], "worker": ["b:1"]}, "task": {"type": "worker", "index": 0}}',
     False),
    ("not json", True),
])
def test_only_the_chief_keeps_the_runs_log(monkeypatch, tf_config, chief):
    from seg_hydra.jobs import chief_process

    if tf_config is None:
        monkeypatch.delenv("TF_CONFIG", raising=False)
    else:
        monkeypatch.setenv("TF_CONFIG", tf_config)
    assert chief_process() is chief


def test_the_last_line_names_a_collapse_or_an_open_alarm_and_the_panel(tmp_path):
    from seg_hydra.jobs import closing_lines

    (tmp_path / "panels").mkdir()
    (tmp_path / "panels" / "epoch_002.png").write_bytes(b"")
    base = {"val_mean_iou": 0.15, "decoder": "upsample", "epochs_completed": 2,
            "wall_time_s": 174.0}
    healthy = closing_lines({**base, "diagnostics": {"constant_output": False,
                                                      "open_alarms": []}}, tmp_path)
    assert healthy.count("\n") == 0 and healthy.startswith("val mIoU 0.1500 (upsample")
    collapsed = closing_lines({**base, "diagnostics": {"constant_output": True, "open_alarms": [
        "constant output: 100.0% of pixels predicted as background, probabilities vary by 0.000 "
        "across the image (the 'yellow image')"]}}, tmp_path)
    last = collapsed.splitlines()[-1]
    assert last.startswith("seg: COLLAPSED (the 'yellow image'): constant output: 100.0%")
    assert str(tmp_path / "panels" / "epoch_002.png") in last
    alarm = closing_lines({**base, "diagnostics": {"constant_output": False, "open_alarms": [
        "class vanished: car is 5.0% of true pixels but 0.00% of predicted ones"]}}, tmp_path)
    assert alarm.splitlines()[-1].startswith("seg: ALARM open at the end: class vanished: car")


@pytest.mark.parametrize("sweep", [False, True], ids=["run", "sweep job"])
def test_a_collapsed_run_exits_4_and_a_sweep_goes_on(monkeypatch, tmp_path, capsys, sweep):
    """A single run that finished collapsed exits 4 (scripts can act on it) after its closing
    lines; a sweep's job returns its val mIoU, so the sweep goes on over its other jobs."""
    from types import SimpleNamespace

    from seg_hydra import jobs

    metrics = {"val_mean_iou": 0.1, "decoder": "upsample", "epochs_completed": 2,
               "wall_time_s": 20.0, "diagnostics": {"constant_output": True, "open_alarms": [
                   "constant output: 99.5% of pixels predicted as shape"], "collapse": {
                   "finding": "constant output: 99.5% of pixels predicted as shape",
                   "fix": "model.head_activation=null loss.from_logits=true"}}}
    monkeypatch.setattr(jobs, "to_dict", lambda cfg, **_: {})
    monkeypatch.setattr(jobs, "hydra_record", lambda cfg: {})
    monkeypatch.setattr(jobs, "trial_of", lambda *a: None)
    monkeypatch.setattr(jobs, "run", lambda *a, **k: metrics)
    monkeypatch.setattr(jobs, "in_own_process", lambda fn, log, run, *a, **k: run(*a, **k))
    hc = SimpleNamespace(job=SimpleNamespace(override_dirname="", num=0),
                         overrides=SimpleNamespace(task=[]))
    (tmp_path / "refused.json").write_text("{}")  # an earlier start's refusal: now old
    if sweep:
        assert jobs._job(None, hc, True, tmp_path) == 0.1
    else:
        with pytest.raises(SystemExit) as stop:
            jobs._job(None, hc, False, tmp_path)
        assert stop.value.code == jobs.COLLAPSED_EXIT == 4
        assert not (tmp_path / "refused.json").exists()
    lines = capsys.readouterr().out.strip().splitlines()
    assert lines[-2].startswith("seg: COLLAPSED") and lines[-1].endswith(
        "fix: model.head_activation=null loss.from_logits=true")
    healthy = {**metrics, "diagnostics": {"constant_output": False, "open_alarms": []}}
    monkeypatch.setattr(jobs, "run", lambda *a, **k: healthy)
    assert jobs._job(None, hc, sweep, tmp_path) == 0.1  # no exit: code 0


def test_progress_is_keras_bar_on_a_terminal_and_plain_lines_in_a_pipe():
    import io

    import keras

    from seg.console import LineProgress, progress

    class Terminal(io.StringIO):
        def isatty(self):
            return True

    assert isinstance(progress(3, "image", "predict", stream=Terminal()), keras.utils.Progbar)
    now = [0.0]
    out = io.StringIO()
    bar = LineProgress(40, "image", "predict", every_s=20, stream=out, clock=lambda: now[0])
    for _ in range(40):  # a second an image: a line every 20 s
        now[0] += 1
        bar.add(1)
    assert out.getvalue() == "predict: 20/40 image(s)\npredict: 40/40 image(s)\n"
    assert isinstance(progress(3, "image", "predict", stream=io.StringIO()), LineProgress)
