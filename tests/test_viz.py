"""seg.viz: the pictures of the panels, the confusion matrix and the comparison."""

import numpy as np

from seg import viz


def test_colourise_gives_each_class_its_palette_colour_and_ignored_pixels_white():
    mask = np.array([[0, 1], [2, 255]])
    rgb = viz.colourise(mask)
    assert rgb.shape == (2, 2, 3) and rgb.dtype == np.uint8
    assert (rgb[0, 0] == viz.PALETTE[0]).all() and (rgb[0, 1] == viz.PALETTE[1]).all()
    assert (rgb[1, 1] == viz.IGNORE_COLOUR).all()


def test_error_map_marks_wrong_pixels_red_and_ignored_white():
    true = np.array([[0, 1, 255]])
    pred = np.array([[0, 0, 1]])
    rgb = viz.error_map(true, pred)
    assert tuple(rgb[0, 1]) == (255, 40, 40) and tuple(rgb[0, 0]) == (30, 30, 30)
    assert (rgb[0, 2] == viz.IGNORE_COLOUR).all()


def test_ramp_runs_from_its_first_to_its_last_colour_and_clips():
    ends = viz.ramp(np.array([-1.0, 0.0, 1.0, 2.0, np.nan]))
    assert (ends[1] == ends[0]).all() and (ends[2] == ends[3]).all()
    assert (ends[4] == ends[1]).all()  # NaN reads as 0
    assert not (ends[1] == ends[2]).all()


def test_panel_has_one_row_per_image_and_grows_with_a_banner():
    rng = np.random.default_rng(0)
    images = [rng.random((20, 28, 3)) for _ in range(2)]
    truths = [rng.integers(0, 3, (20, 28)) for _ in range(2)]
    confs = [rng.random((20, 28)) for _ in range(2)]
    kw = dict(class_names=["a", "b", "c"], title="epoch 1", cell=64)
    plain = viz.panel(images, truths, truths, confs, **kw)
    warned = viz.panel(images, truths, truths, confs, banner="constant output", **kw)
    one = viz.panel(images[:1], truths[:1], truths[:1], confs[:1], **kw)
    assert plain.dtype == np.uint8 and plain.shape[2] == 3
    assert warned.shape[0] > plain.shape[0] > one.shape[0]
    assert plain.shape[1] >= 5 * 64  # five columns of 64-pixel cells
    red = (warned[..., 0] == 200) & (warned[..., 1] == 0) & (warned[..., 2] == 0)
    assert red.sum() > 0 and not ((plain[..., 0] == 200) & (plain[..., 1] == 0)).any()


def test_confusion_picture_grows_by_a_cell_per_class():
    cm = np.array([[8, 2], [1, 9]])
    two = viz.confusion_picture(cm, ["bg", "fg"], title="val", cell=40)
    three = viz.confusion_picture(np.eye(3, dtype=int) * 5, ["a", "b", "c"], title="val",
                                  cell=40)
    assert two.dtype == np.uint8 and two.shape[2] == 3
    assert three.shape[0] - two.shape[0] >= 30 and three.shape[1] - two.shape[1] >= 30


def test_the_confidence_map_is_navy_when_sure_orange_at_a_guess_and_never_yellow():
    sure, guess = viz.confidence_colours(np.array([1.0, 0.25]), num_classes=4)
    assert sure[2] > sure[0] + 40 and max(sure) < 120  # dark blue
    assert guess[0] > 200 and guess[2] < 60  # orange
    colours = viz.confidence_colours(np.linspace(0, 1, 512), num_classes=2).astype(int)
    yellow = (colours[:, 0] > 180) & (colours[:, 1] > 180) & (colours[:, 2] < 110)
    assert not yellow.any(), colours[yellow][:3]  # the 'yellow image' is the failure, not health
