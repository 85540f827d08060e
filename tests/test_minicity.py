"""MiniCity: deterministic generation, a shared layout with an appearance-only shift, the on-disk layout."""

from __future__ import annotations

import json
import os
import time

import numpy as np
import pytest

from udalib.data import minicity
from udalib.data.minicity import (
    BUILDING,
    DOMAINS,
    MINICITY_TRAINIDS,
    ROAD,
    SKY,
    VEGETATION,
    MiniCitySpec,
    generate,
    make_sample,
    sample_layout,
)

H, W = 32, 64
SMALL_SPEC = MiniCitySpec(seed=5, height=H, width=W, splits={
    "source": {"train": 4, "val": 4},
    "target": {"train": 4, "val": 4, "oracle": 4},
})


# ----------------------------------------------------------------------------------------- determinism
@pytest.mark.parametrize("domain", ["source", "target", "tokyo"])
def test_make_sample_is_a_pure_function_of_domain_split_index_and_seed(domain):
    image, label = make_sample(domain, "train", 7, seed=1, height=H, width=W)
    again_image, again_label = make_sample(domain, "train", 7, seed=1, height=H, width=W)
    assert image.dtype == np.uint8 and label.dtype == np.uint8
    assert image.shape == (H, W, 3) and label.shape == (H, W)
    assert image.tobytes() == again_image.tobytes()
    assert label.tobytes() == again_label.tobytes()
    # another index, seed or split is another scene
    for other in (make_sample(domain, "train", 8, seed=1, height=H, width=W),
                  make_sample(domain, "train", 7, seed=2, height=H, width=W),
                  make_sample(domain, "val", 7, seed=1, height=H, width=W)):
        assert not np.array_equal(other[0], image)
        assert not np.array_equal(other[1], label)


def test_generate_twice_writes_byte_identical_files(tmp_path):
    a = generate(tmp_path / "a", SMALL_SPEC, workers=1)
    b = generate(tmp_path / "b", SMALL_SPEC, workers=1)
    files_a = sorted(p.relative_to(a) for p in a.rglob("*") if p.is_file())
    files_b = sorted(p.relative_to(b) for p in b.rglob("*") if p.is_file())
    assert files_a == files_b
    for rel in files_a:
        assert (a / rel).read_bytes() == (b / rel).read_bytes(), rel
    # the files on disk are what make_sample returns
    from PIL import Image

    image, label = make_sample("target", "val", 2, SMALL_SPEC.seed, H, W)
    assert np.array_equal(np.asarray(Image.open(a / "target/images/val_00002.png")), image)
    assert np.array_equal(np.asarray(Image.open(a / "target/labels/val_00002.png")), label)


# ----------------------------------------------------------------------------------- labels and the shift
def _class_frequencies(labels) -> np.ndarray:
    counts = np.zeros(256)
    for label in labels:
        counts += np.bincount(label.ravel(), minlength=256)
    return counts / counts.sum()


@pytest.fixture(scope="module")
def streams():
    """150 source and 150 target training samples at 32x64 (about a second)."""
    return {d: [make_sample(d, "train", i, 0, H, W) for i in range(150)] for d in ("source", "target")}


def test_labels_contain_only_minicity_train_ids_and_the_big_classes_are_everywhere(streams):
    for domain, samples in streams.items():
        labels = [label for _, label in samples]
        present = set(np.unique(np.stack(labels)).tolist())
        assert present <= set(MINICITY_TRAINIDS), (domain, present - set(MINICITY_TRAINIDS))
        assert present == set(MINICITY_TRAINIDS), domain  # every class occurs somewhere in 150 scenes
        for cls in (ROAD, BUILDING, SKY):
            share = np.mean([(label == cls).any() for label in labels])
            assert share > 0.8, (domain, cls, share)


def test_the_layout_distribution_is_shared_across_domains(streams):
    ids = list(MINICITY_TRAINIDS)
    # reference: a few hundred layouts drawn directly (no rendering)
    reference = _class_frequencies(sample_layout(np.random.default_rng([99, i]), H, W).label for i in range(300))
    source = _class_frequencies(label for _, label in streams["source"])
    target = _class_frequencies(label for _, label in streams["target"])
    assert reference[ids].sum() == pytest.approx(1.0)
    # p(y) is the same: within 3 percentage points per class, both between the domains and to the reference
    assert np.abs(source - target)[ids].max() < 0.03, np.round(100 * (source - target)[ids], 2)
    assert np.abs(source - reference)[ids].max() < 0.03
    assert np.abs(target - reference)[ids].max() < 0.03
    # the source and target *worlds* are independent draws (not the same scenes re-rendered)
    assert not all(np.array_equal(s[1], t[1]) for s, t in zip(streams["source"][:5], streams["target"][:5]))


