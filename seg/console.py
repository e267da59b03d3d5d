"""What the console shows while TensorFlow starts: its C++ start-up noise dropped, one device line.

TensorFlow 2.21 writes a handful of lines to the process's stderr (file descriptor 2) while it
loads and when it first looks for devices: absl's "before InitializeLog" warning, the oneDNN
notice, "Could not find cuda drivers", "failed call to cuInit" and the like. They are written
before absl's log is set up, so TF_CPP_MIN_LOG_LEVEL does not hide them, and on a CPU machine
they read like errors. quiet_tensorflow() imports TensorFlow and enumerates its GPUs with fd 2
captured, drops the lines listed in NOISE, passes every other line on, and returns one line that
says which device trains (no GPU, or each GPU's name and memory).

seg/__init__.py calls quiet_tensorflow() before anything else, so `import seg` is quiet too;
this module imports nothing from seg.

progress() is the scripts' progress count: Keras' bar on a terminal, plain lines (LineProgress)
in a pipe or a file, where the bar's colour codes and carriage returns would be garbage.
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time

# Known start-up noise, matched (re.search) against a line's text: the part after
# "I0000 00:00:1796283806.917995    4426 port.cc:153] " for absl's format, else the whole line.
# Only lines TensorFlow writes on every start of a CPU (or a healthy GPU) machine belong here:
# anything not matched is passed on, so that a real error is never hidden.
NOISE = (
    # absl's preamble, written once per loaded copy of absl (TensorFlow loads two)
    r"^WARNING: All log messages before absl::InitializeLog\(\) is called are written to STDERR",
    r"^oneDNN custom operations are on\.",  # port.cc
    r"^Could not find cuda drivers on your machine, GPU will not be used",  # cudart_stub.cc
    r"^Ignore above cudart dlerror if you do not have a GPU set up",  # cudart_stub.cc
    r"^failed call to cuInit: ",  # cuda_platform.cc, when there is no GPU or no driver
    r"^TF-TRT Warning: Could not find TensorRT",  # TensorRT absent
    r"^Unable to register cu(DNN|FFT|BLAS) factory",  # the CUDA plugins registered twice
    r"^computation placer already registered",  # the same, for XLA's placer
    # cpu_feature_guard.cc: two lines
    r"^This TensorFlow binary is optimized to use available CPU instructions",
    r"^To enable the following instructions: .*rebuild TensorFlow with the appropriate compiler",
    # util.cc, when the first model runs on a CPU without AVX-512 int32 kernels: a fallback
    r"^oneDNN supports DT_INT32 only on platforms with AVX-512\. Falling back",
)

_ABSL = re.compile(rb"^[IWEF]\d{4} \d+:\d+:\d+\.\d+\s+\d+ \S+:\d+\] ")
_DEVICE: list[str] = []  # the line quiet_tensorflow() returned, once it has run


def is_noise(line: bytes | str, patterns=NOISE) -> bool:
    """Whether one line of stderr is start-up noise: its text (absl's prefix aside) matches one
    of patterns."""
    if isinstance(line, str):
        line = line.encode()
    line = line.rstrip(b"\r\n")
    if (prefix := _ABSL.match(line)):
        line = line[prefix.end():]
    text = line.decode("utf-8", "replace")
    return any(re.search(p, text) for p in patterns)


@contextlib.contextmanager
def filtered_stderr(patterns=NOISE):
    """Within the block, whatever is written to file descriptor 2 (C code included) goes to a
    temporary file; on leaving, even by an exception, fd 2 is restored and the lines that are
    not noise (is_noise) are written to it, in order.

    Where fd 2 cannot be duplicated (closed) the block runs with stderr as it is.
    """
    with contextlib.suppress(AttributeError, OSError, ValueError):
        sys.stderr.flush()  # what Python has buffered belongs before the block
    try:
        saved = os.dup(2)
    except OSError:
        yield
        return
    try:
        capture = tempfile.TemporaryFile()  # noqa: SIM115 (open across the yield; closed below)
    except OSError:
        os.close(saved)
        yield
        return
    try:
        os.dup2(capture.fileno(), 2)
        yield
    finally:
        try:
            sys.stderr.flush()  # Python's own writes in the block (a warning) are captured too
        except (AttributeError, OSError, ValueError):
            pass
        finally:  # fd 2 comes back whatever happens, a signal's exception in flush() included
            os.dup2(saved, 2)
            os.close(saved)
            capture.seek(0)
            kept = b"".join(line for line in capture.read().splitlines(keepends=True)
                            if not is_noise(line, patterns))
            capture.close()
            while kept:  # os.write may write less than asked (a pipe)
                try:
                    kept = kept[os.write(2, kept):]
                except OSError:
                    break


def quiet_tensorflow() -> str:
    """Import TensorFlow and enumerate its GPUs without its start-up noise on the console
    (filtered_stderr), and return one line naming the device: "no GPU found: training on CPU",
    or "GPU: NVIDIA H200 (140 GiB)" per GPU ("; " between them).

    Idempotent: a second call returns the first call's line and does nothing else.
    """
    if _DEVICE:
        return _DEVICE[0]
    patterns = list(NOISE)  # read when the block ends
    smi: list[tuple[str, int]] = []
    with filtered_stderr(patterns):
        import tensorflow as tf

        # the first look for devices is what tries cuInit (and logs its failure)
        gpus = tf.config.list_physical_devices("GPU")
        names = []
        for gpu in gpus:
            try:
                names.append(tf.config.experimental.get_device_details(gpu).get("device_name")
                             or gpu.name)
            except Exception:  # noqa: BLE001 (a name is a nicety; the line must come)
                names.append(gpu.name)
        smi = _nvidia_smi() if names or shutil.which("nvidia-smi") else []
        if smi and not names:  # a GPU TensorFlow cannot use: its CUDA lines say why, kept
            patterns[:] = [p for p in NOISE if not re.search(r"cu(da|Init)", p)]
    line = device_line(names, smi)
    if smi and not names:
        line = (f"no GPU usable by TensorFlow (nvidia-smi lists {smi[0][0]}; see the CUDA "
                "lines above: is tensorflow[and-cuda] installed?): training on CPU")
    _DEVICE.append(line)
    return _DEVICE[0]


def device_line(names: list[str], smi: list[tuple[str, int]] | None = None) -> str:
    """The device line for the GPUs TensorFlow sees (their names, in its order), given
    nvidia-smi's (name, MiB) rows: each GPU's memory is that of its row, or of the first row of
    the same name; without one the memory is left out."""
    if not names:
        return "no GPU found: training on CPU"
    smi = smi or []
    parts = []
    for i, name in enumerate(names):
        row = smi[i] if i < len(smi) and smi[i][0] == name else \
            next((r for r in smi if r[0] == name), None)
        parts.append(f"GPU: {name} ({row[1] / 1024:.0f} GiB)" if row else f"GPU: {name}")
    return "; ".join(parts)


def _nvidia_smi() -> list[tuple[str, int]]:
    """nvidia-smi's (name, total MiB) per GPU visible to this process, [] without nvidia-smi."""
    if not shutil.which("nvidia-smi"):
        return []
    try:
        out = subprocess.run(["nvidia-smi", "--query-gpu=name,memory.total",
                              "--format=csv,noheader,nounits"],
                             capture_output=True, text=True, timeout=10).stdout
        rows = [(name.strip(), int(float(mib))) for name, mib in
                (line.rsplit(",", 1) for line in out.splitlines() if "," in line)]
    except (OSError, ValueError, subprocess.SubprocessError):
        return []
    # nvidia-smi lists every GPU; CUDA_VISIBLE_DEVICES (as indices) picks those TensorFlow sees
    visible = os.environ.get("CUDA_VISIBLE_DEVICES")
    if visible is not None and all(v.strip().isdigit() for v in visible.split(",") if v.strip()):
        picked = [int(v) for v in visible.split(",") if v.strip()]
        rows = [rows[i] for i in picked if i < len(rows)]
    return rows


class LineProgress:
    """A progress count for a pipe or a file: "LABEL: DONE/TOTAL UNIT(s)" on a line of its own
    every `every_s` seconds (not at all for a job shorter than that), no colour codes, no
    carriage returns. add(n) as Keras' Progbar.add."""

    def __init__(self, total: int | None, unit: str, label: str, *, every_s: float = 20.0,
                 stream=None, clock=time.monotonic):
        self.total, self.unit, self.label, self.every_s = total, unit, label, every_s
        self.stream, self.clock, self.done = stream, clock, 0
        self._shown = clock()

    def add(self, n: int = 1):
        self.done += n
        now = self.clock()
        if now - self._shown >= self.every_s:
            self._shown = now
            of = f"/{self.total}" if self.total else ""
            print(f"{self.label}: {self.done}{of} {self.unit}(s)", file=self.stream or sys.stdout,
                  flush=True)


def progress(total: int | None, unit: str, label: str, stream=None):
    """A progress count with add(n): Keras' Progbar where stream (sys.stdout) is a terminal,
    else a LineProgress (a plain line every 20 s)."""
    out = stream or sys.stdout
    isatty = getattr(out, "isatty", None)
    if isatty and isatty():
        import keras  # noqa: PLC0415 (this module is imported before TensorFlow is)

        return keras.utils.Progbar(total, unit_name=unit)
    return LineProgress(total, unit, label, stream=stream)
