"""A diagnosis's findings (what, why, fix) and the report that prints them."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path

LEVELS = ("error", "warning", "ok")


class PreflightError(RuntimeError):
    """The checks before training found a set-up that cannot train; the message explains."""


@dataclass
class Finding:
    level: str  # error | warning | ok
    check: str
    title: str
    why: str = ""
    fix: str = ""


@dataclass
class Report:
    """What diagnose() found. `errors` and `warnings` are lists of Findings (check, title, why,
    fix); `ok` is True when there is no error; str(report) is the readable report."""

    findings: list[Finding] = field(default_factory=list)
    tables: dict[str, str] = field(default_factory=dict)
    figures: dict[str, float] = field(default_factory=dict)
    title: str = "seg preflight checks"

    @property
    def errors(self) -> list[Finding]:
        return [f for f in self.findings if f.level == "error"]

    @property
    def warnings(self) -> list[Finding]:
        return [f for f in self.findings if f.level == "warning"]

    @property
    def ok(self) -> bool:
        return not self.errors

    def text(self, errors_only: bool = False, skip_errors: bool = False) -> str:
        """The readable report; errors_only: the errors alone; skip_errors: all but them."""
        lines = [] if errors_only else [f"== {self.title} =="]
        for f in sorted(self.findings, key=lambda f: LEVELS.index(f.level)):
            if (errors_only and f.level != "error") or (skip_errors and f.level == "error"):
                continue
            lines.append(f"[{f.level.upper():>7}] {f.check}: {f.title}")
            for label, text in (("why", f.why), ("fix", f.fix)):
                if text:
                    lines.append(f"          {label}: {text}")
        if not errors_only:
            for name, table in self.tables.items():
                lines += ["", f"-- {name} --", table]
            n_err, n_warn = len(self.errors), len(self.warnings)
            lines.append(f"\n{n_err} error(s), {n_warn} warning(s)")
        return "\n".join(lines)

    __str__ = text

    def as_dict(self) -> dict:
        return {"ok": self.ok, "errors": len(self.errors), "warnings": len(self.warnings),
                "findings": [asdict(f) for f in self.findings], "figures": self.figures}

    def save(self, out_dir: Path):
        out_dir.mkdir(parents=True, exist_ok=True)
        (out_dir / "preflight.txt").write_text(self.text() + "\n")
        (out_dir / "preflight.json").write_text(json.dumps(self.as_dict(), indent=2))
