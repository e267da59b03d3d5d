"""Every command in README.md and docs/*.md is checked against the real interfaces, so that a
renamed option or a stale config key in the docs fails here rather than on a reader's machine.

A command is a line of a code block (fenced, or indented by four spaces) that starts with
python, pip, tensorboard or pytest (after a `$ ` prompt, `VAR=value` settings and a shell
`for ... do`). Nothing trains:
- scripts/train.py: the arguments parse with Hydra's own parser, and the config composed with
  the overrides (each value of a sweep in turn) passes the schema check (seg.config.check);
- plan.py, check_data.py, diagnose.py: their own option parsing, then the same compose + check;
- every argparse script: its own parser parses the arguments (parse_args is stopped right
  after parsing, before main does any work); the config overrides it takes are composed too;
- tensorboard: TensorBoard's own flag parser; pip: the extras exist in pyproject.toml; pytest:
  the options exist and the markers are declared.
Placeholders (DIR, N, <time>, ...) are replaced by the values in PLACEHOLDERS below.
"""

from __future__ import annotations

import argparse
import functools
import importlib
import importlib.util
import inspect
import re
import shlex
import sys
import tomllib
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
COMMAND_WORDS = {"python", "python3", "pip", "tensorboard", "pytest"}

# Placeholders in the docs and what stands in for them. Text placeholders are replaced before
# the line is split into words; value placeholders only where a whole override value is one.
TEXT_PLACEHOLDERS = {
    "<fills the card>": "64",                  # a batch size for the GPU at hand
    "plan_<DIR's name>": "plan_toy_streets",   # the plan.py experiment of data.root=DIR
    "<time>": "2026-01-01_12-00-00",           # a run's or a sweep's time stamp
    "<job>": "0_decoder=upsample",             # a sweep job's folder
    "<overrides>": "decoder=deconv",           # a run folder's overrides
    "<that sweep>": "outputs/multirun/2026-01-01_12-00-00",
}
VALUE_PLACEHOLDERS = {"N": "3", "M": "10"}   # data.num_classes=N, plan.budget_minutes=M
# example paths of files and folders the reader has (model.encoder_weights=/path/to/x.h5): made
# empty in the test's folder, since the config check looks whether they exist
EXAMPLE_PATHS = ("/path/to/", "/data/")
# +experiment=plan_<name> is written by scripts/plan.py when it runs: its file need not exist
PLANNED = re.compile(r"^\+experiment=plan_\w+$")
# commands the docs show being refused: (page, the command's arguments) -> what must refuse
REFUSED = {("configuration.md", "scripts/train.py trainer.epochs=0 model.norm=bn"): "check",
           ("configuration.md", "scripts/train.py trainer.epochs=abc"): "compose",
           ("configuration.md", "scripts/train.py model.depth=9 data.image_size=512"): "memory"}
MACHINE_PATH = re.compile(r"(?<![\w.~])/(?:work|tmp|home|root|Users|mnt|private|scratch)/")


# --- extraction ---------------------------------------------------------------------------

def code_lines(text: str) -> list[tuple[int, str]]:
    """(line number, line) of every code block line; python code blocks are left out."""
    out, fence, prev_code, prev_blank = [], None, False, True
    for n, line in enumerate(text.splitlines(), 1):
        stripped = line.strip()
        if stripped.startswith("```"):
            fence = None if fence is not None else (stripped[3:].strip() or "text")
            prev_code, prev_blank = False, False
            continue
        if fence is not None:
            if fence != "python":
                out.append((n, line))
            continue
        indented = line.startswith("    ") and stripped
        if indented and (prev_blank or prev_code):
            out.append((n, line[4:]))
            prev_code = True
        elif stripped:
            prev_code = False
        prev_blank = not stripped
    return out


def _joined(lines: list[tuple[int, str]]):
    """Lines with their backslash continuations joined."""
    n0, buf = None, ""
    for n, line in lines:
        if n0 is None:
            n0 = n
        if line.rstrip().endswith("\\"):
            buf += line.rstrip()[:-1] + " "
            continue
        yield n0, buf + line
        n0, buf = None, ""
    if buf:
        yield n0, buf


def _words(line: str) -> list[str]:
    lex = shlex.shlex(line, posix=True, punctuation_chars=";&|")
    lex.whitespace_split, lex.commenters = True, "#"
    return list(lex)


