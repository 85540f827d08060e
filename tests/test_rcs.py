"""Rare-class sampling (DAFormer): the class probabilities by hand, the drawn classes against them, the images drawn
for a class, the stream's exact resume, and the Experiment field that switches it on."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from udalib.data.dataset import stream
from udalib.data.rcs import RCS_MIN_PIXELS, RCS_REFERENCE_PIXELS, RareClassSampling, class_pixels, rcs_class_probs
from udalib.experiment import Experiment


class Labels:
    """A labelled list in the shape RareClassSampling reads (``load``, items ``(index, seed)``), from label arrays."""

    def __init__(self, labels, name="hand-made"):
        self.labels, self.name, self.root, self.num_classes = labels, name, "/", 5
        self.size = self.class_set = None

    def __len__(self):
        return len(self.labels)

    def load(self, i):
        return None, self.labels[i]

    def __getitem__(self, item):
        i, seed = item if isinstance(item, tuple) else (item, None)
        return torch.zeros(3, *self.labels[i].shape), torch.from_numpy(self.labels[i].astype(np.int64)), i, seed


def hand_made(name="hand-made"):
    """8x8 labels: class 0 fills images 0-5, class 1 images 6-8, class 2 images 9-10, class 3 image 11 (5 pixels over
    a class-0 background, at or below min_pixels in image 12), class 4 absent."""
    labels = [np.full((8, 8), c, np.uint8) for c in [0] * 6 + [1] * 3 + [2] * 2]
    for n in (6, 5):
        y = np.zeros((8, 8), np.uint8)
        y.flat[:n] = 3
        labels.append(y)
    return Labels(labels, name)


def test_class_probabilities_are_the_softmax_of_one_minus_the_frequency_over_t():
    pixels = np.array([600, 300, 100, 0])
    f = pixels[:3] / 1000
    for t in (0.01, 0.5, 2.0):
        e = np.exp((1 - f) / t)
        np.testing.assert_allclose(rcs_class_probs(pixels, t), [*(e / e.sum()), 0.0], rtol=1e-12)
    # T = 0.01: the rarest class dominates (exp(50) / (1 + exp(30) + exp(50)))
    assert rcs_class_probs(pixels, 0.01)[2] == pytest.approx(1 / (1 + math.exp(-20) + math.exp(-50)))
    assert rcs_class_probs(pixels, 1e6)[:3] == pytest.approx([1 / 3] * 3)  # a large T: uniform over present classes
    with pytest.raises(ValueError, match="above 0"):
        rcs_class_probs(pixels, 0.0)


def test_the_class_statistics_count_the_pixels_of_every_label():
    pixels = class_pixels(hand_made("counts"))
    assert pixels.shape == (13, 5) and pixels[0].tolist() == [64, 0, 0, 0, 0] and pixels[11].tolist() == [58, 0, 0, 6,
                                                                                                           0]
    assert pixels.sum() == 13 * 64


def test_drawn_classes_follow_p_within_sampling_error_and_each_image_holds_more_than_min_pixels_of_its_class():
    data = hand_made("draws")
    rcs = RareClassSampling(data, temperature=0.5, min_pixels=5)
    pixels = class_pixels(data)
    assert [list(i) for i in rcs.images_with[:4]] == [[0, 1, 2, 3, 4, 5, 11, 12], [6, 7, 8], [9, 10],
                                                     [11]]  # image 12: 5 pixels of class 3
    n = 5000
    draws = [rcs.draw((0, 0, k)) for k in range(n)]
    for c, index, _ in draws:
        assert pixels[index, c] > 5
    counts = np.bincount([c for c, _, _ in draws], minlength=5)
    p = rcs.probs
    assert p[4] == 0 and counts[4] == 0  # an absent class is never drawn
    chi2 = sum((counts[c] - n * p[c]) ** 2 / (n * p[c]) for c in range(4))
    assert chi2 < 16.27, (counts, n * p)  # chi-square with 3 degrees of freedom: p = 0.001
    assert np.all(np.abs(counts[:4] - n * p[:4]) < 4 * np.sqrt(n * p[:4] * (1 - p[:4])))
    uniform = np.full(4, n / 4)
    assert sum((counts[:4] - uniform) ** 2 / uniform) > 100  # far from uniform: the temperature matters
    # the images of a class are drawn alike
    of_class_1 = np.bincount([i for c, i, _ in draws if c == 1], minlength=13)
    assert of_class_1[6:9].min() > 0.2 * of_class_1.sum() and of_class_1.sum() == of_class_1[6:9].sum()


def test_the_minimum_pixels_scale_with_the_label_area_and_a_class_without_images_is_an_error():
    data = hand_made("scaled")
    assert RareClassSampling(data, 0.01).min_pixels == round(RCS_MIN_PIXELS * 64 / RCS_REFERENCE_PIXELS) == 0
    with pytest.raises(ValueError, match="more than 6 pixels of class 3"):
        RareClassSampling(data, 0.01, min_pixels=6)


def test_the_stream_of_a_resumed_run_draws_the_same_images_and_a_plain_index_reads_its_image():
    rcs = RareClassSampling(hand_made("stream"), 0.5, min_pixels=5)
    full = stream(rcs, 4, seed=3)
    batches = [next(full) for _ in range(9)]
    resumed = stream(rcs, 4, seed=3, start=5)
    for b in batches[5:]:
        again = next(resumed)
        assert torch.equal(again[2], b[2]) and torch.equal(again[1], b[1]) and torch.equal(again[3], b[3])
    assert len({tuple(b[2].tolist()) for b in batches}) > 1
    assert rcs[7][2] == 7 and len(rcs) == 13


def test_the_experiment_field_keeps_every_run_name_and_is_checked():
    from udalib.validation import check_experiment

    plain = Experiment(method="dacs", target="minicity:target")
    assert Experiment(method="dacs", target="minicity:target", rcs_temperature=None).name == plain.name
    assert Experiment(method="dacs", target="minicity:target", rcs_temperature=0.01).name != plain.name
    for bad in (0.0, -0.01):
        with pytest.raises(ValueError, match="rcs_temperature"):
            check_experiment(Experiment(method="dacs", target="minicity:target", rcs_temperature=bad), device=False)


def test_a_run_with_rcs_draws_its_source_images_by_rare_class_sampling(minicity_home, monkeypatch):
    import udalib.train.loop as loop
    from udalib.experiment import run

    seen = []
    original = loop.stream

    def spying_stream(dataset, *args, **kwargs):
        seen.append(dataset)
        return original(dataset, *args, **kwargs)

    monkeypatch.setattr(loop, "stream", spying_stream)
    exp = Experiment(method="source_only", steps=1, batch_size=2, rcs_temperature=0.01,
                     evaluate_on=("minicity:source/val",), model_args={"width": 8})
    run(exp, minicity_home / "rcs_run", progress=False, checkpoint_seconds=None)
    assert isinstance(seen[0], RareClassSampling) and seen[0].temperature == 0.01
    assert seen[0].min_pixels == round(RCS_MIN_PIXELS * 32 * 64 / RCS_REFERENCE_PIXELS)
