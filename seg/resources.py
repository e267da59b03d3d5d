"""Will it fit? The model's size and its training memory, weighed before anything is built.

An estimate, from the config alone: the parameters (seg.models.estimate_parameters, exact for
the U-Net encoder), four float32 copies of them in training (weights, gradients, Adam's two
moments), and the activations that back-propagation keeps for a batch of padded crops. Against
the memory this process may use: the GPU's when training on one, else the machine's available
memory (a container's limit included). Over it: refused, with the figures. Near it: a warning.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from dataclasses import dataclass

from seg import geometry
from seg.config import ConfigError
from seg.models import estimate_parameters, levels_of

GIB = 2 ** 30
TENSORS_PER_LEVEL = 15  # stored per level and channel: a block's 6 (conv, norm, activation x2)
                        # in the encoder, 9 in the decoder (up-sampling, concatenation, block)
OVERHEAD = 1.5          # workspace, the input pipeline's batches, allocator slack
WARN_SHARE, REFUSE_SHARE = 0.6, 0.9


@dataclass
class Estimate:
    parameters: int
    padded_size: int
    weights_bytes: int      # weights, gradients and the optimizer's state
    activation_bytes: int   # what one training step keeps for the backward pass
    available_bytes: int | None
    device: str

    @property
    def total_bytes(self) -> int:
        return int((self.weights_bytes + self.activation_bytes) * OVERHEAD)

    def describe(self) -> str:
        text = (f"{self.parameters:,} parameters ({self.weights_bytes / GIB:.2f} GiB with "
                f"gradients and optimizer state), activations {self.activation_bytes / GIB:.2f} "
                f"GiB per step at {self.padded_size}x{self.padded_size}: about "
                f"{self.total_bytes / GIB:.1f} GiB")
        if self.available_bytes:
            text += f" of the {self.available_bytes / GIB:.1f} GiB available on the {self.device}"
        return text


def estimate(cfg: dict, device: str | None = None) -> Estimate:
    """The training memory of a config (plain dict tree) per device. A crop, depth or batch
    still `auto` (not sized from the data yet: seg.parts.sized) counts as the most that auto
    can choose."""
    cfg = geometry.largest(cfg)
    data, model, dec = cfg["data"], cfg["model"], cfg["decoder"]
    params = estimate_parameters(num_classes=data["num_classes"], in_channels=data["channels"],
                                 decoder=dec["name"], kernel_size=dec["kernel_size"], **model)
    levels = levels_of(model["encoder"], model["depth"])
    step = 2 ** levels
    size = -(-data["image_size"] // step) * step
    batch = cfg["trainer"]["batch_size"]  # per replica
    width = 2 if cfg["trainer"]["precision"] != "float32" else 4
    per_image = sum((size // 2 ** level) ** 2 * model["base_filters"] * 2 ** level
                    for level in range(levels + 1)) * TENSORS_PER_LEVEL * width
    device = device or ("GPU" if _gpu_memory() else "CPU")
    return Estimate(parameters=params, padded_size=size, weights_bytes=params * 4 * 4,
                    activation_bytes=per_image * batch, device=device,
                    available_bytes=_gpu_memory() if device == "GPU" else available_memory())


def check(cfg: dict, log=print) -> Estimate:
    """Refuse (ConfigError) a config whose training cannot fit; warn near the limit."""
    est = estimate(cfg)
    if not est.available_bytes:
        return est
    share = est.total_bytes / est.available_bytes
    if share > REFUSE_SHARE:
        raise ConfigError(
            f"this config does not fit in memory: {est.describe()}. Lower trainer.batch_size "
            f"(now {cfg['trainer']['batch_size']}), data.image_size "
            f"({cfg['data']['image_size']}), model.base_filters "
            f"({cfg['model']['base_filters']}) or model.depth ({cfg['model']['depth']}).")
    if share > WARN_SHARE:
        log(f"seg: warning: close to the memory limit: {est.describe()}; training may be "
            "slow (swapping) or be killed")
    return est


def _read(path: str) -> str:
    with open(path) as f:
        return f.read().strip()


def available_memory() -> int | None:
    """Bytes this process may still use: MemAvailable, or a cgroup's limit when lower."""
    found = []
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    found.append(int(line.split()[1]) * 1024)
    except OSError:
        pass
    for limit, used in (("/sys/fs/cgroup/memory.max", "/sys/fs/cgroup/memory.current"),
                        ("/sys/fs/cgroup/memory/memory.limit_in_bytes",
                         "/sys/fs/cgroup/memory/memory.usage_in_bytes")):
        try:
            text = _read(limit)
            if text != "max" and int(text) < 2 ** 60:
                found.append(int(text) - int(_read(used)))
        except (OSError, ValueError):
            continue
    if not found:
        try:
            found.append(os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE"))
        except (OSError, ValueError):
            return None
    return max(min(found), 0)


_GPU = {}


def _gpu_memory() -> int | None:
    """The first GPU's total memory in bytes (nvidia-smi), or None without one."""
    if "bytes" not in _GPU:
        _GPU["bytes"] = None
        if os.environ.get("CUDA_VISIBLE_DEVICES", None) not in ("", "-1") and \
                shutil.which("nvidia-smi"):
            try:
                text = subprocess.run(
                    ["nvidia-smi", "--query-gpu=memory.total", "--format=csv,noheader,nounits"],
                    capture_output=True, text=True, timeout=10).stdout.split()
                _GPU["bytes"] = int(float(text[0])) * 2 ** 20 if text else None
            except (OSError, ValueError, subprocess.SubprocessError):
                pass
    return _GPU["bytes"]
