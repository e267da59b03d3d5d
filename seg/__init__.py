"""seg: config-driven semantic segmentation on TensorFlow and Keras 3.

For any Keras segmentation model, seg's or your own:

    report = seg.diagnose(model, images, masks)   # before fit: why it would not learn
    print(report)
    model.fit(..., callbacks=[seg.SegmentationMonitor((val_images, val_masks), log_dir="tb")])

Importing seg registers its layers, losses and metrics with Keras, so that
keras.saving.load_model("run/checkpoints/best.keras") works after `import seg`.
"""

__version__ = "0.1.0"

from seg.console import quiet_tensorflow  # noqa: E402

quiet_tensorflow()  # first: TensorFlow's start-up noise kept off the console (seg/console.py)

from seg import losses, metrics, models  # noqa: E402,F401  (Keras registrations)
from seg.callbacks import EpochScalars  # noqa: E402
from seg.monitor import SegmentationMonitor  # noqa: E402
from seg.diagnostics import Finding, Report, diagnose  # noqa: E402

__all__ = ["EpochScalars", "Finding", "Report", "SegmentationMonitor", "diagnose"]
