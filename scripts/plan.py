"""Plan a training recipe from the data: python scripts/plan.py [data overrides] [plan.KEY=VALUE]

Reads the dataset's fingerprint (image sizes, bands, bit depth, class shares, object sizes,
void share, splits) and this machine, times real training steps, and decides crop, depth,
width, batch, steps, epochs, learning rate, loss, class weights, rare-class crops and the
validation cadence for a time budget. Prints the fingerprint and the decisions, writes them as
configs/experiment/plan_<name>.yaml (each value with its reason), and prints the train command.

  plan.budget_minutes=M   the training time to fill (default 10)
  plan.name=NAME          the experiment's name (default: the data folder's name)
  plan.pilots=false       decide by the rules alone: no pilot runs (default true: up to a
                          fifth of the budget measures what the rules cannot decide)

The plan's own time (reading the data, timing steps, pilots) is part of the budget: the run it
writes fills the rest, and starts from the winning pilot's weights
(configs/experiment/plan_<name>.weights.h5).

Example: python scripts/plan.py data=folder data.root=DIR data.num_classes=3
Exit codes: 0 planned; 2 a refused setting or unreadable data (the message names it).
"""

import sys
from pathlib import Path

import seg_hydra

PLAN_KEYS = {"budget_minutes": "a number of minutes > 0, e.g. plan.budget_minutes=10",
             "name": "letters, digits, '_' or '-', e.g. plan.name=streets",
             "pilots": "true or false, e.g. plan.pilots=false"}


def plan_settings(argv: list[str]) -> tuple[dict, list[str]]:
    """plan.* settings out of the arguments (refused when unknown or invalid), and the rest."""
    from seg.config import ConfigError
    from seg.plan import BUDGET_MINUTES

    settings, rest = {"budget_minutes": BUDGET_MINUTES, "name": None, "pilots": True}, []
    for arg in argv:
        if not arg.startswith("plan."):
            rest.append(arg)
            continue
        key, _, value = arg[len("plan."):].partition("=")
        if key not in PLAN_KEYS:
            raise ConfigError(f"{arg}: unknown plan setting; use "
                              + ", ".join(f"plan.{k}" for k in PLAN_KEYS))
        if key == "budget_minutes":
            try:
                settings[key] = float(value)
            except ValueError:
                settings[key] = -1.0
            if not 0 < settings[key] <= 10_000:
                raise ConfigError(f"plan.budget_minutes={value!r}: use {PLAN_KEYS[key]}")
        elif key == "pilots":
            if value.lower() not in ("true", "false"):
                raise ConfigError(f"plan.pilots={value!r}: use {PLAN_KEYS[key]}")
            settings[key] = value.lower() == "true"
        else:
            if not value or not all(c.isalnum() or c in "_-" for c in value):
                raise ConfigError(f"plan.name={value!r}: use {PLAN_KEYS[key]}")
            settings[key] = value
    return settings, rest


def given_keys(overrides: list[str]) -> tuple[set[str], str | None, list[str]]:
    """The keys set on the command line, the data group chosen, and the other group options
    (+decoder=deconv) the train command needs again."""
    keys, group, groups = set(), None, []
    for arg in overrides:
        key = arg.lstrip("+~").partition("=")[0]
        if "." in key:
            keys.add(key)
        elif key == "data":
            group = arg.partition("=")[2]
        else:
            groups.append(arg)
    return keys, group, groups


def main(argv: list[str]) -> int:
    if {"-h", "--help"} & set(argv):
        print(__doc__.strip())
        return 0
    unknown = [a for a in argv if a.startswith("-")]
    if unknown:
        seg_hydra.fail(ValueError(f"unknown option {unknown[0]}: use --help, key=value "
                                  "overrides and plan.budget_minutes=M"))
    return seg_hydra.refusing(lambda: _plan(argv))


def _plan(argv: list[str]) -> int:
    from seg import plan, recipe, train
    from seg.config import ConfigError, value_at

    settings, overrides = plan_settings(argv)
    cfg = seg_hydra.compose_dict(overrides)
    train.check_sections(cfg)
    given, data_group, groups = given_keys(overrides)
    given = {k for k in given if value_at(cfg, k) != "auto"}  # auto: the plan's to decide
    source, _ = train.open_data(cfg["data"])
    budget = settings["budget_minutes"]
    print(f"plan: reading {source.description} ...", flush=True)
    folder = Path(seg_hydra.CONFIG_DIR) / "experiment"
    identity = recipe.plan_identity(cfg, settings["name"])
    try:  # a plan of other data (or another name) is never replaced: this one goes beside it
        name, note = recipe.plan_file(folder, plan.experiment_name(cfg, settings["name"]),
                                      identity)
    except ValueError as e:
        raise ConfigError(str(e)) from None
    with train.data_errors_named():
        fp, decisions, pilots = plan.plan(
            cfg, source, budget, given, log=lambda m: print(m, flush=True),
            pilots=settings["pilots"], weights_path=folder / f"{name}.weights.h5")
    try:
        path = folder / f"{name}.yaml"
        carried = sorted(k for k in given if k.split(".")[0] in cfg)  # what the user set stays
        text = plan.experiment_yaml(name, fp, decisions, cfg, data_group, carried, budget)
        head, _, rest = text.partition("\n")
        recipe.write_plan(path, f"{head}\n{recipe.PLAN_OF}{identity}\n{rest}", identity)
    except ValueError as e:
        raise ConfigError(str(e)) from None
    except OSError as e:
        raise ConfigError(f"{e.filename or folder}: cannot write the planned experiment "
                          f"({e.strerror}); use plan.name=... or make configs/experiment "
                          "writable") from None
    print(plan.table(fp, decisions, budget))
    print("\n" + plan.pilot_table(pilots, budget, fp.num_val))
    if note:
        print(f"\nnote: {note}")
    command = " ".join(["python scripts/train.py", f"+experiment={name}", *groups])
    print(f"\nwrote {path}\ntrain with the plan:\n  {command}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
