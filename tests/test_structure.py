"""The module graph of seg/: no import cycle, counting imports inside functions."""

import ast
from pathlib import Path

SEG = Path(__file__).resolve().parents[1] / "seg"


def module_of(path: Path) -> str:
    parts = path.relative_to(SEG.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imports(path: Path, modules: set[str]) -> set[str]:
    """The seg modules a file imports, anywhere in it (module top level or inside functions)."""
    out = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names = [node.module] + [f"{node.module}.{a.name}" for a in node.names]
        else:
            continue
        out |= {n for n in names if n in modules}
    return out


def graph() -> dict[str, set[str]]:
    files = {module_of(p): p for p in SEG.rglob("*.py")}
    modules = set(files)
    edges = {m: imports(p, modules) - {m} for m, p in files.items()}
    # a package's own modules import each other through it; a module importing its package
    # (seg.data.folder -> seg.data) is how Python loads it, not a dependency
    return {m: {t for t in e if not m.startswith(t + ".")} for m, e in edges.items()}


def find_cycle(edges: dict[str, set[str]]) -> list[str] | None:
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(m):
        state[m] = 1
        stack.append(m)
        for t in sorted(edges.get(m, ())):
            if state.get(t) == 1:
                return stack[stack.index(t):] + [t]
            if t not in state and (found := visit(t)):
                return found
        stack.pop()
        state[m] = 2
        return None

    for m in sorted(edges):
        if m not in state and (found := visit(m)):
            return found
    return None


def test_the_finder_sees_a_cycle():
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": set()}) is None


def test_seg_has_no_import_cycle():
    edges = graph()
    assert "seg.monitor" in edges and "seg.diagnostics" in edges["seg.monitor"]
    assert find_cycle(edges) is None, " -> ".join(find_cycle(edges))
