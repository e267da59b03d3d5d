import os
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
# one thread per op: the test workers (pytest-xdist, one per core) and their subprocesses share
# the cores, and TensorFlow's default of a thread per core in every process oversubscribes them
# (the zoo's training checks: 126 s instead of 138 s over two workers); inherited by the
# scripts the tests start
os.environ.setdefault("TF_NUM_INTRAOP_THREADS", "1")

import numpy as np  # noqa: E402
import pytest  # noqa: E402
from PIL import Image  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]


def pytest_addoption(parser):
    parser.addoption("--all", action="store_true", default=False,
                     help="run every test, the slow ones included (plain pytest leaves out the "
                          "tests marked slow; -m slow runs only those)")


def pytest_collection_modifyitems(config, items):
    """Plain `pytest` is the fast lane: tests marked slow are deselected unless --all or an
    explicit -m (e.g. -m slow) is given."""
    if config.getoption("--all") or config.getoption("markexpr"):
        return
    kept, slow = [], []
    for item in items:
        (slow if item.get_closest_marker("slow") else kept).append(item)
    if slow:
        config.hook.pytest_deselected(items=slow)
        items[:] = kept


@pytest.fixture
def compose():
    """Compose the project's Hydra config like scripts/train.py does, as a plain dict."""
    import seg_hydra

    return lambda *overrides: seg_hydra.compose_dict(list(overrides))


# one pass an epoch (8 steps), not the default's floor of 50 (tests/test_auto_defaults.py)
TINY = ("data.num_train=64", "data.num_val=16", "data.image_size=32", "trainer.batch_size=8",
        "logging.num_panels=2", "trainer.verbose=0", "trainer.steps_per_epoch=null")


@pytest.fixture
def tiny(compose):
    """A config small enough to train in seconds."""
    return lambda *overrides: compose(*TINY, *overrides)


def write_folder_dataset(root: Path, masks: dict[str, np.ndarray], *, mode: str = "L",
                         size_of: dict | None = None) -> Path:
    """images/NAME.png (RGB noise) + masks/NAME.png from the given arrays."""
    (root / "images").mkdir(parents=True, exist_ok=True)
    (root / "masks").mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    for name, mask in masks.items():
        h, w = (size_of or {}).get(name, mask.shape)
        Image.fromarray(rng.integers(0, 255, (h, w, 3), dtype=np.uint8)).save(
            root / "images" / f"{name}.png")
        if mode == "P":
            im = Image.fromarray(mask.astype(np.uint8), mode="P")
            im.putpalette([0, 0, 0, 128, 0, 0, 0, 128, 0] + [200] * (253 * 3))
        elif mode == "I;16":
            im = Image.fromarray(mask.astype(np.uint16))
        else:
            im = Image.fromarray(mask.astype(np.uint8), mode="L")
        im.save(root / "masks" / f"{name}.png")
    return root


@pytest.fixture
def folder_dataset(tmp_path):
    """Six 20x28 pairs with classes 0..2 (not multiples of 8 on purpose)."""
    rng = np.random.default_rng(1)
    masks = {f"s{i}": rng.integers(0, 3, (20, 28)) for i in range(6)}
    return write_folder_dataset(tmp_path / "ds", masks)
