import numpy as np
import pytest
import tensorflow as tf
from PIL import Image

from conftest import write_folder_dataset
from seg.data import DataError, folder, folder_source, pipeline, shapes, shapes_source


def test_shapes_are_deterministic_per_seed_and_have_every_class():
    a_img, a_mask = shapes.make_shapes(8, 32, seed=3)
    b_img, b_mask = shapes.make_shapes(8, 32, seed=3)
    c_img, _ = shapes.make_shapes(8, 32, seed=4)
    assert np.array_equal(a_img, b_img) and np.array_equal(a_mask, b_mask)
    assert not np.array_equal(a_img, c_img)
    _, masks = shapes.make_shapes(64, 64)
    share = np.bincount(masks.ravel(), minlength=4) / masks.size
    assert share[0] < 0.9 and (share[1:] > 0.02).all()  # a constant prediction scores badly


def test_shapes_binary_and_grayscale():
    images, masks = shapes.make_shapes(4, 32, num_classes=2, channels=1)
    assert images.shape == (4, 32, 32, 1) and set(np.unique(masks)) <= {0, 1}
    with pytest.raises(ValueError, match="num_classes=7"):
        shapes.make_shapes(1, 32, num_classes=7)


def test_train_and_validation_scenes_differ():
    src = shapes_source(num_classes=4, image_size=32, num_train=4, num_val=4)
    train = next(iter(src.train))[0].numpy()
    val = next(iter(src.val))[0].numpy()
    assert not np.array_equal(train, val)


def test_folder_pairs_split_and_reads(folder_dataset):
    src = folder_source(root=str(folder_dataset), num_classes=3, split="contiguous",
                        val_fraction=0.34)
    assert (src.num_train, src.num_val) == (4, 2)
    image, mask = next(iter(src.val))
    assert image.shape == (20, 28, 3) and mask.dtype == tf.int32
    assert set(np.unique(mask.numpy())) <= {0, 1, 2}


def test_random_split_is_seeded(folder_dataset):
    a = folder.list_splits(folder_dataset, split_seed=1)
    b = folder.list_splits(folder_dataset, split_seed=1)
    assert (a.train, a.val) == (b.train, b.val) and not a.problems
    assert len(a.val) == 1 and not {p.stem for p in a.train} & {p.stem for p in a.val}


def test_split_lists(folder_dataset):
    (folder_dataset / "train.txt").write_text("s0\ns1\ns2\n")
    (folder_dataset / "val.txt").write_text("s5\n")
    src = folder_source(root=str(folder_dataset), num_classes=3, train_list="train.txt",
                        val_list="val.txt")
    assert (src.num_train, src.num_val) == (3, 1)
    (folder_dataset / "val.txt").write_text("s9\n")
    with pytest.raises(DataError, match="s9"):
        folder_source(root=str(folder_dataset), num_classes=3, train_list="train.txt",
                      val_list="val.txt")


def test_orphans_are_named(folder_dataset):
    (folder_dataset / "masks" / "s3.png").unlink()
    assert any("s3.png: no mask" in p for p in folder.list_splits(folder_dataset).problems)
    with pytest.raises(DataError, match=r"s3\.png: no mask"):
        folder_source(root=str(folder_dataset), num_classes=3)


def test_palette_masks_give_indices_not_colours(tmp_path):
    mask = np.array([[0, 1], [2, 1]])
    root = write_folder_dataset(tmp_path, {"a": mask}, mode="P")
    assert Image.open(root / "masks" / "a.png").mode == "P"
    got = folder.read_mask(str(root / "masks" / "a.png"), folder.label_lookup({}))
    assert got.tolist() == mask.tolist()


def test_sixteen_bit_masks_and_label_map(tmp_path):
    root = write_folder_dataset(tmp_path, {"a": np.array([[0, 300], [255, 0]])}, mode="I;16")
    table = folder.label_lookup({300: 2, 255: 1})
    assert folder.read_mask(str(root / "masks" / "a.png"), table).tolist() == [[0, 2], [1, 0]]


def test_rgb_and_jpeg_masks_are_refused_by_name(tmp_path):
    (tmp_path / "rgb.png").write_bytes(b"")
    Image.fromarray(np.zeros((4, 4, 3), np.uint8)).save(tmp_path / "rgb.png")
    with pytest.raises(DataError, match=r"rgb\.png: mask mode RGB"):
        folder.read_mask(str(tmp_path / "rgb.png"), folder.label_lookup({}))
    Image.fromarray(np.zeros((4, 4), np.uint8)).save(tmp_path / "m.jpg")
    with pytest.raises(DataError, match=r"m\.jpg: JPEG masks are refused"):
        folder.read_mask(str(tmp_path / "m.jpg"), folder.label_lookup({}))


