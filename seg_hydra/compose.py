"""Composing the config: where configs/ is, the schema in Hydra's ConfigStore, the resolvers,
and the conversion of a DictConfig into the plain dicts seg reads."""

from __future__ import annotations

import os
import sys
from pathlib import Path

from hydra import compose, initialize_config_dir
from hydra.core.config_store import ConfigStore
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig, OmegaConf

from seg import config
from seg.config import ConfigError, help_for
from seg_hydra.names import job_name, run_name


def config_dir() -> Path:
    """The configs folder: $SEG_CONFIG_DIR, else the one beside the running script's folder
    (scripts/../configs, so a non-editable install works from a checkout), else the source
    tree's, else ./configs."""
    candidates = [os.environ.get("SEG_CONFIG_DIR")]
    if sys.argv and sys.argv[0]:
        candidates.append(Path(sys.argv[0]).resolve().parent.parent / "configs")
    candidates += [Path(__file__).resolve().parents[1] / "configs", Path.cwd() / "configs"]
    for c in candidates:
        if c and (Path(c) / "train.yaml").is_file():
            return Path(c).resolve()
    raise FileNotFoundError("no configs/train.yaml found: run the scripts from a checkout of "
                            "seg, or set SEG_CONFIG_DIR=/path/to/configs")


CONFIG_DIR = str(config_dir())
PROJECT_ROOT = Path(CONFIG_DIR).parent


def _store_schema():
    """The schema (seg/config.py) as Hydra structured configs: composition then refuses an
    unknown key or a value of the wrong type, naming it."""
    store = ConfigStore.instance()
    store.store(name="train_schema", node=config.Config)
    for name, schema in config.DATA.items():
        store.store(group="data", name=f"{name}_schema", node=schema)


_store_schema()
for _name, _fn in (("run_name", run_name), ("job_name", job_name),
                   ("project_root", lambda: str(PROJECT_ROOT))):
    if not OmegaConf.has_resolver(_name):
        OmegaConf.register_new_resolver(_name, _fn)


def to_dict(cfg: DictConfig, missing_ok: bool = False) -> dict | None:
    """The resolved config as plain dicts; every missing mandatory value (???) is named.

    missing_ok: None instead of the error, for a record of what a failed job was given.
    """
    missing = sorted(k for k in OmegaConf.missing_keys(cfg) if not k.startswith("hydra."))
    if missing and missing_ok:
        return None
    if missing:
        raise ConfigError("missing value(s), set on the command line as key=value:\n  "
                          + "\n  ".join(f"{k}" + (f" ({help_for(k)})" if help_for(k) else "")
                                        for k in missing))
    return OmegaConf.to_container(cfg, resolve=True, throw_on_missing=True)


def hydra_record(cfg: DictConfig) -> dict[str, str]:
    """Hydra's record of a run (.hydra/config.yaml, hydra.yaml, overrides.yaml), as texts.

    hydra.output_subdir is null, so Hydra writes nothing into the run folder itself: seg
    writes these with config.json once the folder's checks passed, and a refused resume
    changes no file.
    """
    hc = HydraConfig.get()
    return {".hydra/config.yaml": OmegaConf.to_yaml(cfg),
            ".hydra/hydra.yaml": OmegaConf.to_yaml(OmegaConf.create({"hydra": hc})),
            ".hydra/overrides.yaml": OmegaConf.to_yaml(hc.overrides.task)}


def compose_dict(overrides: list[str]) -> dict:
    """configs/train.yaml composed with command-line overrides, as plain dicts (no Hydra run)."""
    from seg_hydra.errors import deleted_then_used  # noqa: PLC0415 (errors imports seg.train's kin)

    deleted = deleted_then_used(list(overrides))
    if deleted:
        raise ConfigError(deleted)
    with initialize_config_dir(config_dir=CONFIG_DIR, version_base="1.3"):
        cfg = to_dict(compose(config_name="train", overrides=overrides))
    cfg.pop("hydra", None)
    return cfg


def apply_overrides(cfg: dict, overrides: list[str]) -> dict:
    """A run's saved config (config.json) with key=value overrides; unknown keys are refused."""
    bad = [o for o in overrides if "=" not in o or o.startswith(("+", "~"))]
    if bad:
        raise ConfigError(f"overrides must be key=value on the run's config, got {bad}")
    base = OmegaConf.create(cfg)
    OmegaConf.set_struct(base, True)  # a typo is an error, not a new key
    merged = to_dict(OmegaConf.merge(base, OmegaConf.from_dotlist(list(overrides))))
    changed = tuple(o.split("=", 1)[0] for o in overrides)
    bad = [p for p in config.problems({k: v for k, v in merged.items()
                                       if k not in ("class_names", "computed")})
           if p.startswith(changed)]  # the run's own values are not judged again
    if bad:
        raise ConfigError("\n".join(bad))
    return merged
