"""data.image_size, model.depth and trainer.batch_size = auto (issue 28, item 5): the crop,
depth and batch follow the objects of the data; numbers keep their meaning; config.json holds
what auto became."""

import json
import subprocess
import sys

import numpy as np
import pytest

from conftest import ROOT, write_folder_dataset
from seg import config, geometry, parts, recipe, resources
from seg.config import ConfigError
from seg.fingerprint import Objects


def _objects(*extents):
    return {k: Objects(10, 100.0, float(e) if e else None, 5.0) for k, e in enumerate(extents)}


def _cfg(compose, *more):
    return compose("data=folder", "data.root=unused", "data.num_classes=3", *more)


@pytest.mark.parametrize("extents, side, want", [
    ((13, 27, 27, 26), 64, (64, 3, 16)),       # the built-in shapes: the old defaults
    ((43, 71), 512, (256, 4, 4)),              # ISBI's membranes and cells
    ((35, 180, 138, 18, 214, 133, 20, 36, 126, 73, 30), 360, (256, 4, 4)),  # street scenes
    ((600, 700), 1024, (256, 4, 4)),           # huge objects: at most depth 4 and 256 px
    ((5, 8), 32, (32, 3, 16)),                 # small images: the crop is the image
    ((None, None), 96, (96, 3, 16)),           # nothing measured: the receptive field decides
])
def test_the_objects_decide_crop_depth_and_batch(compose, extents, side, want):
    sized = geometry.decide(_cfg(compose, "data.image_size=auto"), _objects(*extents), side, 16)
    got = sized.values
    assert (got["data.image_size"], got["model.depth"], got["trainer.batch_size"]) == want
    crop, depth, _ = want
    assert crop % 2 ** depth == 0 and crop >= 4 * 2 ** depth  # the crop holds whole cells
    assert "16 training masks" in sized.reason or "no object" in sized.reason


def test_a_number_given_stays_and_the_others_follow_it(compose):
    scenes = _objects(35, 180, 73, 214)
    sized = geometry.decide(_cfg(compose, "data.image_size=128"), scenes, 360, 16)
    assert sized.values == {"model.depth": 4, "trainer.batch_size": 16}  # 64 x 2 cells fit
    sized = geometry.decide(_cfg(compose, "data.image_size=32"), scenes, 360, 16)
    assert sized.values["model.depth"] == 3  # 32 px holds 4 cells of 8, not of 16
    sized = geometry.decide(_cfg(compose, "data.image_size=auto", "model.depth=2",
                                 "trainer.batch_size=3"), scenes, 360, 16)
    assert sized.values == {"data.image_size": 256}
    sized = geometry.decide(_cfg(compose, "data.image_size=auto", "model.encoder=mobilenet_v2"),
                            _objects(10, 12), 360, 16)
    assert sized.values["data.image_size"] == 128  # a backbone pads to 32: 4 cells


def test_the_receptive_field_is_the_plans():
    assert geometry.receptive_field is recipe.receptive_field
    assert [geometry.receptive_field(d) for d in (3, 4, 5)] == [68, 140, 284]


def test_auto_is_accepted_and_wrong_values_are_refused_naming_the_key(compose):
    cfg = compose()
    assert (cfg["model"]["depth"], cfg["trainer"]["batch_size"]) == ("auto", "auto")
    assert _cfg(compose)["data"]["image_size"] == "auto"
    config.check(compose("model.depth=4", "trainer.batch_size=8"))
    for override, named in (("model.depth=deep", "model.depth='deep'"),
                            ("model.depth=0", "model.depth=0"),
                            ("trainer.batch_size=Auto", "trainer.batch_size='Auto'"),
                            ("data.image_size=2.5", "data.image_size=2.5")):
        with pytest.raises(ConfigError) as e:
            config.check(compose(override))
        assert named in str(e.value) and "auto" in str(e.value), str(e.value)
    with pytest.raises(ConfigError, match="data.image_size=auto: the built-in shapes"):
        config.check(compose("data.image_size=auto"))


def test_a_run_folder_config_with_auto_reads_back_clean():
    tree = {"model": {"depth": "auto"}, "trainer": {"batch_size": 4},
            "data": {"name": "folder", "image_size": "auto"}}
    assert config.type_problems(tree) == []
    assert config.type_problems({"model": {"depth": "four"}}) != []


