"""A Keras model seg never built, diagnosed and watched: python scripts/keras_example.py

The classic yellow-image report in its Keras 3 form: a small encoder-decoder whose one sigmoid
channel is trained with categorical cross-entropy. The script
1. prints seg.diagnose(...) for it as reported (with a Reshape to (64, 64) at the end) and with
   the channel axis kept (64, 64, 1);
2. trains the kept-channel model with seg.SegmentationMonitor on the built-in shapes (binary:
   shape or background) and saves its last panel, then does the same for the fix the report
   gives (loss='binary_crossentropy'), so both pictures can be put side by side.

Writes OUT/keras_yellow_image_panel.png and OUT/keras_fixed_panel.png (OUT: docs/images) and the
TensorBoard logs under OUT/../keras_example_tb unless --log-dir says where.
"""

import argparse
import os
import shutil
import tempfile
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import keras  # noqa: E402
from keras import layers  # noqa: E402

import seg  # noqa: E402
from seg.data.shapes import make_shapes  # noqa: E402

SIZE = 64


def seed_model(reshape: bool, loss: str = "categorical_crossentropy") -> keras.Model:
    """The model of the report (keras.Sequential, as users write it)."""
    model = keras.Sequential([
        keras.Input((SIZE, SIZE, 3)),
        layers.Conv2D(32, 3, activation="relu", padding="same"), layers.MaxPooling2D(2),
        layers.Conv2D(128, 3, activation="relu", padding="same"), layers.MaxPooling2D(2),
        layers.Conv2DTranspose(128, 2, strides=2), layers.Conv2DTranspose(64, 2, strides=2),
        layers.Conv2D(1, 1, activation="sigmoid")] + ([layers.Reshape((SIZE, SIZE))]
                                                      if reshape else []))
    model.compile("adam", loss=loss)
    return model


def train_and_show(loss: str, x, y, vx, vy, epochs: int, log_dir: Path, picture: Path):
    keras.utils.set_random_seed(0)
    model = seed_model(reshape=False, loss=loss)
    with tempfile.TemporaryDirectory() as png_dir:
        monitor = seg.SegmentationMonitor((vx, vy), log_dir=log_dir, num_images=3,
                                          class_names=["background", "shape"], png_dir=png_dir)
        history = model.fit(x, y, epochs=epochs, batch_size=16, verbose=0, callbacks=[monitor])
        shutil.copy(sorted(Path(png_dir).glob("*.png"))[-1], picture)
    print(f"{loss}: loss per epoch {[round(v, 4) for v in history.history['loss']]}, "
          f"constant_output={monitor.constant_output}; panel {picture}")
    return monitor


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out", default="docs/images", help="folder for the two panels")
    parser.add_argument("--log-dir", default=None, help="TensorBoard folder")
    parser.add_argument("--epochs", type=int, default=4)
    parser.add_argument("--num", type=int, default=256, help="training images")
    args = parser.parse_args()
    if args.epochs < 1 or args.num < 16:
        parser.error("--epochs must be >= 1 and --num >= 16")
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    log_dir = Path(args.log_dir) if args.log_dir else out.parent / "keras_example_tb"
    images, masks = make_shapes(args.num, SIZE, num_classes=2)
    vimages, vmasks = make_shapes(16, SIZE, num_classes=2, split=1)
    x, vx = images / 255.0, vimages / 255.0

    print(">>> print(seg.diagnose(model, images, masks))  # as reported: Reshape((64, 64))")
    print(seg.diagnose(seed_model(reshape=True), x[:16], masks[:16]))
    print("\n>>> the same model with the channel axis kept: (64, 64, 1)")
    print(seg.diagnose(seed_model(reshape=False), x[:16], masks[:16, ..., None]))
    print()
    train_and_show("categorical_crossentropy", x, masks[..., None], vx, vmasks[..., None],
                   args.epochs, log_dir / "categorical_crossentropy",
                   out / "keras_yellow_image_panel.png")
    train_and_show("binary_crossentropy", x, masks[..., None], vx, vmasks[..., None],
                   args.epochs, log_dir / "binary_crossentropy", out / "keras_fixed_panel.png")
    print(f"\ntensorboard --logdir {log_dir}")


if __name__ == "__main__":
    main()
