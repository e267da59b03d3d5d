"""seg: config-driven semantic segmentation on TensorFlow and Keras 3."""

__version__ = "0.1.0"