def test_the_memory_check_before_the_data_counts_the_most_auto_can_choose(compose):
    unsized = resources.estimate(compose(), device="CPU")
    deepest = resources.estimate(compose("model.depth=4", "trainer.batch_size=16"),
                                 device="CPU")
    assert unsized.parameters == deepest.parameters
    assert unsized.activation_bytes == deepest.activation_bytes


def _large_objects(tmp_path):
    """Eight 160x192 pairs: a 90x90 square of class 1, a 40x40 one of class 2."""
    masks = {}
    for i in range(8):
        m = np.zeros((160, 192), np.uint8)
        m[10:100, 20 + i:110 + i] = 1
        m[110:150, 130:170] = 2
        masks[f"s{i}"] = m
    return write_folder_dataset(tmp_path / "large", masks)


def test_sized_reads_the_objects_and_prints_one_line(compose, tmp_path, capsys):
    cfg = _cfg(compose, f"data.root={_large_objects(tmp_path)}")
    sized, values = parts.sized(cfg)
    said = capsys.readouterr().out
    # objects of 90 and 40 px (median 65): depth 4 covers 1.5x; crops of 2x it, as far as
    # the 160 px side allows; ~256K pixels a step
    assert values == {"data.image_size": 160, "model.depth": 4, "trainer.batch_size": 10}
    assert sized["model"]["depth"] == 4 and cfg["model"]["depth"] == "auto"  # a copy
    assert said.count("\n") == 1 and "model.depth=auto: 4" in said and "px across" in said
    built = parts.prepare(cfg)  # a direct caller gets the same sizes
    assert built.image_size == 160 and built.batch_size == 10
    assert {k: built.computed["auto"][k] for k in values} == values


def test_a_run_records_the_numbers_and_resumes_with_the_same_command(tmp_path):
    root = _large_objects(tmp_path)
    out = tmp_path / "run"
    command = [sys.executable, "scripts/train.py", "data=folder", f"data.root={root}",
               "data.num_classes=3", "data.val_fraction=0.25", "trainer.epochs=1",
               "trainer.steps_per_epoch=2", "trainer.verbose=0", "diagnostics.probes=false",
               "diagnostics.monitor=false",
               "logging.num_panels=1", f"hydra.run.dir={out}"]
    done = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert "data.image_size=auto: 160, model.depth=auto: 4" in done.stdout
    written = json.loads((out / "config.json").read_text())
    assert (written["data"]["image_size"], written["model"]["depth"],
            written["trainer"]["batch_size"]) == (160, 4, 10)  # what predict.py reads
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["auto"]["model.depth"] == 4 == written["computed"]["auto"]["model.depth"]
    again = subprocess.run([*command[:-1], "trainer.epochs=2", command[-1]], cwd=ROOT,
                           capture_output=True, text=True, timeout=600)
    assert again.returncode == 0, again.stdout[-3000:] + again.stderr[-3000:]
    assert len(json.loads((out / "metrics.json").read_text())["history"]["loss"]) == 2


def test_the_preflight_says_what_auto_weighed_instead_of_warning(compose):
    """Objects of 200 px: at a chosen depth 3 the receptive field (68 px) is a warning; a
    depth that auto chose for the median class is said as OK, naming the deeper choice."""
    mask = np.zeros((360, 480), np.int32)
    mask[50:250, 50:250] = 1
    mask[300:330, 300:330] = 2
    cfg = _cfg(compose, "data.image_size=256", "model.depth=4", "trainer.validate_every=1")
    given = recipe.recipe_findings(cfg, [mask] * 4, depth=3, steps=50, batch=4, num_val=4)
    assert [f.level for f in given if "receptive field" in f.title] == ["warning"]
    chosen = recipe.recipe_findings(cfg, [mask] * 4, depth=3, steps=50, batch=4, num_val=4,
                                    auto=frozenset({"model.depth", "data.image_size"}))
    said = [f for f in chosen if "model.depth=auto" in f.title]
    assert [f.level for f in said] == ["ok"] and "model.depth=" in said[0].title
    assert not [f for f in chosen if f.level == "warning"]
