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


@pytest.mark.slow
def test_train_script_refuses_a_typo_with_a_message_not_a_traceback():
    result = subprocess.run([sys.executable, "scripts/train.py", "trainer.epoch=1"], cwd=ROOT,
                            capture_output=True, text=True, timeout=120)
    assert result.returncode != 0
    assert "epoch" in result.stderr and "Traceback" not in result.stderr


@pytest.mark.parametrize("args,hint", [
    (["trainer.epoch=3"], "trainer.epoch=3: did you mean trainer.epochs=3?"),
    (["+trainer.epoch=3"], "+trainer.epoch=3: did you mean trainer.epochs=3?"),
    (["traner.epochs=2"], "traner.epochs=2: did you mean trainer.epochs=2?"),
    (["trainer.lr=0.1"], "trainer.lr=0.1: did you mean trainer.learning_rate=0.1?"),
    (["epochs=3"], "epochs=3: did you mean trainer.epochs=3?"),
    (["sed=1"], "sed=1: did you mean seed=1?"),
    (["data.photometric.brightnes=0.1"], "did you mean data.photometric.brightness=0.1?"),
    (["+decoder=deconvv"], "+decoder=deconvv: did you mean +decoder=deconv?"),
    (["decoderr=deconv"], "decoderr=deconv: did you mean +decoder=deconv?"),  # opt-in: +
    (["data=folderr"], "data=folderr: did you mean data=folder?"),  # a default: no +
    (["-m", "+decoder=upsample,deconvv"], "did you mean +decoder=upsample,deconv?"),
    (["+experiment=yelow_image"], "did you mean +experiment=yellow_image?"),
])
def test_a_misspelt_key_or_option_gets_the_closest_valid_ones(args, hint):
    from seg_hydra.errors import did_you_mean

    (found,) = did_you_mean(args)
    assert found.endswith(hint), found


def test_valid_or_far_off_overrides_get_no_guess():
    from seg_hydra.errors import did_you_mean

    assert did_you_mean(["trainer.epochs=3", "+decoder=deconv", "data=folder", "seed=1",
                         "data.root=/x", "data.photometric.hue=0.1", "hydra.run.dir=/x",
                         "-m", "model.encoder=list", "+trainer.zzzzzz=1"]) == []


@pytest.mark.slow
@pytest.mark.parametrize("arg,hint", [("trainer.epoch=3", "did you mean trainer.epochs=3?"),
                                      ("+decoder=deconvv", "did you mean +decoder=deconv?")])
def test_train_script_refuses_a_misspelling_with_the_closest_valid_one(arg, hint, tmp_path):
    result = subprocess.run([sys.executable, "scripts/train.py", arg,
                             f"hydra.run.dir={tmp_path / 'run'}"], cwd=ROOT,
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 2 and "Traceback" not in result.stderr, result.stderr[-2000:]
    assert f"{arg}: {hint}" in result.stderr
    assert not (tmp_path / "run").exists()


def test_tf_tutorial_experiment_composes(compose):
    cfg = compose("+experiment=tf_tutorial")
    assert cfg["model"]["encoder"] == "mobilenet_v2"
    assert (cfg["decoder"]["name"], cfg["decoder"]["kernel_size"]) == ("deconv", 3)


def test_isbi_experiment_switches_the_data(compose):
    cfg = compose("+experiment=isbi_membrane", "+decoder=deconv")
    assert cfg["data"]["root"].endswith("shared/datasets/isbi2012-membrane")
    assert cfg["data"]["label_map"] == {0: 0, 255: 1} and cfg["decoder"]["name"] == "deconv"


@pytest.mark.slow
def test_multirun_sweep_names_each_job_by_its_overrides(tmp_path):
    import json
    result = subprocess.run(
        [sys.executable, "scripts/train.py", "-m", "+decoder=upsample,deconv",
         "data.num_train=32", "data.num_val=8", "data.image_size=32", "trainer.epochs=1",
         "trainer.steps_per_epoch=2", "trainer.batch_size=4", "logging.panels_every=0",
         "trainer.verbose=0", f"hydra.sweep.dir={tmp_path}"],
        cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    jobs = sorted(p.name for p in tmp_path.iterdir() if (p / "metrics.json").exists())
    assert "decoder=upsample" in jobs[0] and "decoder=deconv" in jobs[1], jobs
    decoders = [json.loads((tmp_path / j / "metrics.json").read_text())["decoder"] for j in jobs]
    assert decoders == ["upsample", "deconv"]


def test_run_names_stay_folder_safe():
    import seg_hydra
    assert seg_hydra.run_name("") == "default"
    assert seg_hydra.run_name("+decoder=deconv,data.root=/a/b") == "decoder=deconv,data.root=_a_b"
    # TensorFlow reads checkpoint paths as file patterns: no [ ] * ? in a run folder's name
    assert seg_hydra.run_name("data.scale_range=[1.0,1.0]") == "data.scale_range=(1.0,1.0)"
    long = seg_hydra.run_name(",".join(f"key{i}=value{i}" for i in range(40)))
    assert len(long) <= 120 and long.startswith("key0=value0")
