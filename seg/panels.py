"""Side-by-side prediction panels (image | truth | prediction | errors | confidence) of
fixed validation images, to TensorBoard's IMAGES tab and PNG files, and the helpers that read
a model's output for them."""

from __future__ import annotations

import io
from pathlib import Path

import keras
import numpy as np
import tensorflow as tf
from PIL import Image

from seg import viz
from seg.collapse import collapse_alarm
from seg.diagnostics import first_output
from seg.diagnostics.reading import Head, as_image, class_indices, probabilities, read_head


def compiled_forward(model: keras.Model):
    """model(x, training=False) as a TensorFlow graph, traced once per input shape.

    Called eagerly, a U-Net dispatches op by op: 2-6x slower than the traced graph on a small
    batch (scripts/benchmark.py prices the callbacks that call it every epoch).
    """
    return tf.function(lambda x: model(x, training=False), reduce_retracing=True)


def write_png_summary(name: str, png: bytes, width: int, height: int, step: int):
    """An already encoded PNG to TensorBoard's image tab (tf.summary.image would encode it
    again)."""
    from tensorboard.plugins.image import metadata

    tf.summary.write(name, tf.constant([str(width), str(height), png]), step=step,
                     metadata=metadata.create_summary_metadata(display_name=None,
                                                               description=None))


def take_images(validation_data, n: int) -> list[tuple[np.ndarray, np.ndarray]]:
    """The first n (image, mask) pairs, one by one, from arrays or a dataset (batched or not)."""
    if isinstance(validation_data, keras.utils.PyDataset):
        validation_data = _batch_of(validation_data)
    if not isinstance(validation_data, tf.data.Dataset):
        x, y = validation_data[:2]
        return [(np.asarray(x[i]), np.asarray(y[i])) for i in range(min(n, len(x)))]
    out = []
    for element in validation_data:
        x, y = np.asarray(element[0]), np.asarray(element[1])
        pairs = [(x, y)] if x.ndim == 3 else list(zip(x, y, strict=False))
        out += pairs[:n - len(out)]
        if len(out) >= n:
            break
    return out


def full_names(names, num_classes: int) -> list[str]:
    """Exactly num_classes names: the given ones, then class_K for the rest."""
    names = list(names or [])[:num_classes]
    return names + [f"class_{k}" for k in range(len(names), num_classes)]


def _batch_of(data):
    """The first (images, masks) batch of a keras.utils.PyDataset, a generator's first item."""
    return next(iter(data)) if not hasattr(data, "__getitem__") else data[0]


def read_output(model, x: np.ndarray, num_classes: int | None = None
                ) -> tuple[bool, int, Head]:
    """(from_logits, number of classes, the Head) of a model, read as seg.diagnose reads
    them; the Head folds a [B, H*W, C] output back into images (diagnostics.reading.as_image)."""
    head = read_head(model, np.asarray(first_output(model(x[:1], training=False))),
                     tuple(np.shape(x)[1:3]))
    classes = num_classes or (head.channels if head.channels and head.channels > 1 else 2)
    return not head.probabilities, classes, head


def display_image(x: np.ndarray) -> np.ndarray:
    """An image as the model sees it -> float [H, W, 1 or 3] in [0, 1] for a picture: uint8 /
    255, floats in [0, 1] as they are, other ranges (standardised inputs) stretched."""
    x = np.asarray(x)
    if x.ndim == 2:
        x = x[..., None]
    if x.shape[-1] not in (1, 3):
        x = x[..., :3] if x.shape[-1] > 3 else x[..., :1]
    if x.dtype == np.uint8:
        return x.astype(np.float32) / 255
    x = np.nan_to_num(x.astype(np.float32))
    if x.min() >= 0 and x.max() <= 1:
        return x
    if x.max() <= 255 and x.min() >= 0:
        return x / 255
    return (x - x.min()) / max(float(x.max() - x.min()), 1e-12)


