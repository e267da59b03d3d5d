"""Glue between Hydra and seg shared by the scripts: resolvers, config conversion, clean errors.

seg itself never imports Hydra or OmegaConf; this module turns a DictConfig into plain dicts and
seg's refusals into one readable message and exit code 2 instead of a traceback.
"""

from __future__ import annotations

import hashlib
import os
import sys
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")  # keep TensorFlow's start-up chatter out

from omegaconf import DictConfig, OmegaConf  # noqa: E402

PROJECT_ROOT = Path(__file__).resolve().parents[1]
CONFIG_DIR = str(PROJECT_ROOT / "configs")


def _run_name(override_dirname: str) -> str:
    """Folder-safe run name from Hydra's override_dirname; 'default' when there is none.

    Names longer than 120 characters are cut and end in a hash of the whole, so they stay
    unique and within the file system's 255-byte limit.
    """
    name = override_dirname.replace("/", "_").replace("+", "") or "default"
    if len(name) > 120:
        name = f"{name[:111]}_{hashlib.sha1(name.encode()).hexdigest()[:8]}"
    return name


for name, fn in (("run_name", _run_name), ("project_root", lambda: str(PROJECT_ROOT))):
    if not OmegaConf.has_resolver(name):
        OmegaConf.register_new_resolver(name, fn)


def to_dict(cfg: DictConfig) -> dict:
    """The resolved config as plain dicts (missing mandatory values fail here, named)."""
    return OmegaConf.to_container(cfg, resolve=True, throw_on_missing=True)


def refusal_types() -> tuple:
    from seg.data import DataError
    from seg.diagnostics import PreflightError
    from seg.train import ConfigError
    from omegaconf.errors import OmegaConfBaseException
    return ConfigError, DataError, PreflightError, OmegaConfBaseException


def compose_dict(overrides: list[str]) -> dict:
    """configs/train.yaml composed with command-line overrides, as plain dicts (no Hydra run)."""
    from hydra import compose, initialize_config_dir

    with initialize_config_dir(config_dir=CONFIG_DIR, version_base="1.3"):
        cfg = to_dict(compose(config_name="train", overrides=overrides))
    cfg.pop("hydra", None)
    return cfg


def refusing(fn):
    """fn(), with seg's refusals and Hydra's config errors printed as one message (exit 2)."""
    try:
        return fn()
    except refusal_types() as e:
        fail(e)
    except Exception as e:  # Hydra's override errors name the bad key or option
        if type(e).__module__.startswith(("hydra", "omegaconf")):
            fail(e)
        raise


def fail(error: Exception, code: int = 2):
    """Print a refusal without a traceback and exit."""
    kind = type(error).__name__
    print(f"\nseg: {kind}:\n{error}", file=sys.stderr, flush=True)
    sys.exit(code)
