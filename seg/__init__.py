"""seg: config-driven semantic segmentation on TensorFlow and Keras 3.

Importing seg registers its layers, losses and metrics with Keras, so that
keras.saving.load_model("run/checkpoints/best.keras") works after `import seg`.
"""

__version__ = "0.1.0"

from seg import losses, metrics, models  # noqa: E402,F401  (Keras registrations)
