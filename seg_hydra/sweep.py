"""The sweep summary (hydra.callbacks): every job's result, every failed job and why."""

from __future__ import annotations

from pathlib import Path

from seg import compare

try:
    from hydra.experimental.callback import Callback
except ImportError:  # pragma: no cover (hydra-core < 1.1)
    Callback = object


class SweepSummary(Callback):
    """At the end of a sweep: every job's result, every failed job and why (hydra.callbacks).

    Also writes SWEEP_DIR/summary.md and summary.json. `python scripts/compare.py SWEEP_DIR`
    gives the full comparison table.
    """

    def on_multirun_end(self, config, **kwargs):
        sweep_dir = Path(config.hydra.sweep.dir)
        if not sweep_dir.is_dir():
            return
        runs = compare.find_runs(sweep_dir)
        text = compare.sweep_summary(runs, sweep_dir)
        (sweep_dir / "summary.md").write_text(text + "\n")
        (sweep_dir / "summary.json").write_text(compare.summary_json(runs))
        print("\n" + text, flush=True)