class PredictionPanels(keras.callbacks.Callback):
    """Side-by-side panels of fixed validation images (image | truth | prediction |
    errors | confidence), to TensorBoard (and PNG files in png_dir) every `every` epochs.

    validation_data: (images, masks) arrays or a dataset of (image, mask) pairs, batched or
    not; its first num_images images are shown. A collapse `monitor` (seg.monitor's
    CollapseMonitor) puts its banner on them.
    """

    def __init__(self, validation_data, *, num_images: int, every: int, log_dir: str | Path,
                 png_dir: str | Path | None = None, num_classes: int | None = None,
                 class_names: list[str] | None = None, ignore_index: int | None = None,
                 from_logits: bool | None = None, monitor=None,
                 total_epochs: int | None = None, proven: str = "",
                 defer_writes: bool = False):
        super().__init__()
        self.defer_writes = defer_writes  # writes wait for write_pending (a committed epoch)
        self._pending: list = []
        self.proven = proven  # a collapse the preflight proved: bannered from the first epoch
        self.samples = take_images(validation_data, num_images)
        self.every, self.num_classes, self.class_names = every, num_classes, class_names
        self.ignore_index, self.from_logits = ignore_index, from_logits
        self.log_dir, self.monitor = str(log_dir), monitor
        self.png_dir = Path(png_dir) if png_dir else None
        self.total_epochs = total_epochs
        self._writer = self._forward = None
        self.head: Head | None = None

    def set_model(self, model):
        super().set_model(model)
        self._forward = compiled_forward(model)

    def _resolve(self):
        if self.monitor is not None and self.monitor.enabled:
            self.monitor.resolve()
            self.from_logits = self.monitor.from_logits if self.from_logits is None else \
                self.from_logits
            self.num_classes = self.num_classes or self.monitor.num_classes
            self.class_names = self.class_names or self.monitor.class_names
        if self.head is None:
            from_logits, classes, self.head = read_output(self.model, self.samples[0][0][None],
                                                          self.num_classes)
            self.from_logits = from_logits if self.from_logits is None else self.from_logits
            self.num_classes = self.num_classes or classes
        self.class_names = full_names(self.class_names, self.num_classes)

    def render(self, epoch: int) -> np.ndarray:
        self._resolve()
        void = -1 if self.ignore_index is None else self.ignore_index
        preds, confs, truths = [], [], []
        for x, y in self.samples:
            output = as_image(np.asarray(first_output(self._forward(x[None]))), self.head)
            probs = probabilities(output, self.from_logits)[0]
            preds.append(probs.argmax(-1))
            confs.append(probs.max(-1))
            truths.append(class_indices(as_image(np.asarray(y)[None], self.head), void)[0])
        banner = collapse_alarm(self.monitor.current_alarms if self.monitor else []) \
            or self.proven
        return viz.panel([display_image(x) for x, _ in self.samples], truths, preds, confs,
                         class_names=self.class_names, ignore_index=void,
                         title=f"epoch {epoch + 1}", banner=banner)

    def on_epoch_end(self, epoch, logs=None):
        last = epoch + 1 >= (self.total_epochs or self.params.get("epochs", epoch + 1))
        if (epoch + 1) % self.every and not last and not self.model.stop_training:
            return
        picture = self.render(epoch)
        buffer = io.BytesIO()  # encoded once, for the file and for TensorBoard
        Image.fromarray(picture).save(buffer, format="PNG", compress_level=3)
        self._pending.append((epoch, buffer.getvalue(), picture.shape))
        if not self.defer_writes:
            self.write_pending()

    def write_pending(self):
        """Write the rendered panels (PNG files and TensorBoard) of the checked epochs."""
        for epoch, png, shape in self._pending:
            if self.png_dir is not None:
                self.png_dir.mkdir(parents=True, exist_ok=True)
                (self.png_dir / f"epoch_{epoch + 1:03d}.png").write_bytes(png)
            if self._writer is None:
                self._writer = tf.summary.create_file_writer(self.log_dir)
            with self._writer.as_default():
                write_png_summary("predictions", png, shape[1], shape[0],
                                  step=epoch + 1)  # the title's epoch
            self._writer.flush()
        self._pending = []
