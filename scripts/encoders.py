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


def rows(contains: str = "") -> tuple[list[dict], str | None]:
    """(one row per encoder or preset, a note when keras-hub is not installed)."""
    from seg.models import BACKBONES
    from seg.models.hub import INSTALL, SMALL, HubError, describe, presets, pyramid_classes

    from seg.models import BACKBONE_SIZES

    out = [{"encoder": "unet", "family": "U-Net (seg)", "parameters": "model.depth, "
            "model.base_filters", "strides": "1 .. 2**depth", "preprocessing": "none ([0, 1])",
            "weights": "random"}]
    for name, (app, _, mode) in BACKBONES.items():
        out.append({"encoder": name, "family": f"keras.applications.{app}",
                    "parameters": BACKBONE_SIZES[name][0], "strides": [2, 4, 8, 16, 32],
                    "preprocessing": {"tf": "[-1, 1]", "caffe": "BGR, ImageNet means",
                                      "raw255": "0..255, normalised inside"}[mode],
                    "weights": "null | imagenet | PATH"})
    note = None
    try:
        classes = pyramid_classes()
    except HubError:
        classes, note = {}, f"keras-hub backbones: not installed ({INSTALL})"
    strides = {}
    for family in classes:
        if family in SMALL:
            strides[family] = describe(f"hub:{family}", "small")["strides"]
        out.append({"encoder": f"hub:{family}", "family": f"keras-hub {family}",
                    "parameters": "model.encoder_args", "strides": strides.get(
                        family, "measured when built"),
                    "preprocessing": "none ([0, 1])", "weights": "null | PATH"
                    + (" (encoder_args=small: seg's small config)" if family in SMALL else "")})
    for preset, (family, params) in sorted((presets() if classes else {}).items()):
        out.append({"encoder": f"hub:{preset}", "family": f"keras-hub {family}",
                    "parameters": params or "?", "strides": strides.get(family, "measured when "
                                                                            "built"),
                    "preprocessing": "the preset's ImageConverter (scale, offset)",
                    "weights": "null | pretrained | PATH"})
    return [r for r in out if contains.lower() in r["encoder"].lower()
            or contains.lower() in r["family"].lower()], note


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("filter", nargs="?", default="", help="keep names containing this")
    p.add_argument("--json", action="store_true", help="print the rows as JSON")
    args = p.parse_args(argv)
    from seg import console

    with console.filtered_stderr():
        table, note = rows(args.filter)
    if args.json:
        print(json.dumps({"encoders": table, "note": note}, indent=2, default=str))
        return
    def cell(v):
        return f"{v:,}" if isinstance(v, int) else ", ".join(map(str, v)) \
            if isinstance(v, list) else str(v)
    keys = ["encoder", "family", "parameters", "strides", "preprocessing", "weights"]
    widths = {k: max(len(k), *(len(cell(r[k])) for r in table)) for k in keys} if table else {}
    print("  ".join(k.ljust(widths.get(k, len(k))) for k in keys).rstrip())
    for r in table:
        print("  ".join(cell(r[k]).ljust(widths[k]) for k in keys).rstrip())
    if not table:
        print(f"(no encoder matches {args.filter!r})")
    if note:
        print(note)
    print("\nUse: python scripts/train.py model.encoder=NAME [model.encoder_weights=...]; "
          "N-band images: data.channels=N (a pretrained first layer is adapted)")


if __name__ == "__main__":
    seg_hydra.refusing(main)
