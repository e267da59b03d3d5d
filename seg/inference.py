"""Using a trained model: load a run, predict whole or tiled images, evaluate a split, export.

Models are only ever loaded from .keras files with Keras' safe mode on (no Lambda layers, no
pickled code); the run's config.json says how the model was trained.
"""

from __future__ import annotations

import heapq
import json
from dataclasses import dataclass
from pathlib import Path

import keras
import numpy as np

from seg import checkpoints, records, viz
from seg.diagnostics.reading import probabilities
from seg.metrics import confusion_matrix


class LoadError(ValueError):
    """A run folder or checkpoint that cannot be used; the message names the path."""


@dataclass
class Trained:
    """A trained model with the config of the run that made it."""

    model: keras.Model
    config: dict | None
    checkpoint: Path
    run_dir: Path | None

    @property
    def from_logits(self) -> bool:
        return True if self.config is None else bool(self.config["loss"]["from_logits"])

    @property
    def channels(self) -> int:
        return int(self.model.input_shape[-1])

    @property
    def raw(self) -> bool:
        """Whether the model takes raw bands (16-bit, float) and standardises them itself."""
        return takes_raw_bands(self.model)

    @property
    def class_names(self) -> list[str]:
        k = self.model.output_shape[-1]
        k = 2 if k == 1 else k
        names = (self.config or {}).get("class_names")
        return list(names) if names and len(names) == k else [f"class_{i}" for i in range(k)]


def takes_raw_bands(model: keras.Model) -> bool:
    """A model with band statistics inside takes the files' own values, not [0, 1] images."""
    return any(layer.name == "band_normalization" for layer in model.layers)


def model_input(image: np.ndarray) -> np.ndarray:
    """An image as the model takes it: uint8 scaled to [0, 1], raw bands as they are."""
    image = np.asarray(image)
    return image.astype(np.float32) / 255.0 if image.dtype == np.uint8 else \
        image.astype(np.float32)


def _import_for(checkpoint: Path):
    """Import keras-hub when a .keras file holds one of its layers (registered on import)."""
    import zipfile  # noqa: PLC0415

    try:
        with zipfile.ZipFile(checkpoint) as z:
            if b"keras_hub" in z.read("config.json"):
                from seg.models.hub import keras_hub  # noqa: PLC0415
                keras_hub()
    except (OSError, KeyError, zipfile.BadZipFile):
        pass  # keras_problem / load_model name the file
    except ValueError as e:  # keras-hub not installed: say how to get it
        raise LoadError(f"{checkpoint}: {e}") from None


def find_checkpoint(path: str | Path) -> tuple[Path, Path | None]:
    """(checkpoint, run folder or None) for a run folder or a .keras file."""
    path = Path(path)
    if path.is_dir():
        for name in ("best.keras", "last.keras"):
            if (path / "checkpoints" / name).is_file():
                return path / "checkpoints" / name, path
        raise LoadError(f"{path}: no checkpoints/best.keras or checkpoints/last.keras in this "
                        "folder (is it a run folder? runs are under outputs/)")
    if not path.exists():
        raise LoadError(f"{path}: no such file or folder")
    if path.suffix != ".keras":
        kind = f"'{path.suffix}' files can carry code" if path.suffix else "this is not one"
        raise LoadError(f"{path}: only .keras model files are loaded (safe mode); {kind}")
    run_dir = path.parent.parent if path.parent.name == "checkpoints" else path.parent
    return path, run_dir if (run_dir / "config.json").is_file() else None


def load(path: str | Path) -> Trained:
    """Load a run folder's best checkpoint (or a .keras file) and its run's config.json."""
    checkpoint, run_dir = find_checkpoint(path)
    import seg.models  # noqa: F401  (registers seg's layers with Keras)
    import seg.losses  # noqa: F401
    import seg.metrics  # noqa: F401

    problem = checkpoints.keras_problem(checkpoint)  # Keras calls a truncated file "not found"
    if problem:
        raise LoadError(f"{checkpoint}: cannot load: not a usable .keras file ({problem}); a "
                        "truncated or "
                        "partly copied file? Use another checkpoint (checkpoints/last.keras) "
                        "or copy it again")
    _import_for(checkpoint)
    try:
        model = keras.saving.load_model(checkpoint, compile=False, safe_mode=True)
    except Exception as e:  # Keras raises ValueError, OSError, zipfile errors, ...
        raise LoadError(f"{checkpoint}: cannot load this model file ({type(e).__name__}: "
                        f"{str(e).splitlines()[0] if str(e) else ''})") from e
    config = None
    if run_dir is not None:
        config = _read_json(run_dir / "config.json")
        metrics_file = run_dir / "metrics.json"
        if metrics_file.exists():  # the class names of folder data sets live in metrics.json
            config["class_names"] = _read_json(metrics_file).get("class_names")
    return Trained(model, config, checkpoint, run_dir)


