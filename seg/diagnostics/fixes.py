"""The words of a finding's fix: in Keras terms for any model, in config keys for seg's own.

seg.diagnose runs the same checks on a user's Keras model and on the model seg's pipeline
built; only the advice differs. A Keras user is told which layer or loss argument to change
(KerasFixes); a seg user is told which config keys to set (ConfigFixes), and every such fix is
complete: applied literally on the command line, it passes the check it came from.
"""

from __future__ import annotations


class KerasFixes:
    """Fixes in the words of the model's own layers and loss (`ctx` is a diagnostics.Context)."""

    def one_channel_categorical(self, ctx) -> str:
        head = ctx.head.head_layer or "the last layer"
        if ctx.head.layout == "pixels":
            return self._pixels_one_channel(ctx)
        return (f"keep one channel and train it with loss='binary_crossentropy' (sigmoid in "
                f"`{head}`, or no activation and keras.losses.BinaryCrossentropy(from_logits="
                f"True)); or give `{head}` one filter per class, no activation, and use keras."
                "losses.SparseCategoricalCrossentropy(from_logits=True) with integer masks")

    def softmax_one_channel(self, ctx) -> str:
        if ctx.head.layout == "pixels":
            return self._pixels_one_channel(ctx)
        return (f"use sigmoid instead of softmax in {ctx.head.where} with loss="
                "'binary_crossentropy', or one channel per class with softmax")

    def _pixels_one_channel(self, ctx) -> str:
        """For a [B, H*W, 1] output (a Reshape to pixels x classes with n_classes=1)."""
        head, pixels = ctx.head.head_layer or "the last convolution", ctx.head.shape[1]
        return (f"give `{head}` 2 filters (n_classes=2: background and object) and one-hot "
                f"masks of shape [N, {pixels}, 2] (keras.utils.to_categorical(masks, 2)"
                f".reshape(len(masks), {pixels}, 2)), keeping softmax and "
                "categorical_crossentropy; or replace the softmax with a sigmoid and use "
                f"loss='binary_crossentropy' with masks of shape [N, {pixels}, 1]")

    def sigmoid_many(self, ctx) -> str:
        return (f"remove the sigmoid from {ctx.head.where} and use the loss with "
                "from_logits=True (softmax inside the loss)")

    def bce_many(self, ctx) -> str:
        return ("for exclusive classes use keras.losses.SparseCategoricalCrossentropy with "
                "integer masks (or categorical_crossentropy with one-hot masks)")

    def probabilities_to_logits_loss(self, ctx) -> str:
        return (f"remove the {ctx.head.activation} from {ctx.head.where} (logits, recommended) or "
                f"build the loss with from_logits=False")

    def logits_to_probability_loss(self, ctx) -> str:
        name = ctx.loss.name
        cls = "".join(p.capitalize() for p in name.split("_")) if "_" in name else name
        return (f"use keras.losses.{cls}(from_logits=True) (recommended), or end "
                f"{ctx.head.where} in an activation")

    def head_activation(self, ctx) -> str:
        return (f"end {ctx.head.where} without an activation (logits) and use a loss with "
                "from_logits=True, or with sigmoid/softmax")

    def label_map_255(self, ctx) -> str:
        return "the masks look like 0/255 images: divide them by 255 (masks // 255)"

    def label_map(self, ctx, values: list[int]) -> str:
        return (f"map the raw values {values} to class indices 0..{ctx.num_classes - 1}, give "
                "the last layer more channels, or pass them as ignore_index")

    def zero_and_ignore(self, ctx) -> str:
        return (f"map the foreground to class 1 (masks // {ctx.ignore_index}) or pass another "
                "ignore_index")

    def single_class(self, ctx) -> str:
        return "check the masks: were the objects mapped to background?"

    def absent_classes(self, ctx) -> str:
        return "check num_classes and how the masks were made"

    def rare_classes(self, ctx) -> str:
        return ("weight the rare classes (class_weight in fit, or per-pixel sample weights), or "
                "add a Dice term to the loss")

    def ignore_share(self, ctx) -> str:
        return "check ignore_index and the masks"

    def ignore_not_ignored(self, ctx) -> str:
        return (f"use keras.losses.SparseCategoricalCrossentropy(ignore_class={ctx.ignore_index}"
                ", ...), or map those pixels to a class")

    def checkerboard(self, ctx, layers: list[tuple[str, int, int]]) -> str:
        return "; ".join(f"kernel_size={s * max(-(-k // s), 1)} in `{name}` (a multiple of its "
                         f"stride {s})" for name, k, s in layers) + \
            ", or UpSampling2D followed by Conv2D"

    def learning_rate(self, ctx) -> str:
        return "lower the learning rate (try 10x smaller)"

    def head_gradient(self, ctx) -> str:
        return ("see the head/loss findings: give the head logits (no activation) and a loss "
                "with from_logits=True that matches its channels")

    def learn_rate_or_loss(self, ctx) -> str:
        return "check the head/loss findings and the learning rate"