def commands(page: Path) -> list[tuple[int, list[str]]]:
    """(line number, words) of every command on a page, shell variables expanded."""
    found, variables = [], {}
    for n, line in _joined(code_lines(page.read_text())):
        line = line.strip()
        if line.startswith("$ "):
            line = line[2:]
        for old, new in TEXT_PLACEHOLDERS.items():
            line = line.replace(old, new)
        try:
            words = _words(line)
        except ValueError:  # an unbalanced quote: output text, not a command
            continue
        segment: list[str] = []
        for word in [*words, ";"]:
            if word not in (";", "&&", "|", "||"):
                segment.append(word)
                continue
            while segment and segment[0] in ("do", "then"):
                segment = segment[1:]
            if segment[:1] == ["for"] and len(segment) > 3 and segment[2] == "in":
                variables[segment[1]] = segment[3]  # a loop checked with its first value
            elif segment and re.fullmatch(r"[A-Z_][A-Z0-9_]*=.*", segment[0]):
                assignments = [w for w in segment if re.fullmatch(r"[A-Z_][A-Z0-9_]*=.*", w)]
                rest = segment[len(assignments):]
                if not rest:  # VAR=value on its own line: a shell variable
                    for a in assignments:
                        name, _, value = a.partition("=")
                        variables[name] = value
                segment = rest
            if segment and segment[0] not in ("for", "done"):
                expanded = []
                for w in segment:
                    if re.fullmatch(r"\$\{?\w+\}?", w) and w.strip("${}") in variables:
                        expanded += variables[w.strip("${}")].split()
                    elif re.fullmatch(r"\[[+-][^\[\]]*\]", w):  # [+decoder=deconv]: optional
                        expanded.append(w[1:-1])
                    else:
                        expanded.append(re.sub(r"\$\{?(\w+)\}?",
                                               lambda m: variables.get(m[1], m[0]), w))
                first = Path(expanded[0]).name
                if first in COMMAND_WORDS:
                    found.append((n, expanded))
            segment = []
    return found


ALL = [(page, n, words) for page in PAGES for n, words in commands(page)]


# --- the checkers -------------------------------------------------------------------------

class Parsed(Exception):
    """Raised by the patched ArgumentParser.parse_args once the arguments parsed."""


