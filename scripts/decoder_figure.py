"""Draw what each decoder does to a smooth input before training: python scripts/decoder_figure.py

Three untrained x2 up-sampling blocks of each decoder (x8 in all) are applied to the same smooth
random feature map; the picture shows the mean output channel. Uneven overlap (deconv with
kernel 3) prints a checkerboard; bilinear-initialised deconv, pixel shuffle with ICNR and fixed
upsampling do not. Writes docs/images/decoders.png and prints the FLOPs of one block each.
"""

import argparse
import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras  # noqa: E402
import numpy as np  # noqa: E402
from PIL import Image, ImageDraw  # noqa: E402
from scipy import ndimage  # noqa: E402

from seg import viz  # noqa: E402
from seg.models import count_flops  # noqa: E402
from seg.models.decoders import DECODERS  # noqa: E402

VARIANTS = [
    ("upsample nearest", "upsample", {"interpolation": "nearest"}),
    ("upsample bilinear", "upsample", {"interpolation": "bilinear"}),
    ("deconv k4 he", "deconv", {"kernel_size": 4, "init": "he"}),
    ("deconv k3 he", "deconv", {"kernel_size": 3, "init": "he"}),
    ("deconv k4 bilinear", "deconv", {"kernel_size": 4, "init": "bilinear"}),
    ("pixelshuffle ICNR", "pixelshuffle", {}),
]


def response(decoder: str, kwargs: dict, features: np.ndarray, channels: int = 16) -> np.ndarray:
    keras.utils.set_random_seed(0)
    x = inputs = keras.Input(features.shape[1:])
    for i in range(3):
        x = DECODERS[decoder](x, channels, name=f"up{i}", **kwargs)
    out = np.asarray(keras.Model(inputs, x)(features))[0].mean(-1)
    return (out - out.min()) / max(out.max() - out.min(), 1e-9)


def block_flops(decoder: str, kwargs: dict, size: int = 32, channels: int = 64) -> int:
    inputs = keras.Input((size, size, channels))
    return count_flops(keras.Model(inputs, DECODERS[decoder](inputs, channels // 2, **kwargs)))


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default="docs/images/decoders.png")
    args = parser.parse_args()
    rng = np.random.default_rng(0)
    smooth = ndimage.zoom(rng.normal(size=(4, 4, 16)), (4, 4, 1), order=3)[None].astype(np.float32)
    cell, pad, tiles = 192, 6, []
    for label, decoder, kwargs in VARIANTS:
        picture = viz.ramp(response(decoder, kwargs, smooth))
        picture = np.asarray(Image.fromarray(picture).resize((cell, cell), Image.NEAREST))
        flops = block_flops(decoder, kwargs)
        print(f"{label:<20} one x2 block, 32x32x64 -> 64x64x32: {flops / 1e6:7.1f} MFLOPs")
        tiles.append((label, f"{flops / 1e6:.0f} MFLOPs/block", picture))
    canvas = Image.new("RGB", (len(tiles) * (cell + pad), cell + 44), (255, 255, 255))
    draw = ImageDraw.Draw(canvas)
    font = viz._font(13)
    for i, (label, flops, picture) in enumerate(tiles):
        canvas.paste(Image.fromarray(picture), (i * (cell + pad), 40))
        draw.text((i * (cell + pad) + 2, 2), label, fill=(0, 0, 0), font=font)
        draw.text((i * (cell + pad) + 2, 20), flops, fill=(90, 90, 90), font=font)
    canvas.save(args.out)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
