"""Every check and probe, no training: python scripts/diagnose.py [--model PATH [--loss NAME]
[--from-logits true|false]] [overrides]

Without --model: the model, loss and data of a config (what scripts/train.py would train).
With --model: any Keras model, a .keras file (safe mode) or module.py:function returning one,
compiled or not, diagnosed on the config's data (data=folder data.root=DIR ..., or the
built-in data); --loss names the loss of an uncompiled model (a Keras loss name, or seg's).
Prints the report; exits 1 when a check finds an error (a set-up that cannot train), 2 when
the input is refused.
"""

import sys

import seg_hydra

OPTIONS = ("--model", "--loss", "--from-logits")


def parse(argv: list[str]) -> tuple[dict, list[str]]:
    """(--options given, the Hydra overrides)."""
    options, rest, args = {}, [], list(argv)
    while args:
        arg = args.pop(0)
        name, eq, value = arg.partition("=")
        if name in OPTIONS:
            if not eq:
                if not args or args[0].startswith("--"):
                    seg_hydra.fail(ValueError(f"{name} needs a value"))
                value = args.pop(0)
            options[name] = value
        elif arg.startswith("--"):
            seg_hydra.fail(ValueError(f"unknown option {arg}: use {', '.join(OPTIONS)} and "
                                   "key=value overrides"))
        else:
            rest.append(arg)
    if ("--loss" in options or "--from-logits" in options) and "--model" not in options:
        seg_hydra.fail(ValueError("--loss and --from-logits go with --model PATH"))
    if options.get("--from-logits", "true") not in ("true", "false"):
        seg_hydra.fail(ValueError(f"--from-logits {options['--from-logits']}: use true or false"))
    return options, rest


def main(argv: list[str]) -> int:
    if {"-h", "--help"} & set(argv):
        print(__doc__.strip())
        return 0
    from seg.inference import load_user_model
    from seg.train import diagnose, diagnose_model

    options, overrides = parse(argv)
    if "--model" in options:
        from_logits = options.get("--from-logits")
        report = seg_hydra.refusing(lambda: diagnose_model(
            seg_hydra.compose_dict(overrides), load_user_model(options["--model"]),
            loss=options.get("--loss"),
            from_logits=None if from_logits is None else from_logits == "true"))
    else:
        report = seg_hydra.refusing(lambda: diagnose(seg_hydra.compose_dict(overrides)))
    print(report.text())
    return 1 if report.errors else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