class ConfigFixes(KerasFixes):
    """Fixes as config overrides for models built by seg's pipeline (scripts/train.py)."""

    ONE_PER_CLASS = ("model.out_channels=null model.head_activation=null loss.name=auto "
                     "loss.from_logits=true (one channel per class: softmax cross-entropy from "
                     "logits, + Dice), or keep one channel with model.out_channels=1 "
                     "model.head_activation=null loss.name=auto loss.from_logits=true (sigmoid + "
                     "binary cross-entropy from logits, + Dice)")

    def one_channel_categorical(self, ctx) -> str:
        return self.ONE_PER_CLASS

    def softmax_one_channel(self, ctx) -> str:
        return self.ONE_PER_CLASS

    def sigmoid_many(self, ctx) -> str:
        return "model.head_activation=null loss.from_logits=true (softmax inside the loss)"

    def bce_many(self, ctx) -> str:
        return "loss.name=auto"

    def probabilities_to_logits_loss(self, ctx) -> str:
        return "model.head_activation=null (logits, recommended) or loss.from_logits=false"

    def logits_to_probability_loss(self, ctx) -> str:
        return "loss.from_logits=true (recommended) or set model.head_activation"

    def head_activation(self, ctx) -> str:
        return "model.head_activation=null (logits), sigmoid or softmax"

    def label_map_255(self, ctx) -> str:
        return ("the masks look like 0/255 images: map 255 to class 1 with "
                "data.label_map='{255:1}'")

    def label_map(self, ctx, values: list[int]) -> str:
        mapping = ",".join(f"{v}:{min(i + 1, ctx.num_classes - 1)}" for i, v in enumerate(values))
        return (f"map the raw values to class indices, e.g. data.label_map='{{{mapping}}}', "
                f"mark them as void with data.ignore_index, or raise data.num_classes")

    def zero_and_ignore(self, ctx) -> str:
        return f"map the foreground to class 1 with data.label_map='{{{ctx.ignore_index}:1}}'"

    def single_class(self, ctx) -> str:
        return "check the masks and data.label_map (were the objects mapped to background?)"

    def absent_classes(self, ctx) -> str:
        return "check data.num_classes and the label mapping"

    def __init__(self, cfg: dict | None = None):
        self.cfg = cfg or {}  # the run's config: advice never suggests what is already on

    def rare_classes(self, ctx) -> str:
        loss, data = self.cfg.get("loss", {}), self.cfg.get("data", {})
        wanted = []
        if ctx.loss.kind not in ("ce_dice", "dice", "lovasz", "ce_lovasz"):
            wanted.append("loss.name=auto (cross-entropy + Dice)")
        # one lever, not both: weights and rare-class crops each raise the rare classes'
        # share of the loss, and together they overshoot (the street stand-in: 0.29 val mIoU
        # with both, 0.35 with the weights alone; docs/benchmarks.md)
        if loss.get("class_weights") is None and not data.get("rare_class_crops"):
            wanted.append("loss.class_weights=median_frequency")
        if not wanted:
            return ("already weighted or oversampled (loss.class_weights, "
                    "data.rare_class_crops; one of them is enough: both count the rare classes "
                    "twice): watch IoU/per_class in TensorBoard; a longer budget helps most")
        return (" ".join(wanted) + ", or plan the whole recipe from the data (it chooses the "
                "weighting from the class shares and measures the crop in short pilot runs): "
                "python scripts/plan.py <the same data overrides> plan.budget_minutes=M")

    def ignore_share(self, ctx) -> str:
        return "check data.ignore_index and data.label_map"

    def checkerboard(self, ctx, layers: list[tuple[str, int, int]]) -> str:
        k, s = layers[0][1], layers[0][2]
        return (f"decoder.kernel_size={s * max(k // s, 1)} (a multiple of the stride), "
                "decoder.init=bilinear, or +decoder=upsample")

    def learning_rate(self, ctx) -> str:
        return "lower trainer.learning_rate (try 10x smaller)"

    def head_gradient(self, ctx) -> str:
        return ("see the head/loss check; use logits with model.head_activation=null "
                "loss.name=auto loss.from_logits=true")

    def learn_rate_or_loss(self, ctx) -> str:
        return "check the head/loss findings and trainer.learning_rate"
