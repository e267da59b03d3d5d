"""Run and job folder names from Hydra's override_dirname (the resolvers run_name, job_name)."""

from __future__ import annotations

import hashlib
import re
import sys

_SHORT_FLOAT = re.compile(r"=(-?\d+\.\d{5,}(?:[eE]-?\d+)?)(?=,|$)")


def run_name(override_dirname: str) -> str:
    """Folder-safe run name from Hydra's override_dirname; 'default' when there is none.

    Long floats (a sampled learning rate) are shown with 4 significant digits; the exact
    values are in the run's config.json. Names longer than 120 characters are cut and end in
    a hash of all the overrides, so they stay unique and within the file system's 255 bytes.
    """
    name = _SHORT_FLOAT.sub(lambda m: f"={float(m.group(1)):.4g}", override_dirname)
    # no "[ ] * ?": TensorFlow reads checkpoint paths as file patterns (a list value such as
    # data.scale_range=[1.0,1.0] is written with parentheses instead)
    # nor "\\": Hydra escapes a ":" in a value (model.encoder=hub\\:NAME) with it
    name = name.replace("\\:", ":").translate(str.maketrans("[]\\", "()_", "+*?"))
    name = name.replace("/", "_") or "default"
    if len(name) > 120:
        name = f"{name[:111]}_{hashlib.sha1(override_dirname.encode()).hexdigest()[:8]}"
    return name


def _swept_keys(params=None) -> set[str]:
    """Keys a sweep varies: those of hydra.sweeper.params and the command line's sweeps."""
    keys = {str(k).lstrip("+~") for k in (params or {})}
    try:
        from hydra.core.override_parser.overrides_parser import OverridesParser

        args = [a for a in sys.argv[1:] if "=" in a and not a.startswith("-")]
        keys |= {o.key_or_group.lstrip("+~") for o in OverridesParser.create().parse_overrides(args)
                 if o.is_sweep_override()}
    except Exception:  # an argument Hydra itself will report; the name just keeps its order
        pass
    return keys


def swept_settings(override_dirname: str, params=None) -> list[str]:
    """The settings a sweep varies, from a job's override_dirname: ["decoder=deconv", "seed=1"]
    ([] when none is found)."""
    swept = _swept_keys(params)
    parts = re.split(r",(?=[\w.+~/-]+=)", override_dirname) if override_dirname else []
    return [p.lstrip("+~") for p in parts if p.split("=", 1)[0].lstrip("+~") in swept]


def job_name(override_dirname: str, params=None) -> str:
    """A sweep job's folder name: the swept settings alone (the others are the same for every
    job, and recorded in its config.json), so that TensorBoard's run names, cut to their first
    characters, still tell the jobs apart; all the overrides when none is found to be swept."""
    return run_name(",".join(swept_settings(override_dirname, params)) or override_dirname)
