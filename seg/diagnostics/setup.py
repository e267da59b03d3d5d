"""Checks of a configured set-up that need no model: where a U-Net without padding would
break on the data's sizes (the shape plan), and a frozen encoder that was never trained."""

from __future__ import annotations

from seg.diagnostics.report import Finding
from seg.models import level_sizes


def _naive_sizes(size: int, depth: int) -> tuple[list[int], list[int]]:
    """Sizes a U-Net without padding would produce: floor on the way down, x2 on the way up."""
    down = [size]
    for _ in range(depth):
        down.append(down[-1] // 2)
    up = [down[-1] * 2 ** (i + 1) for i in range(depth)]
    return down, up


def shape_plan(sizes: list[tuple[int, int]], *, depth: int, decoder: str
               ) -> tuple[list[Finding], str]:
    """The spatial size at every encoder and decoder level for the given input sizes.

    Returns the findings and a printable table. The model pads inputs to a multiple of
    2**depth and crops its output back, so no skip connection ever sees mismatched sizes; the
    table shows where a U-Net without that padding would break.
    """
    m = 2 ** depth
    lines = [f"level sizes (depth {depth}, decoder {decoder}; inputs padded to a multiple of {m})"]
    out = []
    for h, w in sorted(set(sizes)):
        ph, pw = level_sizes(h, depth), level_sizes(w, depth)
        enc = " -> ".join(f"{a}x{b}" for a, b in zip(ph["encoder"], pw["encoder"], strict=False))
        dec = " -> ".join(f"{a}x{b}" for a, b in zip(ph["decoder"], pw["decoder"], strict=False))
        lines.append(f"  input {h}x{w}: padded {ph['padded']}x{pw['padded']} | encoder {enc} | "
                     f"decoder {dec} | output cropped to {h}x{w}")
        if h % m or w % m:
            breaks = []
            for side, n in (("height", h), ("width", w)):
                down, up = _naive_sizes(n, depth)
                for level in range(depth):
                    skip, upsampled = down[depth - 1 - level], up[level]
                    if skip != upsampled:
                        breaks.append(f"{side}: skip {skip} vs upsampled {upsampled} at decoder "
                                      f"level {depth - 1 - level}")
                        break
            lines.append("    without padding: " + "; ".join(breaks))
            out.append(Finding(
                "ok", "shape plan", f"input {h}x{w} is not a multiple of {m}: padded to "
                f"{ph['padded']}x{pw['padded']} (zeros) and cropped back; padded pixels never "
                "reach the loss or the metrics"))
    if not out:
        out.append(Finding("ok", "shape plan", f"all input sizes {sorted(set(sizes))} are "
                           f"multiples of {m}"))
    return out, "\n".join(lines)


def check_encoder(*, encoder: str, encoder_weights, freeze_encoder: bool,
                  unfreeze_after: int | None, notes=()) -> list[Finding]:
    """Warn about a frozen encoder that was never trained (its features are noise); say what
    the encoder is and what was adapted to the data (`notes`, from build_model)."""
    found = [Finding("ok", "encoder", note) for note in notes]
    if encoder != "unet" and freeze_encoder and encoder_weights is None and not unfreeze_after:
        named = "pretrained" if encoder.startswith("hub:") else "imagenet"
        found.append(Finding(
            "warning", "encoder", f"frozen {encoder} encoder with random weights",
            "a frozen encoder that was never trained passes noise to the decoder for the whole "
            "run", f"model.encoder_weights={named} (or a weights file), "
            "model.freeze_encoder=false, or trainer.unfreeze_encoder_after=N"))
    return found
