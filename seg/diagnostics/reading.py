"""What a Keras segmentation model and its loss are, read from the objects themselves.

seg.diagnose and seg.SegmentationMonitor work on any Keras 3 model, seg's own or one a user
wrote: they follow the graph back from the output to the layer that applies the activation
and to the last layer with weights, and read the loss's kind and from_logits from the loss
object, the loss function or the name it was compiled with. What cannot be read (a subclassed
model's call(), a custom loss function) is said, and the output's values fill the gap.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import keras
import numpy as np

from seg.losses import KERAS, SegmentationLoss

# Keras loss functions by name: (family, what y_true must hold).
#   categorical: normalises the prediction over the class axis; one-hot targets.
#   sparse: the same, with class-index targets. binary: per element, targets of the same shape.
KERAS_LOSSES = {
    "categorical_crossentropy": ("categorical", "one_hot"),
    "categorical_focal_crossentropy": ("categorical", "one_hot"),
    "sparse_categorical_crossentropy": ("sparse", "indices"),
    "binary_crossentropy": ("binary", "same"),
    "binary_focal_crossentropy": ("binary", "same"),
    "dice": ("dice", "same"),
}
# Layers between the head and the output that move or resize values but do not transform them.
PASS_THROUGH = ("Reshape", "Permute", "Flatten", "Cropping1D", "Cropping2D", "ZeroPadding2D",
                "Dropout", "SpatialDropout2D", "GaussianNoise", "GaussianDropout", "Identity",
                "UpSampling2D", "Resizing", "CropLike", "PadToMultiple", "BilinearUpsampling",
                "Squeeze", "ExpandDims", "Transpose", "Cast")
PROBABILITY_ACTIVATIONS = ("softmax", "sigmoid")


@dataclass
class LossInfo:
    """A loss as the checks need it.

    name: as the user wrote it ("categorical_crossentropy", "SparseCategoricalCrossentropy").
    family: categorical | sparse | binary | dice | matched (seg's SegmentationLoss: softmax
        cross-entropy over C channels, sigmoid on one) | other | unknown | none.
    targets: what y_true must hold: one_hot | indices | same (the prediction's shape) | None.
    from_logits: None where it cannot be read.
    """

    name: str
    family: str
    targets: str | None = None
    from_logits: bool | None = None
    axis: int = -1
    kind: str | None = None  # SegmentationLoss.kind
    ignore_class: int | None = None
    note: str = ""

    @property
    def normalises(self) -> bool:
        """Whether the loss turns the prediction into a distribution over its class axis."""
        return self.family in ("categorical", "sparse")


def read_loss(loss) -> LossInfo:
    """LossInfo of a loss given as a name, a keras.losses.Loss, a function, or None."""
    if loss is None:
        return LossInfo("none", "none", note="the model is not compiled and no loss= was given")
    if isinstance(loss, SegmentationLoss):
        if loss.kind in KERAS:
            return LossInfo(loss.kind, KERAS_LOSSES[loss.kind][0], "indices", loss.from_logits,
                            kind=loss.kind)
        return LossInfo(loss.name, "matched", "indices", loss.from_logits, kind=loss.kind)
    if isinstance(loss, str):
        try:
            fn = keras.losses.get(loss)
        except (ValueError, TypeError):
            return LossInfo(loss, "unknown", note=f"Keras knows no loss named {loss!r}")
        family, targets = KERAS_LOSSES.get(getattr(fn, "__name__", ""), ("other", None))
        return LossInfo(loss, family, targets, False)
    if isinstance(loss, keras.losses.Loss):
        fn = getattr(loss, "fn", None)
        try:
            config = loss.get_config()
        except Exception:  # noqa: BLE001 (a custom loss without a usable config)
            config = {}
        from_logits = config.get("from_logits", getattr(loss, "from_logits", None))
        name = type(loss).__name__
        if fn is not None and getattr(fn, "__name__", "") in KERAS_LOSSES:
            family, targets = KERAS_LOSSES[fn.__name__]
            if name == "LossFunctionWrapper":
                name = fn.__name__
            return LossInfo(name, family, targets, bool(from_logits),
                            axis=int(config.get("axis", -1) or -1),
                            ignore_class=config.get("ignore_class"))
        return LossInfo(name, "unknown", from_logits=from_logits,
                        note=f"{name} is a custom loss: what it expects cannot be read")
    if callable(loss):
        name = getattr(loss, "__name__", type(loss).__name__)
        if name in KERAS_LOSSES:
            family, targets = KERAS_LOSSES[name]
            return LossInfo(name, family, targets, False)
        return LossInfo(name, "unknown",
                        note=f"{name} is a custom loss function: what it expects cannot be read")
    return LossInfo(type(loss).__name__, "unknown",
                    note=f"a loss of type {type(loss).__name__} (one per output?) cannot be read")


def compiled_loss(model: keras.Model):
    """The loss the model was compiled with, or None."""
    return getattr(model, "loss", None) if getattr(model, "compiled", False) else None


@dataclass
class Head:
    """The end of a segmentation network, read from its graph and one forward pass.

    shape: the output's shape on one batch. channels: the size of the class axis (the last) when
    the output has one, None when it has none ([B, H, W]).
    layout: image ([B, H, W, C]), pixels ([B, H*W, C]: a Reshape to pixels x classes, which
    `image_hw` folds back), none ([B, H, W]: no class axis) or unknown (another rank).
    activation: softmax | sigmoid | None (logits) | another activation's name.
    activation_layer: the layer that applies it; head_layer: the last layer with weights.
    dropped_by: a layer after the head that removed the channel axis (a Reshape to (H, W)).
    inferred: the activation was guessed from the output's values (the graph could not tell).
    """

    shape: tuple
    channels: int | None
    activation: str | None = None
    activation_layer: str | None = None
    head_layer: str | None = None
    softmax_axis: int = -1
    dropped_by: str | None = None
    folded_by: str | None = None  # the layer that flattens [B, H, W, C] to [B, H*W, C]
    dropped_channels: int | None = None
    after_head: list[str] = field(default_factory=list)
    inferred: bool = False
    note: str = ""
    layout: str = "image"
    image_hw: tuple[int, int] | None = None
    constant: float | None = None  # the one value of an output that is the same everywhere

    @property
    def probabilities(self) -> bool:
        return self.activation in PROBABILITY_ACTIVATIONS

    @property
    def where(self) -> str:
        """How a message names the activation: "the last layer `conv2d_2` (sigmoid)"."""
        layer = self.activation_layer or self.head_layer
        return f"`{layer}`" if layer else "the model's output"


def _name(fn) -> str | None:
    name = getattr(fn, "__name__", None) or type(fn).__name__.lower()
    return None if name == "linear" else name


def _producer(tensor):
    """(operation, its first input tensor or None) that produced a symbolic tensor."""
    history = getattr(tensor, "_keras_history", None)
    if history is None:
        return None, None
    op = history.operation
    node = op._inbound_nodes[history.node_index]
    inputs = [t for t in node.input_tensors if hasattr(t, "shape")]
    return op, (inputs[0] if inputs else None)


def _has_weights(op) -> bool:
    return bool(getattr(op, "trainable_weights", None))


def walk_head(model: keras.Model) -> dict:
    """Follow the graph back from the output to the activation and the last layer with weights.

    Returns the Head fields found (activation, activation_layer, head_layer, softmax_axis,
    dropped_by, dropped_channels, after_head, note); {"note": ...} when the graph cannot be
    followed (a subclassed model).
    """
    try:
        outputs = model.outputs  # a subclassed model has none
    except (AttributeError, ValueError):
        outputs = None
    if not outputs:
        return {"note": f"`{model.name}` is a subclassed model: its call() cannot be followed, "
                        "so the activation is judged from the output's values"}
    found: dict = {"after_head": []}
    tensor = outputs[0]
    for _ in range(1000):
        op, source = _producer(tensor)
        if op is None or isinstance(op, keras.layers.InputLayer):
            found["note"] = "no layer with weights between the input and the output"
            return found
        if isinstance(op, keras.Model) and getattr(op, "outputs", None):
            tensor = op.outputs[0]  # a nested model: continue inside it
            continue
        _note_rank_change(found, op, source, tensor)
        if _read_step(found, op):
            return found
        found["after_head"].append(op.name)
        if source is None:
            return found
        tensor = source
    return found


def _note_rank_change(found: dict, op, source, tensor):
    """A [B, H, W, C] -> [B, H*W, C] step (the class axis kept: folded_by) or a step that drops
    the channel axis ([B, H, W, 1] -> [B, H, W]: dropped_by)."""
    if source is None or len(source.shape) != 4 or len(tensor.shape) != 3:
        return
    if _flattens_pixels(source.shape, tensor.shape):
        found["folded_by"] = op.name
    else:
        found["dropped_by"], found["dropped_channels"] = op.name, source.shape[-1]


def _read_step(found: dict, op) -> bool:
    """Read one operation on the way back from the output into `found`; True where the walk
    ends (the last layer with weights, or an operation whose effect cannot be read)."""
    kind = type(op).__name__
    if kind == "Softmax" or (kind == "Activation" and _name(op.activation)) or \
            kind in ("ReLU", "LeakyReLU", "ELU", "PReLU", "Sigmoid"):
        if "activation" not in found:
            act = "softmax" if kind == "Softmax" else (
                _name(op.activation) if kind == "Activation" else kind.lower())
            found.update(activation=act, activation_layer=op.name)
            if act == "softmax":
                found["softmax_axis"] = _axis(op)
        if _has_weights(op):  # PReLU
            found["head_layer"] = op.name
            return True
        return False
    if _has_weights(op):
        found["head_layer"] = op.name
        if "activation" not in found:
            act = _name(getattr(op, "activation", None)) if hasattr(op, "activation") else None
            found["activation"] = act
            found["activation_layer"] = op.name if act else None
            if act == "softmax":
                found["softmax_axis"] = -1
        return True
    if kind.lower() in ("softmax", "sigmoid", "log_softmax"):  # keras.ops on a tensor
        if "activation" not in found:
            found.update(activation=kind.lower(), activation_layer=op.name)
            found["softmax_axis"] = _axis(op)
        return False
    if kind not in PASS_THROUGH and kind != "Activation":
        found["note"] = (f"the output passes through `{op.name}` ({kind}), whose effect seg "
                         "cannot read; the activation is judged from the output's values")
        found["unreadable"] = op.name
        return True
    return False


def _flattens_pixels(before, after) -> bool:
    """Whether a rank-4 -> rank-3 step keeps the class axis and flattens the pixels
    ([B, H, W, C] -> [B, H*W, C], the layout of many Keras segmentation repositories)."""
    h, w, c = before[1:]
    pixels, classes = after[1:]
    if c is None or classes is None or classes != c:
        return False
    return pixels is None or h is None or w is None or pixels == h * w


def fold_hw(pixels: int, image_hw: tuple[int, int]) -> tuple[int, int] | None:
    """The (h, w) grid of `pixels` outputs for an image of image_hw: the image's own size or
    an integer fraction of it (an output at stride 2, 4, ...), None when none fits."""
    height, width = image_hw
    for stride in (1, 2, 4, 8, 16, 32):
        for h, w in ((height // stride, width // stride),
                     (-(-height // stride), -(-width // stride))):
            if h * w == pixels and h > 1 and w > 1:
                return h, w
    return None


def _axis(op) -> int:
    axis = getattr(op, "axis", -1)
    if isinstance(axis, (list, tuple)):
        axis = axis[-1] if axis else -1
    return int(axis) if axis is not None else -1


def read_head(model: keras.Model, y_pred: np.ndarray, image_hw: tuple | None = None) -> Head:
    """The Head of a model, from its graph and its output y_pred on one batch of images of
    size image_hw (which folds a [B, H*W, C] output back into an image)."""
    found = walk_head(model)
    shape = tuple(int(d) for d in y_pred.shape)
    head = Head(shape=shape, channels=shape[-1] if len(shape) == 4 else None,
                **{k: v for k, v in found.items() if k in Head.__dataclass_fields__})
    head.layout = {4: "image", 3: "none"}.get(len(shape), "unknown")
    grid = fold_hw(shape[1], image_hw) if len(shape) == 3 and image_hw else None
    if len(shape) == 3 and grid and ("folded_by" in found or (
            "dropped_by" not in found and tuple(shape[1:]) != tuple(image_hw))):
        head.layout, head.image_hw, head.channels = "pixels", grid, shape[-1]
        head.dropped_by = head.dropped_channels = None
    if _constant(y_pred):
        head.constant = float(np.asarray(y_pred).flat[0])
    if "activation" not in found or found.get("unreadable"):
        head.activation, head.inferred = guess_activation(y_pred), True
        # the layer seg could not read is where the values come from (a Lambda(softmax))
        head.activation_layer = found.get("unreadable") if head.activation else None
        if head.constant is not None:  # where the constant comes from, as far as it can be told
            head.activation_layer = found.get("unreadable") or (
                f"{model.name}.call()" if "dropped_by" not in found and not found.get(
                    "after_head") and "head_layer" not in found else None)
    if head.head_layer is None:
        head.head_layer = last_weighted_layer(model)
    return head


def guess_activation(y_pred: np.ndarray) -> str | None:
    """softmax, sigmoid or None (logits), from what the values look like."""
    v = np.asarray(y_pred, np.float64)
    if not np.isfinite(v).all() or v.min() < 0 or v.max() > 1 or _constant(v):
        return None  # a constant (1.0 everywhere) says nothing of the activation
    if v.ndim == 4 and v.shape[-1] > 1 and np.allclose(v.sum(-1), 1, atol=1e-3):
        return "softmax"
    zeros = v == 0  # a sigmoid never gives exactly 0: zero logits, or a ReLU (but a hard
    if zeros.all() or (zeros.any() and not np.isin(v, (0, 1)).all()):  # 0/1 map is probability)
        return None
    return "sigmoid"


def _constant(y_pred) -> bool:
    """Whether every value of an output is the same (to float precision)."""
    v = np.asarray(y_pred, np.float64)
    if not v.size or not np.isfinite(v).all():
        return False
    return float(v.max() - v.min()) <= 1e-6 * max(1.0, float(np.abs(v).max()))


def as_image(values: np.ndarray, head: Head) -> np.ndarray:
    """An output (or masks) in the model's pixels layout [B, H*W, ...] folded back to
    [B, h, w, ...]; anything else as it is."""
    v = np.asarray(values)
    if head.layout != "pixels" or head.image_hw is None or v.ndim < 2:
        return v
    h, w = head.image_hw
    if v.shape[1] != h * w:
        return v
    return v.reshape((v.shape[0], h, w) + v.shape[2:])


def last_weighted_layer(model: keras.Model) -> str | None:
    """The layer owning the model's last trainable variable (its head, in creation order)."""
    variables = model.trainable_variables
    return layer_of(variables[-1], model) if variables else None


def layer_of(variable, model: keras.Model) -> str:
    """A variable's layer, as a path inside the model ("conv2d_2", "backbone/conv1")."""
    path = variable.path.rsplit("/", 1)[0]
    prefix = model.name + "/"
    return path[len(prefix):] if path.startswith(prefix) else path


def probabilities(y_pred: np.ndarray, from_logits: bool) -> np.ndarray:
    """[..., K] class probabilities from a model output; a 1-channel head gives K = 2.

    An output without a channel axis ([B, H, W]) is read as one channel.
    """
    y_pred = np.asarray(y_pred, np.float64)
    if y_pred.ndim == 3:
        y_pred = y_pred[..., None]
    if y_pred.shape[-1] == 1:
        p1 = 1 / (1 + np.exp(-y_pred[..., 0])) if from_logits else y_pred[..., 0]
        return np.stack([1 - p1, p1], axis=-1)
    if from_logits:
        e = np.exp(y_pred - y_pred.max(axis=-1, keepdims=True))
        return e / e.sum(axis=-1, keepdims=True)
    return y_pred


def class_indices(masks: np.ndarray, ignore_index: int | None = None) -> np.ndarray:
    """Masks as class indices [N, H, W]: one-hot masks [N, H, W, C] are argmaxed (a pixel whose
    row is all zero becomes ignore_index, or -1), [N, H, W, 1] is squeezed."""
    m = np.asarray(masks)
    if m.ndim == 4 and m.shape[-1] > 1:
        void = m.sum(-1) == 0
        out = m.argmax(-1).astype(np.int64)
        out[void] = -1 if ignore_index is None else ignore_index
        return out
    if m.ndim == 4:
        m = m[..., 0]
    return m.astype(np.int64)  # floats truncated, as Keras' sparse losses cast them


def non_integer(masks: np.ndarray) -> tuple[int, list[float]]:
    """(pixels that are not whole numbers, a few of their values) of class-index masks."""
    m = np.asarray(masks)
    if m.dtype.kind != "f":
        return 0, []
    bad = np.isfinite(m) & (m != np.trunc(m))
    values = np.unique(m[bad])
    picks = values[np.linspace(0, len(values) - 1, min(len(values), 5)).astype(int)] \
        if len(values) else values
    return int(bad.sum()), [round(float(v), 4) for v in picks]


def is_one_hot(masks: np.ndarray) -> bool:
    m = np.asarray(masks)
    if m.ndim != 4 or m.shape[-1] < 2:
        return False
    return bool(np.isin(m, (0, 1)).all() and (m.sum(-1) <= 1).all())


def main_path(model: keras.Model) -> list[tuple]:
    """[(operation, input tensor, output tensor)] from the first input to the output, following
    each operation's first input (the data path of a U-Net's decoder, through its
    concatenations). Empty for a subclassed model."""
    try:
        tensor = model.outputs[0]
    except (AttributeError, ValueError, IndexError):
        return []
    path = []
    for _ in range(10_000):
        op, source = _producer(tensor)
        if op is None or source is None or isinstance(op, keras.layers.InputLayer):
            break
        path.append((op, source, tensor))
        tensor = source
    return path[::-1]


def size_changes(model: keras.Model, x: np.ndarray) -> list[tuple[str, tuple, tuple]]:
    """(layer, (h, w) in, (h, w) out) for every layer on the main path that changes the spatial
    size, measured on one image (symbolic shapes are unknown for models of any input size)."""
    path = main_path(model)
    if not path:
        return []
    tensors = [path[0][1]] + [out for _, _, out in path]
    try:
        if len(model.inputs) != 1:
            return []
        values = keras.Model(model.inputs[0], tensors)(x[:1], training=False)
        shapes = [tuple(int(d) for d in np.shape(v)) for v in values]
    except Exception:  # noqa: BLE001 (fall back to the symbolic shapes)
        shapes = [tuple(t.shape) for t in tensors]
    out = []
    for (op, _, _), before, after in zip(path, shapes, shapes[1:], strict=False):
        if len(before) >= 3 and len(after) >= 3 and before[1:3] != after[1:3]:
            out.append((op.name, before[1:3], after[1:3]))
    return out


# Layers and operations that scale an image before the first layer with weights.
SCALING = ("Rescaling", "Normalization", "TrueDivide", "Divide", "Multiply", "Subtract",
           "ImageConverter", "Preprocessor", "Lambda")


def input_scaling(model) -> str | None:
    """The layer or operation that scales the model's images itself (a Rescaling, a
    Normalization, a `/ 255` or a preprocess_input in the graph, a keras-hub image converter)
    before its first layer with weights; None where there is none."""
    if getattr(model, "_functional", None) is None and not hasattr(model, "operations"):
        return None
    try:
        operations = list(model.operations)
    except (AttributeError, ValueError):
        operations = list(getattr(model, "layers", []))
    graph = bool(getattr(model, "outputs", None))
    for op in operations:
        if isinstance(op, keras.layers.InputLayer):
            continue
        if isinstance(op, keras.Model):
            inner = input_scaling(op)
            if inner or not graph:
                return inner and f"{op.name}/{inner}"
            return None
        kind = type(op).__name__
        if any(name in kind for name in SCALING) and "BatchNormalization" not in kind and \
                "GroupNormalization" not in kind and "LayerNormalization" not in kind:
            return op.name
        if graph and _has_weights(op):
            return None  # past the first layer with weights: nothing scaled the image
    return None


def first_output(y_pred):
    """The first of a model's outputs, in the order of model.outputs (dicts by sorted key)."""
    return keras.tree.flatten(y_pred)[0]


def all_layers(model):
    """Every layer of a model, nested models' layers included."""
    for layer in getattr(model, "layers", []):
        if isinstance(layer, keras.Model):
            yield from all_layers(layer)
        else:
            yield layer


def is_multi_hot(masks: np.ndarray) -> bool:
    """[N, H, W, C > 1] masks of 0 and 1 (multi-label, or one-hot)."""
    m = np.asarray(masks)
    return m.ndim == 4 and m.shape[-1] > 1 and bool(np.isin(m, (0, 1)).all())