def _read_json(path: Path) -> dict:
    """A run's config.json or metrics.json, checked against what seg writes there."""
    try:
        return records.read(path)
    except (OSError, records.RecordError) as e:
        text = str(e) if isinstance(e, records.RecordError) else f"{path}: unreadable ({e})"
        raise LoadError(f"{text}; restore it from the run, or give the .keras file alone") \
            from None


def load_user_model(spec: str) -> keras.Model:
    """A model to diagnose: a .keras file (safe mode; compiled if it was saved compiled) or
    `module.py:function`, the file's function called without arguments.

    The .py form runs that file's code, as `python module.py` would: it is the command line's
    own choice, never a config value.
    """
    import importlib.util

    import seg.losses  # noqa: F401  (registers seg's layers and losses with Keras)
    import seg.metrics  # noqa: F401
    import seg.models  # noqa: F401

    if ":" in spec and spec.split(":", 1)[0].endswith(".py"):
        file, function = spec.split(":", 1)
        path = Path(file)
        if not path.is_file():
            raise LoadError(f"--model {spec}: no such file {path}")
        module_spec = importlib.util.spec_from_file_location(path.stem, path)
        module = importlib.util.module_from_spec(module_spec)
        try:
            module_spec.loader.exec_module(module)
        except Exception as e:  # noqa: BLE001 (the user's code: say where it failed)
            raise LoadError(f"--model {spec}: importing {path} failed: {type(e).__name__}: {e}") \
                from e
        fn = getattr(module, function, None)
        if not callable(fn):
            names = sorted(n for n, v in vars(module).items()
                           if callable(v) and not n.startswith("_"))
            raise LoadError(f"--model {spec}: {path} has no function {function!r} "
                            f"(it has {names[:12]})")
        try:
            model = fn()
        except Exception as e:  # noqa: BLE001
            raise LoadError(f"--model {spec}: {function}() failed: {type(e).__name__}: {e}") from e
        if not isinstance(model, keras.Model):
            raise LoadError(f"--model {spec}: {function}() returned {type(model).__name__}, "
                            "not a keras.Model")
        return model
    path = Path(spec)
    if not path.is_file():
        raise LoadError(f"--model {spec}: no such file (give a .keras file or module.py:function)")
    if path.suffix != ".keras":
        raise LoadError(f"--model {spec}: only .keras model files are loaded (safe mode), or "
                        "module.py:function")
    problem = checkpoints.keras_problem(path)
    if problem:
        raise LoadError(f"--model {spec}: not a usable .keras file ({problem}); a truncated or "
                        "partly copied file?")
    _import_for(path)
    try:
        return keras.saving.load_model(path, safe_mode=True)
    except Exception:  # noqa: BLE001 (a compiled loss Keras cannot rebuild: load it uncompiled)
        pass
    try:
        return keras.saving.load_model(path, compile=False, safe_mode=True)
    except Exception as e:  # noqa: BLE001
        raise LoadError(f"{path}: cannot load this model file ({type(e).__name__}: "
                        f"{str(e).splitlines()[0] if str(e) else ''})") from e


def _window(n: int) -> np.ndarray:
    """Blending weights along one tile side: a Gaussian that favours the tile's centre."""
    x = np.arange(n) - (n - 1) / 2
    return np.exp(-0.5 * (x / (n / 4)) ** 2) + 1e-3


def _starts(length: int, tile: int, stride: int) -> list[int]:
    if length <= tile:
        return [0]
    starts = list(range(0, length - tile, stride))
    return starts + [length - tile]


TTA = ("none", "flip", "d4")


