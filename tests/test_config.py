import subprocess
import sys

import pytest
import yaml
from hydra.errors import ConfigCompositionException, MissingConfigException

from conftest import ROOT
from seg.train import ConfigError, check_sections, open_data, build


def test_decoder_is_opt_in_and_not_in_the_defaults_list():
    defaults = yaml.safe_load((ROOT / "configs" / "train.yaml").read_text())["defaults"]
    assert not any(isinstance(d, dict) and "decoder" in d for d in defaults)
    assert "decoder" not in [d for d in defaults if isinstance(d, str)]


@pytest.mark.parametrize("overrides,expected,layer", [
    ((), "upsample", "UpSampling2D"),
    (("+decoder=upsample",), "upsample", "UpSampling2D"),
    (("+decoder=deconv",), "deconv", "Conv2DTranspose"),
])
def test_decoder_group_composes_and_builds_the_right_layers(tiny, overrides, expected, layer):
    cfg = tiny(*overrides)
    assert cfg["decoder"]["name"] == expected
    source, _ = open_data(cfg["data"])
    model, _, _ = build(cfg, source)
    assert layer in {type(x).__name__ for x in model.layers}


def test_decoder_options_override(compose):
    cfg = compose("+decoder=deconv", "decoder.kernel_size=3", "decoder.init=bilinear")
    assert (cfg["decoder"]["kernel_size"], cfg["decoder"]["init"]) == (3, "bilinear")


def test_mistyped_key_fails_naming_it(compose):
    with pytest.raises(ConfigCompositionException) as e:
        compose("trainer.epoch=3")
    assert "epoch" in str(e.value.__cause__) + str(e.value)


def test_unknown_decoder_option_fails_naming_it(compose):
    with pytest.raises(MissingConfigException, match="decoder/pixel"):
        compose("+decoder=pixel")


def test_unknown_keys_inside_a_section_are_refused(tiny):
    cfg = tiny()
    cfg["trainer"]["learning_rat"] = 0.1
    with pytest.raises(ConfigError, match="learning_rat"):
        check_sections(cfg)
    cfg = tiny()
    cfg["model"]["base_filter"] = 8
    source, _ = open_data(cfg["data"])
    with pytest.raises(ConfigError, match="base_filter"):
        build(cfg, source)


def test_folder_needs_root_and_num_classes(compose):
    with pytest.raises(Exception, match="root"):
        compose("data=folder")


def test_train_script_refuses_a_typo_with_a_message_not_a_traceback():
    result = subprocess.run([sys.executable, "scripts/train.py", "trainer.epoch=1"], cwd=ROOT,
                            capture_output=True, text=True, timeout=120)
    assert result.returncode != 0
    assert "epoch" in result.stderr and "Traceback" not in result.stderr