def test_the_same_class_looks_different_in_the_target(streams):
    """The shift is appearance-only by design: same classes and geometry, other colours."""

    def mean_rgb(samples, cls):
        return np.concatenate([image[label == cls] for image, label in samples]).astype(np.float64).mean(0)

    for cls in (SKY, VEGETATION):
        src, tgt = mean_rgb(streams["source"], cls), mean_rgb(streams["target"], cls)
        assert np.linalg.norm(src - tgt) > 40, (cls, src, tgt)
    sky_src, sky_tgt = mean_rgb(streams["source"], SKY), mean_rgb(streams["target"], SKY)
    assert sky_src[2] - sky_src[0] > 80  # blue sky in the source ...
    assert sky_tgt[2] - sky_tgt[0] < 40  # ... pale overcast sky in the target
    veg_src, veg_tgt = mean_rgb(streams["source"], VEGETATION), mean_rgb(streams["target"], VEGETATION)
    assert veg_src[1] - veg_tgt[1] > 40  # saturated green vs olive foliage


def test_cities_share_the_target_world_but_not_its_scenes():
    # same split and index: the cities draw other layouts than the target (their own split stream)
    _, target = make_sample("target", "val", 0, 0, H, W)
    _, rome = make_sample("rome", "val", 0, 0, H, W)
    assert not np.array_equal(target, rome)


def test_unknown_domain_is_a_value_error_listing_the_domains():
    with pytest.raises(ValueError, match="unknown MiniCity domain 'paris'") as info:
        make_sample("paris", "train", 0)
    for domain in DOMAINS:
        assert domain in str(info.value)


# ---------------------------------------------------------------------------------------- on disk
def _lines(root, name):
    return (root / "lists" / name).read_text().splitlines()


def test_the_on_disk_layout_of_the_tiny_fixture(tiny_minicity):
    root = tiny_minicity
    assert (root / "meta.json").is_file()
    meta = json.loads((root / "meta.json").read_text())
    assert meta["train_ids"] == list(MINICITY_TRAINIDS)
    assert meta["classes"][:3] == ["road", "sidewalk", "building"]
    assert meta["spec"]["height"] == 32 and meta["spec"]["width"] == 64
    assert not root.with_name(root.name + ".partial").exists()

    # target train: images only, one column, and no label files on disk
    target_train = _lines(root, "target_train.txt")
    assert len(target_train) == 24
    assert all(len(line.split()) == 1 for line in target_train)
    assert not list((root / "target" / "labels").glob("train_*"))
    assert not list((root / "rome" / "labels").glob("train_*"))
    # labelled lists: two columns
    for name, n in [("source_train.txt", 24), ("source_val.txt", 8), ("target_val.txt", 8),
                    ("target_oracle.txt", 8), ("rome_val.txt", 8)]:
        lines = _lines(root, name)
        assert len(lines) == n, name
        assert all(len(line.split()) == 2 for line in lines), name
    # every listed path exists, and the names match between image and label
    for lst in (root / "lists").glob("*.txt"):
        for line in lst.read_text().splitlines():
            parts = line.split()
            assert all((root / p).is_file() for p in parts), line
            if len(parts) == 2:
                assert parts[0].replace("/images/", "/labels/") == parts[1]
    assert _lines(root, "target_val.txt")[0] == "target/images/val_00000.png target/labels/val_00000.png"


def test_generate_reuses_a_finished_folder_without_rewriting(tmp_path):
    root = generate(tmp_path / "mc", SMALL_SPEC, workers=1)
    assert not (tmp_path / "mc.partial").exists()
    watched = [root / "meta.json", root / "source/images/train_00000.png", root / "lists/target_train.txt"]
    before = [p.stat().st_mtime_ns for p in watched]
    time.sleep(0.02)
    assert generate(root, SMALL_SPEC, workers=1) == root
    assert [p.stat().st_mtime_ns for p in watched] == before
    # overwrite=True does rewrite (and leaves no .partial behind)
    os.utime(root / "meta.json", ns=(1, 1))
    generate(root, SMALL_SPEC, workers=1, overwrite=True)
    assert (root / "meta.json").stat().st_mtime_ns != 1
    assert not (tmp_path / "mc.partial").exists()