def test_size_mismatch_and_truncated_files_are_named(tmp_path):
    root = write_folder_dataset(tmp_path, {"a": np.zeros((8, 8))}, size_of={"a": (9, 8)})
    pair = folder.Pair("a", str(root / "images" / "a.png"), str(root / "masks" / "a.png"))
    with pytest.raises(DataError, match=r"a\.png is 8x9 but .*a\.png is 8x8"):
        folder.read_pair(pair, channels=3, table=folder.label_lookup({}))
    data = (root / "images" / "a.png").read_bytes()
    (root / "images" / "a.png").write_bytes(data[: len(data) // 2])
    with pytest.raises(DataError, match=r"a\.png: cannot decode image"):
        folder.read_image(pair.image, 3)


def test_a_bad_file_inside_tf_data_names_the_file(tmp_path):
    root = write_folder_dataset(tmp_path, {"a": np.zeros((8, 8)), "b": np.zeros((8, 8))})
    (root / "masks" / "b.png").write_bytes(b"not a png")
    src = folder_source(root=str(root), num_classes=2, split="contiguous", val_fraction=0.5)
    with pytest.raises(tf.errors.OpError, match=r"b\.png: cannot decode mask"):
        list(src.val)


def _aligned_pair(h=24, w=40):
    """An image whose grey level encodes the mask label, so alignment can be checked."""
    mask = (np.arange(h)[:, None] // 6 + np.arange(w)[None, :] // 10).astype(np.int32) % 4
    image = (mask[..., None] * 60).astype(np.uint8).repeat(3, -1)
    return image, mask


@pytest.mark.parametrize("in_graph", [False, True])
def test_augment_keeps_image_and_mask_aligned(in_graph):
    image, mask = _aligned_pair()
    fn = lambda s: pipeline.augment(image, mask, s, size=16, scale_range=(1.0, 1.0),  # noqa: E731
                                    transpose=True)
    if in_graph:
        fn = tf.function(fn)
    crops = []
    for seed in range(10):
        x, y = fn(tf.constant([seed, 7], tf.int64))
        assert x.shape == (16, 16, 3) and y.shape == (16, 16)
        np.testing.assert_array_equal(np.round(x.numpy()[..., 0] * 255 / 60), y.numpy())
        crops.append(y.numpy())
    # the label stripes of _aligned_pair run 6 rows / 10 columns wide: a transposed crop
    # changes label along its rows every 6 pixels, so both orientations show up
    row_steps = [np.flatnonzero(np.diff(c[0])).tolist() for c in crops]
    assert any(np.diff(r).tolist() and set(np.diff(r)) == {6} for r in row_steps)
    assert any(np.diff(r).tolist() and set(np.diff(r)) == {10} for r in row_steps)


def test_elastic_warp_moves_image_and_mask_together():
    """The warp must move pixels (not a no-op), keep labels whole (nearest), keep the image and
    its mask aligned away from label edges, and depend on the seed alone."""
    image, mask = _aligned_pair(48, 48)
    fn = tf.function(lambda s: pipeline.augment(image, mask, s, size=48, scale_range=(1.0, 1.0),
                                                elastic_sigma=4.0))
    moved = 0.0
    for seed in range(5):
        x, y = fn(tf.constant([seed, 3], tf.int64))
        x, y = x.numpy()[..., 0] * 255 / 60, y.numpy()
        assert set(np.unique(y)) <= {0, 1, 2, 3}
        interior = np.abs(x - np.round(x)) < 1e-3  # bilinear pixels between two labels aside
        assert interior.mean() > 0.5
        np.testing.assert_array_equal(np.round(x[interior]), y[interior])
        plain, _ = pipeline.augment(image, mask, tf.constant([seed, 3], tf.int64), size=48,
                                    scale_range=(1.0, 1.0))
        moved += np.mean(np.abs(x - plain.numpy()[..., 0] * 255 / 60) > 0.5)
        again = fn(tf.constant([seed, 3], tf.int64))[1].numpy()
        np.testing.assert_array_equal(again, y)
    assert moved / 5 > 0.05


def test_scaling_never_interpolates_labels_and_pads_with_ignore():
    image, mask = _aligned_pair(10, 12)
    values = set()
    for seed in range(10):
        _, y = pipeline.augment(image, mask, tf.constant([seed, 1], tf.int64), size=32,
                                scale_range=(0.7, 1.3), ignore_index=255)
        values |= set(np.unique(y.numpy()).tolist())
    assert values <= {0, 1, 2, 3, 255} and 255 in values  # 10x12 padded up to 32x32


def test_training_stream_is_deterministic_and_batched():
    src = shapes_source(num_classes=4, image_size=32, num_train=16, num_val=4)
    make = lambda: pipeline.training(src.train, num_examples=16, batch_size=4,  # noqa: E731
                                     image_size=24, seed=5)
    a = [b[1].numpy() for b in make().take(6)]
    b = [b[1].numpy() for b in make().take(6)]
    assert all(np.array_equal(x, y) for x, y in zip(a, b))
    assert a[0].shape == (4, 24, 24)


def test_validation_keeps_whole_images_and_never_pads_across_sizes(tmp_path):
    root = write_folder_dataset(tmp_path, {"a": np.ones((10, 12)), "b": np.ones((14, 9))})
    src = folder_source(root=str(root), num_classes=2, split="contiguous", val_fraction=0.5)
    both = src.train.concatenate(src.val)
    shapes = sorted(tuple(y.shape) for _, y in pipeline.validation(both, batch_size=2))
    assert shapes == [(1, 10, 12), (1, 14, 9)]
