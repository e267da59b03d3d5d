"""seg.resources and seg.models.estimate_parameters: what cannot fit is refused before
anything is built."""

import pytest

from seg import parts, resources
from seg.config import ConfigError
from seg.models import build_model, estimate_parameters


@pytest.mark.parametrize("encoder,decoder,norm,depth", [
    ("unet", "upsample", "batch", 3), ("unet", "deconv", "group", 4),
    ("unet", "pixelshuffle", "none", 2), ("unet", "deconv", "layer", 5),
    ("mobilenet_v2", "upsample", "batch", 3), ("efficientnet_b0", "pixelshuffle", "group", 3),
])
def test_the_parameter_estimate_is_the_built_models_count(encoder, decoder, norm, depth):
    kw = dict(num_classes=3, in_channels=3, encoder=encoder, depth=depth, base_filters=8,
              norm=norm, decoder=decoder, kernel_size=4)
    assert estimate_parameters(**kw) == build_model(**kw).count_params()


def test_depth_9_is_refused_with_the_figures_before_anything_is_built(compose):
    with pytest.raises(ConfigError, match=r"does not fit in memory: 2,214,791,396 parameters"):
        resources.check(compose("model.depth=9", "data.image_size=512"), log=lambda _: None)


def test_a_huge_batch_is_refused_naming_what_to_lower(compose, monkeypatch):
    monkeypatch.setattr(resources, "available_memory", lambda: 4 * resources.GIB)
    monkeypatch.setattr(resources, "_gpu_memory", lambda: None)
    with pytest.raises(ConfigError, match=r"Lower trainer.batch_size \(now 256\)"):
        resources.check(compose("trainer.batch_size=256", "data.image_size=256"),
                        log=lambda _: None)


def test_close_to_the_limit_is_a_warning(compose, monkeypatch):
    cfg = compose("trainer.batch_size=16", "data.image_size=256")
    need = resources.estimate(cfg).total_bytes
    monkeypatch.setattr(resources, "available_memory", lambda: int(need / 0.75))
    monkeypatch.setattr(resources, "_gpu_memory", lambda: None)
    said = []
    resources.check(cfg, log=said.append)
    assert len(said) == 1 and "close to the memory limit" in said[0]


def test_the_default_config_fits_without_a_word(compose):
    said = []
    sized, _ = parts.sized(compose(), log=lambda _: None)  # depth 3 for the built-in shapes
    est = resources.check(sized, log=said.append)
    assert said == [] and est.parameters == 537_956