@functools.cache
def _script(name: str):
    path = ROOT / "scripts" / name
    spec = importlib.util.spec_from_file_location(f"_docs_scripts_{path.stem}", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def parse_with_own_parser(main, argv: list[str], prog: str, monkeypatch):
    """What main's own ArgumentParser makes of argv; main stops right after parsing."""
    real = argparse.ArgumentParser.parse_args

    def parse_args(self, args=None, namespace=None):
        raise Parsed(real(self, args, namespace))

    monkeypatch.setattr(argparse.ArgumentParser, "parse_args", parse_args)
    monkeypatch.setattr(sys, "argv", [prog, *argv])
    try:
        main(argv) if inspect.signature(main).parameters else main()
    except Parsed as parsed:
        return parsed.args[0]
    except SystemExit as e:
        pytest.fail(f"{prog} {shlex.join(argv)}: refused by its parser (exit {e.code})")
    finally:
        monkeypatch.setattr(argparse.ArgumentParser, "parse_args", real)
    pytest.fail(f"{prog}: main() returned without parsing its arguments with argparse")


@functools.cache
def _composed(overrides: tuple[str, ...]) -> dict:
    import seg_hydra

    return seg_hydra.compose_dict(list(overrides))


def variants(overrides: list[str]) -> list[list[str]]:
    """The override lists a sweep (a,b,c) stands for: each value of each sweep in turn, the
    other sweeps at their first value."""
    from hydra.core.override_parser.overrides_parser import OverridesParser

    parsed = OverridesParser.create().parse_overrides(overrides)
    firsts, sweeps = [], []
    for i, o in enumerate(parsed):
        if o.is_sweep_override():
            values = list(o.sweep_string_iterator())
            firsts.append(f"{o.get_key_element()}={values[0]}")
            sweeps += [(i, f"{o.get_key_element()}={v}") for v in values[1:]]
        else:
            firsts.append(o.input_line)
    return [firsts] + [firsts[:i] + [one] + firsts[i + 1:] for i, one in sweeps]


def check_overrides(overrides: list[str], multirun: bool = False) -> list[dict]:
    """Compose the config with the overrides (placeholders filled) and run the schema check."""
    from seg import config
    from seg_hydra.errors import missing_plugin

    filled = []
    for o in overrides:
        key, eq, value = o.partition("=")
        if PLANNED.match(o) and not (ROOT / "configs" / "experiment"
                                     / f"{value}.yaml").is_file():
            continue  # written by scripts/plan.py when it runs
        if value.startswith(EXAMPLE_PATHS):
            made = Path.cwd() / Path(value).name
            made.touch() if made.suffix else made.mkdir(exist_ok=True)
            value = str(made)
        filled.append(f"{key}={VALUE_PLACEHOLDERS.get(value, value)}" if eq else o)
    assert missing_plugin(filled) is None, missing_plugin(filled)
    lists = variants(filled)
    if len(lists) > 1 or any("," in o and "[" not in o for o in filled):
        assert multirun or any(o.startswith("+sweep=") for o in filled), \
            f"a sweep without -m: {filled}"
    cfgs = []
    for one in lists:
        cfg = _composed(tuple(one))
        config.check(cfg)
        cfgs.append(cfg)
    return cfgs


def check_train(argv: list[str]) -> list[dict]:
    from hydra._internal.utils import get_args_parser

    try:
        args = get_args_parser().parse_args(argv)
    except SystemExit as e:
        pytest.fail(f"scripts/train.py {shlex.join(argv)}: Hydra refuses it (exit {e.code})")
    return check_overrides(args.overrides, multirun=args.multirun)


def check_plan(argv: list[str]):
    plan = _script("plan.py")
    assert not [a for a in argv if a.startswith("-") and a not in ("-h", "--help")]
    _, rest = plan.plan_settings(argv)
    check_overrides(rest)


def check_check_data(argv: list[str]):
    rest = [a for a in argv if a != "--json"]
    assert not [a for a in rest if a.startswith("-") and a not in ("-h", "--help")], rest
    check_overrides(rest)


def check_diagnose(argv: list[str]):
    try:
        _, overrides = _script("diagnose.py").parse(argv)
    except SystemExit as e:
        pytest.fail(f"scripts/diagnose.py {shlex.join(argv)}: refused (exit {e.code})")
    check_overrides(overrides)


def check_evaluate_overrides(overrides: list[str]):
    """evaluate.py's key=value change a run's saved config: the keys must be config keys."""
    from seg import config

    known = set(config.flatten(_composed(()))) | set(
        config.flatten(_composed(("data=folder", "data.root=x", "data.num_classes=2"))))
    for o in overrides:
        assert o.partition("=")[0] in known, f"evaluate.py {o}: no such key in the config"


def check_script(name: str, argv: list[str], monkeypatch):
    if not (ROOT / "scripts" / name).is_file():
        pytest.fail(f"scripts/{name} does not exist")
    custom = {"train.py": check_train, "plan.py": check_plan, "check_data.py": check_check_data,
              "diagnose.py": check_diagnose}
    if name in custom:
        return custom[name](argv)
    source = (ROOT / "scripts" / name).read_text()
    assert "ArgumentParser" in source, f"scripts/{name}: no argparse parser and no checker here"
    args = parse_with_own_parser(_script(name).main, argv, f"scripts/{name}", monkeypatch)
    if name == "benchmark.py":
        check_overrides(args.overrides)
    elif name == "evaluate.py":
        check_evaluate_overrides(args.overrides)


def check_python(words: list[str], monkeypatch):
    args = words[1:]
    if args[:2] == ["-m", "venv"]:
        return
    if args[:2] == ["-m", "pytest"]:
        return check_pytest(args[2:])
    if args[:1] == ["-m"]:
        module = importlib.import_module(args[1])
        return parse_with_own_parser(module.main, args[2:], f"python -m {args[1]}", monkeypatch)
    assert args and args[0].startswith("scripts/") and args[0].endswith(".py"), words
    return check_script(args[0][len("scripts/"):], args[1:], monkeypatch)


def check_pip(words: list[str]):
    assert words[1] == "install", words
    extras = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"][
        "optional-dependencies"]
    for w in words[2:]:
        if w.startswith("-"):
            assert w in ("-q", "-e", "-U", "--upgrade"), f"pip option {w}"
            continue
        m = re.fullmatch(r"\.(?:\[([\w,-]+)\])?", w)
        assert m, f"pip install {w}: seg's docs install seg itself (. or .[extra])"
        for extra in filter(None, (m[1] or "").split(",")):
            assert extra in extras, f"pip install {w}: no extra {extra!r} in pyproject.toml"


def check_pytest(args: list[str]):
    class Options:
        def __init__(self):
            self.names = set()

        def addoption(self, *names, **kwargs):
            self.names.update(names)

    conftest = importlib.import_module("conftest")
    ours = Options()
    conftest.pytest_addoption(ours)
    markers = {m.split(":")[0] for m in tomllib.loads((ROOT / "pyproject.toml").read_text())[
        "tool"]["pytest"]["ini_options"]["markers"]}
    with_value = {"-m", "-n", "-k", "-p"}
    i = 0
    while i < len(args):
        a = args[i]
        if a in with_value:
            if a == "-m":
                names = set(re.findall(r"\w+", args[i + 1])) - {"not", "and", "or"}
                assert names <= markers, f"pytest -m {args[i + 1]}: undeclared marker"
            i += 2
            continue
        if a.startswith("-"):
            name = a.split("=")[0]
            assert name in ours.names | {"-q", "-x", "-s", "-v", "--durations"}, f"pytest {a}"
        else:
            assert (ROOT / a.split("::")[0]).exists(), f"pytest {a}: no such test file"
        i += 1