def _views(tta: str):
    """(transform, inverse) pairs of the test-time views of images [B, H, W, C]."""
    if tta not in TTA:
        raise ValueError(f"tta={tta!r}: use one of {list(TTA)}")
    mirrors = (False, True) if tta != "none" else (False,)
    turns = range(4) if tta == "d4" else range(1)
    for k in turns:
        for m in mirrors:
            def there(x, k=k, m=m):
                x = np.rot90(x, k, axes=(1, 2))
                return x[:, :, ::-1] if m else x

            def back(p, k=k, m=m):
                return np.rot90(p[:, :, ::-1] if m else p, -k, axes=(1, 2))
            yield there, back


def predict_probs(model, images: np.ndarray, *, from_logits: bool, tile: int = 0,
                  overlap: float = 0.25, batch_size: int = 8, flip: bool = False,
                  tta: str = "none") -> np.ndarray:
    """Class probabilities [B, H, W, K] for float images [B, H, W, C] in [0, 1].

    Images with a side longer than `tile` (> 0) are predicted in tile x tile windows that overlap
    by `overlap`, blended with weights that favour each window's centre, so no seam shows and
    any image size fits in memory. tile=0 predicts whole images. Test-time augmentation averages
    the probabilities of several views: tta="flip" (or flip=True) the image and its left-right
    mirror, tta="d4" its 8 rotations by 90 degrees and their mirrors (as the U-Net paper did
    on the ISBI membranes).
    """
    images = np.asarray(images, np.float32)
    b, h, w, _ = images.shape
    fixed = (getattr(model, "input_shape", None) or (None, None))[1]
    if fixed:  # a fixed-size encoder (MiT): windows of its size, small images padded up to it
        if h < fixed or w < fixed:
            padded = np.pad(images, [(0, 0), (0, max(fixed - h, 0)), (0, max(fixed - w, 0)),
                                     (0, 0)])
            return predict_probs(model, padded, from_logits=from_logits, tile=fixed,
                                 overlap=overlap, batch_size=batch_size, flip=flip,
                                 tta=tta)[:, :h, :w]
        tile = fixed
    views = list(_views("flip" if flip and tta == "none" else tta))

    def forward(x):
        out = []
        for i in range(0, len(x), batch_size):
            chunk = x[i:i + batch_size]
            p = sum(back(probabilities(np.asarray(model(np.ascontiguousarray(there(chunk)),
                                                        training=False)), from_logits))
                    for there, back in views)
            out.append(p / len(views))
        return np.concatenate(out)

    if not tile or (h <= tile and w <= tile):
        return forward(images)
    th, tw = min(tile, h), min(tile, w)
    stride_h, stride_w = max(int(th * (1 - overlap)), 1), max(int(tw * (1 - overlap)), 1)
    weight = np.outer(_window(th), _window(tw)).astype(np.float32)[None, :, :, None]
    total, norm = None, np.zeros((1, h, w, 1), np.float32)
    for y in _starts(h, th, stride_h):
        for x in _starts(w, tw, stride_w):
            p = forward(images[:, y:y + th, x:x + tw])
            if total is None:
                total = np.zeros((b, h, w, p.shape[-1]), np.float32)
            total[:, y:y + th, x:x + tw] += p * weight
            norm[:, y:y + th, x:x + tw] += weight
    return total / norm


def scores(cm: np.ndarray) -> dict:
    """mean IoU (over classes present in truth or prediction), per-class IoU, accuracy, Dice."""
    cm = cm.astype(np.float64)
    tp, true, pred = np.diag(cm), cm.sum(1), cm.sum(0)
    union = true + pred - tp
    present = union > 0
    iou = np.divide(tp, union, out=np.zeros_like(tp), where=present)
    dice = np.divide(2 * tp, true + pred, out=np.zeros_like(tp), where=present)
    return {"mean_iou": float(iou[present].mean()) if present.any() else float("nan"),
            "iou_per_class": iou.tolist(),
            "pixel_accuracy": float(tp.sum() / max(cm.sum(), 1)),
            "dice": float(dice[present].mean()) if present.any() else float("nan")}


