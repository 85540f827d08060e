"""SegmentationList, normalisation, flips, the reproducible StreamSampler, and the errors on bad inputs."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image, ImageFilter

from udalib.data import (
    IGNORE_INDEX,
    REAL_DATASETS,
    DatasetError,
    SegmentationList,
    denormalize,
    normalize,
    open_dataset,
)
from udalib.data.dataset import CAFFE_BGR_MEAN, StreamSampler
from udalib.data.labels import LabelError
from udalib.data.minicity import MINICITY_TRAINIDS


# ------------------------------------------------------------------------------------------ items
def test_labelled_items_are_float_images_int64_train_ids_and_their_index(tiny_minicity):
    ds = SegmentationList(tiny_minicity, "lists/source_val.txt")
    assert len(ds) == 8 and ds.labelled
    image, label, index, flipped = ds[3]
    assert index == 3 and flipped is False  # no augmentation without a stream seed
    assert image.dtype == torch.float32 and image.shape == (3, 32, 64)
    assert label.dtype == torch.int64 and label.shape == (32, 64)
    stored = np.asarray(Image.open(tiny_minicity / "source/labels/val_00003.png"))
    assert torch.equal(label, torch.from_numpy(stored.astype(np.int64)))
    rgb = np.asarray(Image.open(tiny_minicity / "source/images/val_00003.png").convert("RGB"))
    assert torch.allclose(image, normalize(rgb))
    assert set(label.unique().tolist()) <= set(MINICITY_TRAINIDS)
    assert "labelled" in repr(ds) and "8 images" in repr(ds)


def test_unlabelled_lists_give_all_ignore_labels(tiny_minicity):
    ds = SegmentationList(tiny_minicity, "lists/target_train.txt")
    assert not ds.labelled
    assert "unlabelled" in repr(ds)
    image, label, index, flipped = ds[5]
    assert index == 5 and image.shape == (3, 32, 64)
    assert label.dtype == torch.int64
    assert torch.equal(label, torch.full((32, 64), IGNORE_INDEX, dtype=torch.int64))


def test_cache_returns_the_same_arrays(tiny_minicity):
    ds = SegmentationList(tiny_minicity, "lists/source_val.txt", cache=True)
    first = ds.load(2)
    assert ds.load(2)[0] is first[0]
    assert torch.equal(ds[2][0], SegmentationList(tiny_minicity, "lists/source_val.txt")[2][0])


# --------------------------------------------------------------------------------------- normalisation
@pytest.mark.parametrize("mode", ["imagenet", "caffe"])
def test_normalize_and_denormalize_round_trip(mode):
    image = np.random.default_rng(0).integers(0, 256, (5, 7, 3), dtype=np.uint8)
    back = denormalize(normalize(image, mode), mode)
    assert back.dtype == np.uint8 and back.shape == image.shape
    assert np.abs(back.astype(int) - image.astype(int)).max() <= 1


def test_caffe_mode_is_bgr_minus_the_seeds_img_mean():
    pixel = np.array([[[10, 20, 30]]], dtype=np.uint8)  # R, G, B
    x = normalize(pixel, "caffe")
    assert x.shape == (3, 1, 1)
    # BGR order, 0..255, minus IMG_MEAN = (104.00698793, 116.66876762, 122.67891434)
    expected = [30 - 104.00698793, 20 - 116.66876762, 10 - 122.67891434]
    assert x.flatten().tolist() == pytest.approx(expected, abs=1e-4)
    assert CAFFE_BGR_MEAN == (104.00698793, 116.66876762, 122.67891434)


def test_imagenet_mode_is_rgb_in_unit_range_standardised():
    pixel = np.array([[[255, 0, 128]]], dtype=np.uint8)
    x = normalize(pixel, "imagenet")
    expected = [(1 - 0.485) / 0.229, (0 - 0.456) / 0.224, (128 / 255 - 0.406) / 0.225]
    assert x.flatten().tolist() == pytest.approx(expected, abs=1e-5)


def test_unknown_normalization_is_an_error(tiny_minicity):
    with pytest.raises(ValueError, match="unknown normalization 'bgr'.*imagenet.*caffe"):
        normalize(np.zeros((1, 1, 3), np.uint8), "bgr")
    with pytest.raises(ValueError, match="unknown normalization 'bgr'"):
        denormalize(torch.zeros(3, 1, 1), "bgr")
    with pytest.raises(ValueError, match="unknown normalization 'bgr'"):
        SegmentationList(tiny_minicity, "lists/source_val.txt", normalization="bgr")


# ------------------------------------------------------------------------------------------ flips
def test_hflip_is_driven_by_the_item_seed_and_flips_image_and_label_together(tiny_minicity):
    plain = SegmentationList(tiny_minicity, "lists/source_train.txt")
    flipping = SegmentationList(tiny_minicity, "lists/source_train.txt", hflip=True)
    flips = 0
    seeds = [(0, epoch, 4) for epoch in range(100)] + list(range(100))
    for seed in seeds:
        index = 4
        base_image, base_label, *_ = plain[index]
        image, label, got_index, flipped = flipping[(index, seed)]
        again_image, again_label, *_ = flipping[(index, seed)]
        assert got_index == index
        assert torch.equal(image, again_image) and torch.equal(label, again_label)  # same seed, same result
        image_flipped = torch.equal(image, base_image.flip(-1))
        label_flipped = torch.equal(label, base_label.flip(-1))
        if image_flipped:
            assert label_flipped
        else:
            assert torch.equal(image, base_image) and torch.equal(label, base_label)
            assert not label_flipped
        assert flipped == image_flipped  # the flag a self-training method reads
        flips += image_flipped
    assert 70 <= flips <= 130, flips  # about half of 200 seeds
    # the base image is not symmetric, so "flipped" and "not flipped" are distinguishable
    assert not torch.equal(plain[4][0], plain[4][0].flip(-1))
    # without a seed (evaluation access) there is no augmentation, even with hflip=True
    assert torch.equal(flipping[4][0], plain[4][0])


# --------------------------------------------------------------------------------------- StreamSampler
def _take(sampler, k):
    it = iter(sampler)
    return [next(it) for _ in range(k)]


def test_a_stream_restarted_at_batch_k_continues_the_uninterrupted_stream():
    full = _take(StreamSampler(10, 3, seed=7), 12)
    for k in (1, 2, 3, 5, 9):
        assert _take(StreamSampler(10, 3, seed=7, start=k), 12 - k) == full[k:]
    assert _take(StreamSampler(10, 3, seed=8), 3) != full[:3]  # another seed, another stream


def test_each_epoch_is_a_permutation_and_the_augmentation_seed_names_the_epoch():
    n, bs = 11, 3
    sampler = StreamSampler(n, bs, seed=2)
    assert sampler.per_epoch == 3
    batches = _take(sampler, 3 * 4)
    epochs = []
    for e in range(4):
        items = [item for batch in batches[3 * e:3 * e + 3] for item in batch]
        idx = [i for i, _ in items]
        assert len(idx) == 9 and len(set(idx)) == 9  # no repeats within an epoch
        assert set(idx) <= set(range(n))
        assert all(seed == (2, e, i) for i, seed in items)
        epochs.append(idx)
    assert len({tuple(e) for e in epochs}) == 4  # a fresh permutation every epoch
    assert all(len(batch) == bs for batch in batches)


def test_two_ranks_draw_disjoint_slices_of_every_epoch():
    n, bs = 20, 2
    r0 = _take(StreamSampler(n, bs, seed=1, rank=0, world=2), 10)
    r1 = _take(StreamSampler(n, bs, seed=1, rank=1, world=2), 10)
    per_epoch = n // (bs * 2)
    assert per_epoch == 5
    for e in range(2):
        a = [i for batch in r0[e * 5:(e + 1) * 5] for i, _ in batch]
        b = [i for batch in r1[e * 5:(e + 1) * 5] for i, _ in batch]
        assert len(set(a)) == len(a) == 10 and len(set(b)) == len(b) == 10
        assert not set(a) & set(b)
        assert set(a) | set(b) == set(range(n))  # together they cover the epoch
    # a single process with the same seed sees the same permutation, interleaved batch by batch
    single = [i for batch in _take(StreamSampler(n, bs, seed=1), 10) for i, _ in batch]
    ranks = [i for b0, b1 in zip(r0[:5], r1[:5]) for i, _ in b0 + b1]
    assert ranks == single


def test_a_dataset_smaller_than_one_batch_is_refused():
    with pytest.raises(ValueError, match="5 images is smaller than one batch \\(3 x 2 ranks\\)"):
        StreamSampler(5, 3, world=2)


# ------------------------------------------------------------------------------------------ bad inputs
def _one_item(tmp_path, image: np.ndarray, label: np.ndarray | None, mode=None):
    """A one-image dataset folder in the prepared layout."""
    (tmp_path / "images").mkdir(exist_ok=True)
    Image.fromarray(image).save(tmp_path / "images/a.png")
    line = "images/a.png"
    if label is not None:
        (tmp_path / "labels").mkdir(exist_ok=True)
        Image.fromarray(label, mode=mode).save(tmp_path / "labels/a.png")
        line += " labels/a.png"
    (tmp_path / "lists").mkdir(exist_ok=True)
    (tmp_path / "lists/x_val.txt").write_text(line + "\n")
    return SegmentationList(tmp_path, "lists/x_val.txt")


def _fixture_pair(root):
    image = np.asarray(Image.open(root / "source/images/val_00000.png").convert("RGB"))
    label = np.asarray(Image.open(root / "source/labels/val_00000.png")).copy()
    return image, label


def test_a_missing_dataset_folder_says_how_to_create_it(tmp_path):
    with pytest.raises(DatasetError) as info:
        SegmentationList(tmp_path / "nowhere", "lists/source_train.txt")
    msg = str(info.value)
    assert "nowhere" in msg and "does not exist" in msg
    assert "python -m udalib minicity" in msg and "data_scripts" in msg
    assert isinstance(info.value, FileNotFoundError)  # the CLI reports it as a one-line error


def test_a_missing_list_names_the_lists_present(tiny_minicity):
    with pytest.raises(DatasetError) as info:
        SegmentationList(tiny_minicity, "lists/target_test.txt")
    msg = str(info.value)
    assert "target_test.txt not found" in msg
    for present in ("source_train.txt", "target_oracle.txt", "target_val.txt", "rome_val.txt"):
        assert present in msg


def test_malformed_and_empty_lists_are_dataset_errors(tmp_path):
    (tmp_path / "lists").mkdir()
    (tmp_path / "lists/a.txt").write_text("x.png y.png\nx.png y.png z.png\n")
    with pytest.raises(DatasetError, match="line 2: expected 'image \\[label\\]'"):
        SegmentationList(tmp_path, "lists/a.txt")
    (tmp_path / "lists/b.txt").write_text("\n\n")
    with pytest.raises(DatasetError, match="is empty"):
        SegmentationList(tmp_path, "lists/b.txt")


def test_a_missing_image_file_names_it(tmp_path):
    (tmp_path / "lists").mkdir()
    (tmp_path / "lists/a.txt").write_text("images/gone.png\n")
    ds = SegmentationList(tmp_path, "lists/a.txt")
    with pytest.raises(DatasetError, match="gone.png listed in .* is missing"):
        ds[0]


def test_label_ids_outside_the_train_ids_are_named(tiny_minicity, tmp_path):
    image, label = _fixture_pair(tiny_minicity)
    label[0, :5] = 33  # a raw Cityscapes id (bicycle), never a train id
    label[1, 0] = 19
    ds = _one_item(tmp_path, image, label)
    with pytest.raises(LabelError) as info:
        ds[0]
    msg = str(info.value)
    assert "[19, 33]" in msg and "19 train ids" in msg and "data_scripts" in msg
    assert isinstance(info.value, ValueError)
    # 255 (ignore) is always allowed, and num_classes sets the bound
    label[0, :5], label[1, 0] = 255, 0
    assert SegmentationList(_one_item(tmp_path, image, label).root, "lists/x_val.txt")[0][1][0, 0] == 255
    with pytest.raises(LabelError, match=r"label ids \[13\] are outside the 13 train ids"):
        SegmentationList(tmp_path, "lists/x_val.txt", num_classes=13)[0]


def test_a_label_of_another_size_than_its_image(tiny_minicity, tmp_path):
    image, label = _fixture_pair(tiny_minicity)
    ds = _one_item(tmp_path, image, label[:16, :48].copy())
    with pytest.raises(ValueError, match="label is 48x16 but its image is 64x32 \\(W x H\\); re-run"):
        ds[0]


def test_a_colour_label_png_is_refused(tiny_minicity, tmp_path):
    image, label = _fixture_pair(tiny_minicity)
    colour = np.stack([label] * 3, axis=-1)  # same ids in all three channels: still a colour PNG
    ds = _one_item(tmp_path, image, colour)
    with pytest.raises(LabelError) as info:
        ds[0]
    msg = str(info.value)
    assert "single-channel train-id PNG" in msg and "(32, 64, 3)" in msg and "data_scripts" in msg


# ---------------------------------------------------------------------------------------- open_dataset
def test_open_dataset_rejects_unknown_names_domains_and_splits(tiny_minicity):
    with pytest.raises(ValueError, match="unknown dataset 'kitti'") as info:
        open_dataset("kitti", "val")
    for name in REAL_DATASETS:
        assert name in str(info.value)
    assert "minicity:<domain>" in str(info.value)

    with pytest.raises(ValueError, match="unknown MiniCity domain 'paris'") as info:
        open_dataset("minicity:paris", "val")
    assert "minicity:source" in str(info.value) and "minicity:taipei" in str(info.value)

    # a finished folder is reused as is, so this never generates the full-size MiniCity
    with pytest.raises(ValueError, match="MiniCity target has splits \\['oracle', 'train', 'val'\\], not 'test'"):
        open_dataset("minicity:target", "test", root=tiny_minicity)


def test_open_dataset_on_a_finished_minicity_folder(tiny_minicity):
    train = open_dataset("minicity:target", "train", root=tiny_minicity, train=True)
    assert len(train) == 24 and train.hflip and not train.labelled and train.name == "minicity:target/train"
    val = open_dataset("minicity:rome", "val", root=tiny_minicity, normalization="caffe")
    assert val.labelled and not val.hflip and val.normalization == "caffe"


@pytest.mark.parametrize("name", ["gta5", "cityscapes", "nthu:rome"])
def test_real_datasets_need_a_root(name):
    with pytest.raises(DatasetError, match="needs root=<folder prepared by data_scripts/>"):
        open_dataset(name, "val")


def test_a_real_dataset_root_without_the_prepared_folder(tmp_path):
    with pytest.raises(DatasetError, match="cityscapes does not exist.*data_scripts"):
        open_dataset("cityscapes", "val", root=tmp_path)


def _one_image_dataset(root):
    rng = np.random.default_rng(5)
    (root / "images").mkdir(parents=True)
    (root / "labels").mkdir()
    (root / "lists").mkdir()
    Image.fromarray(rng.integers(0, 256, (12, 20, 3), dtype=np.uint8)).save(root / "images" / "a.png")
    Image.fromarray(rng.integers(0, 19, (12, 20), dtype=np.uint8)).save(root / "labels" / "a.png")
    (root / "lists" / "gta5_train.txt").write_text("images/a.png labels/a.png\n")
    return root


def test_blur_is_the_maxsquare_family_gaussian_blur_drawn_from_the_item_seed(tmp_path):
    """MaxSquare ``datasets/cityscapes_Dataset.py`` ``_train_sync_transform``: ``if random.random() < 0.5:
    img.filter(ImageFilter.GaussianBlur(radius=random.random()))``, here from the item's seed after the flip's draw."""
    root = _one_image_dataset(tmp_path / "gta5")
    image = np.asarray(Image.open(root / "images" / "a.png"))
    blurred = SegmentationList(root, "lists/gta5_train.txt", blur=True, hflip=True)
    plain = SegmentationList(root, "lists/gta5_train.txt", hflip=True)
    applied = changed = 0
    for k in range(300):
        seed = (0, 1, k)
        x, y, _, flipped = blurred[(0, seed)]
        x0, y0, _, flipped0 = plain[(0, seed)]
        assert flipped == flipped0 and torch.equal(y, y0)  # the flip's draw and the labels are as without blur
        rng = np.random.default_rng(seed)
        expected = image[:, ::-1] if rng.random() < 0.5 else image
        if rng.random() < 0.5:
            applied += 1
            pil = Image.fromarray(np.ascontiguousarray(expected)).filter(ImageFilter.GaussianBlur(rng.random()))
            expected = np.asarray(pil)
        torch.testing.assert_close(x, normalize(expected), rtol=0, atol=0)
        changed += not torch.equal(x, x0)
        assert torch.equal(blurred[(0, seed)][0], x)  # the same seed, the same blur
    assert 0.4 < applied / 300 < 0.6 and changed > 0.3 * 300  # p = 0.5; most radii change the image
    assert torch.equal(blurred[0][0], plain[0][0])  # no seed (evaluation): never blurred
    without_flip = SegmentationList(root, "lists/gta5_train.txt", blur=True)
    assert sum(not torch.equal(without_flip[(0, (0, 1, k))][0], normalize(image)) for k in range(300)) == changed
    with pytest.raises(ValueError, match="blur is a training augmentation"):
        open_dataset("gta5", "train", root=tmp_path, blur=True)


def test_blur_enters_the_run_key_only_when_on():
    from udalib.experiment import Experiment

    assert Experiment(blur=False).key() == Experiment().key()
    assert Experiment(blur=True).key() != Experiment().key()


def test_a_training_crop_cuts_image_and_label_alike_from_the_items_seed_and_leaves_other_draws_as_they_were(
        tiny_minicity):
    from udalib.data import open_dataset

    plain = open_dataset("minicity:source", "train", root=tiny_minicity, train=True)
    cropped = open_dataset("minicity:source", "train", root=tiny_minicity, train=True, crop=(16, 24))
    image, label, _, flipped = plain[(3, 11)]
    small, small_label, _, small_flipped = cropped[(3, 11)]
    assert small.shape == (3, 16, 24) and small_label.shape == (16, 24) and small_flipped == flipped
    rng = np.random.default_rng(11)
    rng.random()  # the flip's draw
    top, left = int(rng.integers(32 - 16 + 1)), int(rng.integers(64 - 24 + 1))
    assert torch.equal(small, image[:, top:top + 16, left:left + 24])
    assert torch.equal(small_label, label[top:top + 16, left:left + 24])
    assert torch.equal(cropped[3][0], plain[3][0])  # no seed (evaluation-style access): the whole image
    with pytest.raises(ValueError, match="crop is a training augmentation"):
        open_dataset("minicity:source", "val", root=tiny_minicity, crop=(16, 24))
    with pytest.raises(ValueError, match="larger than image"):
        open_dataset("minicity:source", "train", root=tiny_minicity, train=True, crop=(40, 24))[(0, 1)]


def test_the_experiments_crop_keeps_every_run_name_is_checked_and_reaches_the_training_sets_only(minicity_home):
    from udalib.experiment import Experiment, open_data
    from udalib.experiment_checks import check_experiment

    plain = Experiment(method="dacs", target="minicity:target")
    cropped = Experiment(method="dacs", target="minicity:target", crop=[16, 32])
    assert Experiment(method="dacs", target="minicity:target", crop=None).name == plain.name != cropped.name
    assert cropped.crop == (16, 32)
    assert open_data("minicity:target", default_split="train", train=True, exp=cropped).crop == (16, 32)
    assert open_data("minicity:target", default_split="val", train=False, exp=cropped).crop is None
    with pytest.raises(ValueError, match="crop"):
        check_experiment(Experiment(method="dacs", target="minicity:target", crop=(0, 32)), device=False)
