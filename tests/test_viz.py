"""seg.viz: the pictures of the panels, the confusion matrix and the comparison."""

import numpy as np

from seg import viz


def test_colourise_gives_each_class_its_palette_colour_and_ignored_pixels_white():
    mask = np.array([[0, 1], [2, 255]])
    rgb = viz.colourise(mask)
    assert rgb.shape == (2, 2, 3) and rgb.dtype == np.uint8
    assert (rgb[0, 0] == viz.PALETTE[0]).all() and (rgb[0, 1] == viz.PALETTE[1]).all()
    assert (rgb[1, 1] == viz.IGNORE_COLOUR).all()


def test_error_map_marks_wrong_pixels_in_the_error_colour_and_ignored_white():
    true = np.array([[0, 1, 255]])
    pred = np.array([[0, 0, 1]])
    rgb = viz.error_map(true, pred)
    assert (rgb[0, 1] == viz.ERROR_COLOUR).all() and (rgb[0, 0] == viz.CORRECT_COLOUR).all()
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


def _lab(rgb) -> np.ndarray:
    """sRGB (0-255) -> CIE L*a*b* (D65)."""
    c = np.asarray(rgb, np.float64) / 255
    c = np.where(c > 0.04045, ((c + 0.055) / 1.055) ** 2.4, c / 12.92)
    xyz = c @ np.array([[0.4124, 0.3576, 0.1805], [0.2126, 0.7152, 0.0722],
                        [0.0193, 0.1192, 0.9505]]).T / np.array([0.95047, 1.0, 1.08883])
    f = np.where(xyz > (6 / 29) ** 3, np.cbrt(xyz), xyz / (3 * (6 / 29) ** 2) + 4 / 29)
    return np.stack([116 * f[..., 1] - 16, 500 * (f[..., 0] - f[..., 1]),
                     200 * (f[..., 1] - f[..., 2])], -1)


def _deuteranopia(rgb) -> np.ndarray:
    """What a deuteranope sees (Machado, Oliveira & Fernandes 2009, severity 1), as sRGB."""
    c = np.asarray(rgb, np.float64) / 255
    linear = np.where(c > 0.04045, ((c + 0.055) / 1.055) ** 2.4, c / 12.92)
    seen = np.clip(linear @ np.array([[0.367322, 0.860646, -0.227968],
                                      [0.280085, 0.672501, 0.047413],
                                      [-0.011820, 0.042940, 0.968881]]).T, 0, 1)
    return 255 * np.where(seen > 0.0031308, 1.055 * seen ** (1 / 2.4) - 0.055, 12.92 * seen)


def _delta_e(a, b) -> float:
    """CIE76 colour difference: about 2.3 is just noticeable, 20 and more plainly different."""
    return float(np.linalg.norm(_lab(a) - _lab(b)))


def test_class_colours_stay_apart_from_the_error_colour_and_each_other_also_for_deuteranopes():
    special = {"error": viz.ERROR_COLOUR, "ignored": viz.IGNORE_COLOUR,
               "correct": viz.CORRECT_COLOUR}
    for num_classes in range(2, 13):
        colours = viz.colourise(np.arange(num_classes)[None])[0]
        for k, colour in enumerate(colours):
            for name, other in special.items():
                if name == "correct" and k == 0:
                    continue  # both dark, in different columns: never side by side
                assert _delta_e(colour, other) > 20, (num_classes, k, name)
                assert _delta_e(_deuteranopia(colour), _deuteranopia(other)) > 20, \
                    (num_classes, k, name, "deuteranopia")
        if num_classes <= 8:  # Okabe-Ito: apart for normal sight and deuteranopes alike
            for i in range(num_classes):
                for j in range(i):
                    assert _delta_e(colours[i], colours[j]) > 20, (num_classes, i, j)
                    assert _delta_e(_deuteranopia(colours[i]), _deuteranopia(colours[j])) > 15, \
                        (num_classes, i, j, "deuteranopia")
    assert min(_delta_e(viz.ERROR_COLOUR, c) for c in viz.PALETTE[:12]) > 50


def _downscaled_text_height(picture: np.ndarray, *, to: int = 450) -> float:
    """The tallest run of rows holding black text in picture's top band (its title), in
    pixels once the picture is shrunk to `to` pixels wide (TensorBoard's card)."""
    ink = (picture[: picture.shape[0] // 8] < 60).all(-1).any(1)
    runs, n = [], 0
    for inked in ink:
        n = n + 1 if inked else 0
        runs.append(n)
    return max(runs) * to / picture.shape[1]


def test_panel_text_stays_readable_when_tensorboard_shrinks_it_to_450_px():
    rng = np.random.default_rng(0)
    for cell in (64, 160, 256):
        images = [rng.random((32, 32, 3))]
        truths = [rng.integers(0, 2, (32, 32))]
        picture = viz.panel(images, truths, truths, [rng.random((32, 32))],
                            class_names=["background", "foreground"], title="epoch 1 Hg",
                            cell=cell)
        shown = _downscaled_text_height(picture)
        assert shown >= 10, (cell, shown)  # letters (cap to descender) >= 10 px at 450 px wide


def test_comparison_draws_every_class_name_and_keys_long_labels_below():
    rng = np.random.default_rng(0)
    names = [f"a long class name {k}" for k in range(11)]
    images = [rng.random((16, 16, 3))]
    truths = [rng.integers(0, 11, (16, 16))]
    picture = viz.comparison(images, truths, {"x" * 80: truths, "y": truths},
                             class_names=names, cell=64)
    wide = viz.comparison(images, truths, {"y": truths}, class_names=names, cell=64,
                          width=1000)
    assert picture.shape[1] == 4 * 68 + 4 and wide.shape[1] == 1000
    for k in range(11):  # every class's swatch is drawn
        colour = viz.PALETTE[k]
        assert ((picture == colour).all(-1)).sum() > 0, k