def evaluate(trained: Trained, dataset, names: list[str], *, num_classes: int, ignore_index: int,
             tile: int = 0, overlap: float = 0.25, tta: str = "none", worst: int = 4,
             skipped: dict | None = None, progress: bool = True) -> dict:
    """Metrics of a model on whole images of a dataset of unbatched (uint8 image, int mask).

    `names` are the files of the dataset's elements in order; files in `skipped` (filled while
    the dataset is read, with data.on_bad_sample=skip) have no element and are passed over.

    Returns the split's scores, the confusion matrix, every image's mean IoU and the `worst`
    images' arrays (image, truth, prediction, confidence) for their panels.
    """
    cm = np.zeros((num_classes, num_classes), np.int64)
    per_image, kept = [], []
    skipped = {} if skipped is None else skipped
    name_at = 0
    bar = keras.utils.Progbar(len(names) or None, unit_name="image") if progress else None
    for i, (image, mask) in enumerate(dataset.as_numpy_iterator()):
        x = model_input(image[None])
        probs = predict_probs(trained.model, x, from_logits=trained.from_logits, tile=tile,
                              overlap=overlap, tta=tta)[0]
        pred = probs.argmax(-1)
        image_cm = confusion_matrix(mask, pred, num_classes, ignore_index)
        cm += image_cm
        miou = scores(image_cm)["mean_iou"]
        while name_at < len(names) and names[name_at] in skipped:
            name_at += 1  # a skipped file: its element was left out of the dataset
        name = names[name_at] if name_at < len(names) else f"#{i}"
        name_at += 1
        per_image.append({"file": name, "mean_iou": miou})
        if worst and np.isfinite(miou):  # keep the `worst` lowest: a heap with the highest on top
            heapq.heappush(kept, (-miou, -i, {"file": name, "mean_iou": miou, "image": x[0],
                                              "truth": mask, "prediction": pred,
                                              "confidence": probs.max(-1)}))
            if len(kept) > worst:
                heapq.heappop(kept)
        if bar:
            bar.update(i + 1)
    return {**scores(cm), "confusion_matrix": cm.tolist(), "images": len(per_image),
            "per_image": per_image,
            "worst": [e for _, _, e in sorted(kept, key=lambda k: (-k[0], -k[1]))]}


def worst_panel(entry: dict, class_names: list[str], ignore_index: int) -> np.ndarray:
    """The side-by-side panel of one image from evaluate()'s `worst` list."""
    return viz.panel([entry["image"]], [entry["truth"]], [entry["prediction"]],
                     [entry["confidence"]], class_names=class_names, ignore_index=ignore_index,
                     title=f"{entry['file']}: mIoU {entry['mean_iou']:.3f}", cell=256)


def serving_model(trained: Trained) -> keras.Model:
    """The trained network with its pre- and post-processing inside, for serving.

    Input: raw uint8 images [B, H, W, C] of any size (float32 bands, the files' own values,
    for a model of 16-bit or float data). Outputs: "probabilities" [B, H, W, K] (float32) and
    "labels" [B, H, W] (int32 class index).
    """
    from seg.models.layers import ArgMax, ClassProbabilities

    raw = keras.Input((None, None, trained.channels), dtype=_input_dtype(trained), name="image")
    x = raw if trained.raw else keras.layers.Rescaling(1 / 255.0, name="to_unit_range")(raw)
    probs = ClassProbabilities(trained.from_logits, name="probabilities")(trained.model(x))
    labels = ArgMax(name="labels")(probs)
    return keras.Model(raw, {"probabilities": probs, "labels": labels},
                       name=f"{trained.model.name}_serving")


def _input_dtype(trained: Trained) -> str:
    return "float32" if trained.raw else "uint8"


def export(trained: Trained, out_dir: str | Path) -> dict:
    """Write out_dir/model.keras and out_dir/saved_model (signature 'serve') for raw images."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    model = serving_model(trained)
    model.save(out / "model.keras")
    import tensorflow as tf

    model.export(str(out / "saved_model"), format="tf_saved_model", verbose=False,
                 input_signature=[tf.TensorSpec([None, None, None, trained.channels],
                                                _input_dtype(trained), name="image")])
    info = {"keras": str(out / "model.keras"), "saved_model": str(out / "saved_model"),
            "input": f"{_input_dtype(trained)} [batch, height, width, {trained.channels}], any "
                     "size" + (" (the files' own values)" if trained.raw else ""),
            "outputs": {"probabilities": "float32 [batch, height, width, classes]",
                        "labels": "int32 [batch, height, width]"},
            "class_names": trained.class_names, "source_checkpoint": str(trained.checkpoint)}
    (out / "export.json").write_text(json.dumps(info, indent=2))
    return info
