"""The encoders seg can put under a decoder, as a table (scripts/encoders.py,
model.encoder=list)."""

from __future__ import annotations


def rows(contains: str = "") -> tuple[list[dict], str | None]:
    """(one row per encoder or preset, a note when keras-hub is not installed)."""
    from seg.models import BACKBONE_SIZES, BACKBONES
    from seg.models.hub import INSTALL, SMALL, HubError, describe, presets, pyramid_classes

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



KEYS = ["encoder", "family", "parameters", "strides", "preprocessing", "weights"]


def text(table: list[dict], note: str | None, contains: str = "") -> str:
    """The table as aligned columns, with the note and how to use a row."""
    def cell(v):
        return f"{v:,}" if isinstance(v, int) else ", ".join(map(str, v)) \
            if isinstance(v, list) else str(v)
    widths = {k: max([len(k)] + [len(cell(r[k])) for r in table]) for k in KEYS}
    lines = ["  ".join(k.ljust(widths[k]) for k in KEYS).rstrip()]
    lines += ["  ".join(cell(r[k]).ljust(widths[k]) for k in KEYS).rstrip() for r in table]
    if not table:
        lines.append(f"(no encoder matches {contains!r})")
    if note:
        lines.append(note)
    lines.append("\nUse: python scripts/train.py model.encoder=NAME [model.encoder_weights=...]; "
                 "N-band images: data.channels=N (a pretrained first layer is adapted)")
    return "\n".join(lines)
