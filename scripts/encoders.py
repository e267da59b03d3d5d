"""The encoders seg can put under a decoder: python scripts/encoders.py [FILTER] [--json]

Lists the U-Net's own encoder, the Keras applications, and (with the hub extra installed) every
keras-hub backbone family with pyramid outputs and its presets: parameters, the strides of the
features the decoder's skips take, and the input preprocessing. Offline: presets are listed from
keras-hub's own metadata; strides are measured on seg's small config of each family where it
has one. FILTER keeps the rows whose name contains it (e.g. `efficientnet`).

Use one as `model.encoder=NAME` (a keras-hub preset as `model.encoder=hub:PRESET`, weights with
`model.encoder_weights=pretrained`, downloaded only then).
"""

import argparse
import json

import seg_hydra


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("filter", nargs="?", default="", help="keep names containing this")
    p.add_argument("--json", action="store_true", help="print the rows as JSON")
    args = p.parse_args(argv)
    from seg import console
    from seg.models import catalog

    with console.filtered_stderr():
        table, note = catalog.rows(args.filter)
    print(json.dumps({"encoders": table, "note": note}, indent=2, default=str) if args.json
          else catalog.text(table, note, args.filter))


if __name__ == "__main__":
    seg_hydra.refusing(main)