def test_generate_with_two_workers_writes_the_same_bytes_as_one(tmp_path):
    spec = MiniCitySpec(seed=1, height=16, width=32, splits={"source": {"train": 70}, "target": {"val": 3}})
    one = generate(tmp_path / "one", spec, workers=1)
    two = generate(tmp_path / "two", spec, workers=2)
    for rel in ("source/images/train_00000.png", "source/images/train_00069.png", "source/labels/train_00065.png",
                "target/labels/val_00002.png", "lists/source_train.txt"):
        assert (one / rel).read_bytes() == (two / rel).read_bytes(), rel


def test_spec_name_counts_every_image():
    assert SMALL_SPEC.name == f"minicity-v{minicity.GENERATOR_VERSION}-s5-32x64-n20"
    assert MiniCitySpec().name.endswith("-64x128-n" + str(600 + 100 + 600 + 150 + 600 + 4 * 340))


def test_generate_refuses_a_non_minicity_folder_and_writes_nothing(tmp_path):
    from udalib.data import minicity

    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "notes.txt").write_text("keep me")
    spec = minicity.MiniCitySpec(height=16, width=32, splits={"source": {"train": 2}})
    with pytest.raises(FileExistsError, match="not a MiniCity folder"):
        minicity.generate(tmp_path / "mine", spec, workers=1)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["mine"]  # no .partial folder
    assert (tmp_path / "mine" / "notes.txt").read_text() == "keep me"


def test_poles_and_signs_are_drawn_wider_than_a_cell_of_the_stride_8_output_grid():
    """Version 1 drew poles 2 pixels wide and signs 3 across at 64 x 128, below the output grid of a stride-8 model:
    the oracle scored 0 on them. Every pole is now at least 4.8 pixels wide and every sign at least 6 across."""
    import numpy as np

    widths, signs = [], []
    for i in range(40):
        layout = minicity.sample_layout(np.random.default_rng(i), 64, 128)
        for k, cls in enumerate(layout.objects):
            mask = layout.obj == k
            if not mask.any() or cls not in (minicity.POLE, minicity.SIGN):
                continue
            per_row = mask.sum(axis=1)
            (widths if cls == minicity.POLE else signs).append(np.median(per_row[per_row > 0]))
    assert len(widths) >= 40 and len(signs) >= 30
    assert np.median(widths) >= 5 and np.mean(np.array(widths) >= 4) >= 0.8  # some are cut by the frame or a car
    assert np.median(signs) >= 6 and np.mean(np.array(signs) >= 5) >= 0.8


def test_version_1_composite_stays_reachable_by_name():
    look, _ = minicity.domain_definition("target-" + "+".join(minicity.V1_TARGET_FACTORS))
    assert minicity.V1_TARGET_FACTORS == ("photometry", "palette", "texture")
    assert look.saturation == 0.75 and look.haze == 0.15 and look.palette == minicity.TARGET_PALETTE
    assert look.texture == 0.35
    assert "photometry" not in minicity.TARGET_FACTORS and minicity.TARGET_LOOK.haze == 0.0
    assert minicity.GENERATOR_VERSION == 2


def test_each_city_differs_from_the_target_in_its_streets_not_only_its_light():
    """Label shares over 60 images: Rome has more people and fewer trees, Rio more vegetation, Tokyo more cars and
    people, Taipei more cars and a higher horizon (more road and less sky) than the target."""
    import numpy as np

    def shares(domain):
        counts = np.zeros(256)
        for i in range(60):
            counts += np.bincount(make_sample(domain, "val", i, 0, 32, 64)[1].ravel(), minlength=256)
        return counts / counts.sum()

    target, rome, rio, tokyo, taipei = (shares(d) for d in ("target", "rome", "rio", "tokyo", "taipei"))
    assert rome[minicity.PERSON] > 1.3 * target[minicity.PERSON]
    assert rome[minicity.VEGETATION] < target[minicity.VEGETATION]
    assert rio[minicity.VEGETATION] > 1.3 * target[minicity.VEGETATION]
    assert tokyo[minicity.CAR] > 1.3 * target[minicity.CAR] and tokyo[minicity.PERSON] > 1.3 * target[minicity.PERSON]
    assert taipei[minicity.CAR] > 1.1 * target[minicity.CAR] and taipei[minicity.SKY] < 0.85 * target[minicity.SKY]
    # Rome's sidewalks are paved like the road: their colours are the road's, not the target's sidewalk colours
    rome_look = minicity.CITY_LOOKS["rome"]
    walk = np.asarray(rome_look.palette[minicity.SIDEWALK]).mean(0)
    assert np.abs(walk - np.asarray(minicity.TARGET_PALETTE[minicity.ROAD]).mean(0)).max() < 0.05
    assert set(minicity.CITY_ANALOGUES) == set(minicity.CITIES)
