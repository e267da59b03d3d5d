"""What compare.py and evaluate.py draw and log: one legend per class set in compare.png, and
no TensorBoard event file without a summary in it (an empty run or group in TensorBoard)."""

import numpy as np
import pytest

# one worker: two tiny trainings built once for the module
pytestmark = [pytest.mark.slow, pytest.mark.xdist_group("compare_pictures")]

QUICK = ("trainer.epochs=1", "data.num_train=16", "data.num_val=4", "diagnostics.probes=false",
         "diagnostics.preflight=off")


@pytest.fixture(scope="module")
def two_class_sets(tmp_path_factory):
    """A 2-class and a 4-class run of shapes (one epoch each) in one folder."""
    from seg_hydra import compose_dict

    from conftest import TINY
    from seg.train import run

    root = tmp_path_factory.mktemp("runs")
    for classes in (2, 4):
        run(compose_dict([*TINY, *QUICK, f"data.num_classes={classes}"]),
            root / f"classes={classes}")
    return root


def _event_files(root):
    import tensorflow as tf

    out = {}
    for path in sorted(root.rglob("events.out.tfevents.*")):
        tags = set()
        for event in tf.compat.v1.train.summary_iterator(str(path)):
            tags |= {v.tag for v in event.summary.value}
        out[path] = tags
    return out


def test_compare_draws_one_legend_per_class_set(two_class_sets, capsys):
    from PIL import Image
    from test_bad_inputs import run_script

    from seg import viz

    code, text = run_script("compare.py", [str(two_class_sets), "--images", "2"], capsys)
    assert code == 0, text[-3000:]
    picture = np.asarray(Image.open(two_class_sets / "compare.png").convert("RGB"))
    # two blocks, a grey rule between them: the 2-class block's legend (bg + 1 colour) and
    # the 4-class block's own, each class colour of the 4-class run only below the rule
    rule = np.where((picture == 160).all(-1).all(1))[0]
    assert len(rule) >= 12, "no rule between the class sets"
    top, bottom = picture[: rule[0]], picture[rule[-1] + 1:]
    for k, colour in enumerate(viz.PALETTE[:4]):
        in_top = (top == colour).all(-1).sum()
        in_bottom = (bottom == colour).all(-1).sum()
        assert in_bottom > 0, k
        assert (in_top > 0) == (k < 2), (k, in_top)  # no 3rd or 4th class in the 2-class block
    tags = {t for tags in _event_files(two_class_sets / "compare").values() for t in tags}
    assert tags == {"runs_compared/predictions", "runs_compared/table"}


def test_no_event_file_without_a_summary_after_compare_and_evaluate(two_class_sets, capsys):
    from test_bad_inputs import run_script

    for run in ("classes=2", "classes=4"):
        code, text = run_script("evaluate.py", [str(two_class_sets / run), "--tile", "0",
                                                "--worst", "1", "--no-progress"], capsys)
        assert code == 0, text[-3000:]
    code, text = run_script("compare.py", [str(two_class_sets), "--images", "1"], capsys)
    assert code == 0, text[-3000:]
    files = _event_files(two_class_sets)
    empty = [str(p.relative_to(two_class_sets)) for p, tags in files.items() if not tags]
    assert not empty, empty
    evaluation = {t for p, tags in files.items() if "evaluation" in p.parts for t in tags}
    assert evaluation == {"val_evaluation/confusion_matrix", "val_evaluation/worst_01"}
    # TensorBoard groups tags by their prefix, in name order: these come after "predictions"
    assert all(t.split("/")[0] > "predictions" for t in evaluation)