def check_tensorboard(words: list[str]):
    from tensorboard import default, program

    tb = program.TensorBoard(plugins=default.get_plugins())
    try:
        rest = tb.configure(argv=["tensorboard", *words[1:]])
    except SystemExit as e:
        pytest.fail(f"{shlex.join(words)}: TensorBoard refuses it (exit {e.code})")
    assert rest == ["tensorboard"], rest


def check_refused(page: Path, words: list[str], how: str):
    """A refusal the docs show: it must still be refused, in the words the page prints."""
    from hydra.errors import HydraException
    from omegaconf.errors import OmegaConfBaseException

    from seg import config, resources

    overrides = words[2:]
    text = page.read_text()
    if how == "compose":
        with pytest.raises((HydraException, OmegaConfBaseException)) as e:
            _composed(tuple(overrides))
        assert str(e.value).splitlines()[0] in text
        return
    cfg = _composed(tuple(overrides))
    if how == "check":
        with pytest.raises(config.ConfigError) as e:
            config.check(cfg)
        for line in str(e.value).splitlines():
            assert line.strip() in text, f"{page.name} shows a stale message: {line.strip()}"
        return
    config.check(cfg)  # sound, but too large: the parameter count is the machine-free part
    assert f"{resources.estimate(cfg, device='CPU').parameters:,} parameters" in text


# --- the tests ----------------------------------------------------------------------------

@pytest.mark.parametrize("page, line, words", ALL,
                         ids=[f"{p.name}:{n}:{' '.join(w[:3])[:40]}" for p, n, w in ALL])
def test_command(page, line, words, monkeypatch, tmp_path):
    first = Path(words[0]).name
    refusal = REFUSED.get((page.name, " ".join(words[1:])))
    monkeypatch.chdir(tmp_path)  # what an option type may look at (--out DIR) is not the repo's
    monkeypatch.syspath_prepend(str(ROOT / "tests"))
    if refusal:
        return check_refused(page, words, refusal)
    {"python": lambda: check_python(words, monkeypatch),
     "python3": lambda: check_python(words, monkeypatch),
     "pip": lambda: check_pip(words), "pytest": lambda: check_pytest(words[1:]),
     "tensorboard": lambda: check_tensorboard(words)}[first]()


def test_commands_are_found():
    """The extraction works: every page with code has its commands, and there are many."""
    pages = {p.name for p, _, _ in ALL}
    assert {"README.md", "training.md", "scripts.md", "your-data.md", "configuration.md"} <= pages
    assert len(ALL) >= 80, len(ALL)
    assert set(REFUSED) <= {(p.name, " ".join(w[1:])) for p, _, w in ALL}, "a refusal moved"


def test_readme_is_short_and_keeps_the_two_commands():
    readme = (ROOT / "README.md").read_text()
    assert len(readme.splitlines()) <= 260
    lines = [line.strip() for line in readme.splitlines()]
    ci = (ROOT / ".ci" / "run").read_text().splitlines()
    test_command = ci[ci.index("# --- the README's test command, verbatim ---") + 1]
    assert test_command in lines, "the README's test command must be .ci/run's, verbatim"
    assert ("python3 -m venv .venv && .venv/bin/pip install -q -e . && "
            ".venv/bin/python scripts/train.py") in lines


def test_no_machine_paths():
    for page in PAGES:
        for n, line in enumerate(page.read_text().splitlines(), 1):
            assert not MACHINE_PATH.search(line), f"{page.name}:{n}: a machine's path: {line}"


def test_docs_links_resolve():
    for page in PAGES:
        for target in re.findall(r"\]\(([^)#\s]+)(?:#[^)]*)?\)", page.read_text()):
            if "://" not in target:
                assert (page.parent / target).exists(), f"{page.name}: broken link {target}"


def test_every_config_key_is_documented():
    """docs/configuration.md has a row for every key of the schema, and model.norm's choices
    agree in the schema, configs/train.yaml's comment and the docs."""
    import dataclasses

    from seg import config
    from seg.models.encoders import NORMS

    text = (ROOT / "docs" / "configuration.md").read_text()
    for schema in [*config.SCHEMAS.values(), *config.DATA.values()]:
        for f in dataclasses.fields(schema):
            assert f"`{f.name}`" in text, f"docs/configuration.md lacks {f.name}"

    def choices(text: str) -> list[str]:
        text = re.sub(r"\([^)]*\)", "", text.replace("\\|", "|"))
        return [c.strip() for c in text.split("|") if c.strip()]

    yaml_line = next(line for line in (ROOT / "configs" / "train.yaml").read_text().splitlines()
                     if line.strip().startswith("norm:"))
    assert choices(yaml_line.split("#", 1)[1]) == list(NORMS), yaml_line
    row = next(line for line in text.splitlines() if line.startswith("| `norm` |"))
    assert choices(row.split(" | ", 2)[2].rstrip(" |")) == list(NORMS), row
