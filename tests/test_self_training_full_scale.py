"""CBST / MLSL at full scale, as ``engrjavediqbal/MLSL``: pseudo-labels predicted at 2048 wide with the SI patches
on that image, crops of 504 at scale 0.7-1.3 centred on rare classes, the source portion of each round, a fixed lr
per round, the fc 512 weak-label head, and pseudo-labels memory-mapped on disk (written atomically, resumed).

Geometry at the true sizes where it costs nothing (boxes, crops, counts); the rounds themselves on small images with
the same ratios (a 64x128 image predicted at 256 wide with 64x64 patches is 512x1024 at 2048 with 512x512)."""

from __future__ import annotations

import copy
import io
import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

import udalib.methods.self_training as st
from udalib.data import SegmentationList
from udalib.data.batch import SourceBatch, TargetBatch
from udalib.losses.self_training import (
    class_sizes,
    crop_box,
    fuse_patch_predictions,
    mine_classes,
    scale_crop_side,
    source_subset,
    weak_label_loss,
    weak_labels,
)
from udalib.methods import build_method
from udalib.models import build_model
from udalib.recipes import load_recipe
from udalib.train import FitOptions, fit
from udalib.train.loop import set_lr


def _recipe_method(name="gta5_mlsl", **overrides):
    torch.manual_seed(0)
    exp = load_recipe(name)
    return build_method(exp.method, build_model("minideeplab", 19, width=8), exp.preset,
                        **{**exp.method_args, **overrides})


# ------------------------------------------------------------------------- inference scale and SI patches
def test_pseudo_labels_are_predicted_at_2048_wide_with_512_patches_on_that_image():
    m = _recipe_method()
    assert m.inference_size(512, 1024) == (1024, 2048)  # --test-scales 2048 on the 1024x512 loaded image
    assert m.inference_size(1024, 2048) == (1024, 2048)
    boxes = m.patch_boxes(1024, 2048, 0, 7)
    assert len(boxes) == 25
    # randint(0, H - 512) and randint(0, W - 512): corners of 512x512 patches of the 2048x1024 image, not strips
    assert all(0 <= r <= 1024 - 512 - 1 and 0 <= c <= 2048 - 512 - 1 for r, c in boxes)
    assert boxes[:3] == [(175, 512), (196, 587), (25, 823)]  # seeded by (round, image): the same in every pass
    assert m.patch_boxes(1024, 2048, 0, 7) == boxes and m.patch_boxes(1024, 2048, 1, 7) != boxes
    assert max(c for _, c in boxes) > 1024  # columns beyond the loaded width: the boxes live on the 2048 image


class _Recorder(torch.nn.Module):
    """A fixed per-pixel classifier (1x1 conv) that records the input sizes it sees."""

    num_classes, feat_channels = 19, 3

    def __init__(self):
        super().__init__()
        torch.manual_seed(1)
        self.conv = torch.nn.Conv2d(3, 19, 3, padding=1)
        self.sizes = []

    def forward(self, x):
        self.sizes.append(tuple(x.shape))
        out = self.conv(x)
        return {"out": out, "feat": x}


def test_a_round_predicts_at_the_inference_scale_fuses_patches_there_and_labels_at_the_loaded_size():
    model = _Recorder()
    m = build_method("mlsl", model, None, rounds=1, flip=False, patches=3, patch_size=(64, 64), infer_size=256)
    torch.manual_seed(2)
    images = torch.randn(2, 3, 64, 128)
    target = [(image, None, i, False) for i, image in enumerate(images)]
    m.on_round_start(0, target)
    assert (2, 3, 128, 256) in model.sizes and (6, 3, 64, 64) in model.sizes  # full image at 256 wide, 64x64 patches
    assert m.pseudo_labels.shape == (2, 64, 128)
    # by hand: bicubic to 128x256, softmax, fuse with the patches drawn on the 128x256 image, bilinear back
    big = F.interpolate(images, size=(128, 256), mode="bicubic", align_corners=False)
    with torch.no_grad():
        probs = model.conv(big).softmax(1)
        fused = []
        for i in range(2):
            boxes = m.patch_boxes(128, 256, 0, i)
            crops = torch.stack([big[i, :, r:r + 64, c:c + 64] for r, c in boxes])
            fused.append(fuse_patch_predictions(probs[i], list(model.conv(crops).softmax(1)), boxes))
    expected = F.interpolate(torch.stack(fused), size=(64, 128), mode="bilinear", align_corners=False)
    with st.eval_mode(model):
        got = m.target_posterior(model, images, [0, 1], 0)
    assert torch.allclose(got, expected, atol=1e-5)


# -------------------------------------------------------------------------------------------- mined crops
def test_mine_classes_take_the_smallest_shares_never_predicted_first_and_priority_below_the_threshold():
    lists = [np.zeros(2000), np.zeros(1), np.zeros(3), np.zeros(500), np.zeros(2)]  # class 1: only the extra zero
    sizes = class_sizes(lists)
    assert sizes.tolist() == [2000, 0, 3, 500, 2]
    mine, priority = mine_classes(sizes, 3, 0.001)  # shares 0.798, 0, 0.0012, 0.1996, 0.0008
    assert mine.tolist() == [1, 4, 2] and priority.tolist() == [1, 4]


def _label_with_blobs():
    label = torch.zeros(512, 1024, dtype=torch.long)  # a loaded Cityscapes label map
    label[300:305, 700:705] = 4  # a priority class, well inside
    label[200:210, 200:210] = 2  # a mined class
    label[0:3, 0:3] = 5  # a mined class only at the corner: no crop centred there stays inside the image
    return label


def test_a_mined_crop_is_centred_on_a_priority_class_else_a_mined_class_else_uniform():
    label, side = _label_with_blobs(), 252  # 504 / rate 1 on the 2048 image = 252 loaded pixels
    for seed in range(20):
        top, left, cls = crop_box(label, side, [5, 2, 7], [4], 1.0, torch.Generator().manual_seed(seed))
        assert cls == 4 and label[top + side // 2, left + side // 2] == 4
        assert crop_box(label, side, [5, 2, 7], [4], 1.0, torch.Generator().manual_seed(seed)) == (top, left, cls)
    for seed in range(20):  # no priority class present: the mined ids present (5 only at the corner: left out)
        top, left, cls = crop_box(label, side, [5, 2, 7], [9], 1.0, torch.Generator().manual_seed(seed))
        assert cls == 2 and label[top + side // 2, left + side // 2] == 2
    top, left, cls = crop_box(label, side, [5], [], 1.0, torch.Generator().manual_seed(0))
    assert cls == -1 and 0 <= top <= 512 - side and 0 <= left <= 1024 - side  # nothing to mine: uniform
    gen, small = torch.Generator().manual_seed(3), label[264:328, 664:792]  # the priority blob, on 64x128
    mined = [crop_box(small, 32, [2], [4], 0.8, gen)[2] != -1 for _ in range(2000)]
    assert np.mean(mined) == pytest.approx(0.8, abs=0.03)  # --mine-port 0.8


def test_crop_scales_follow_the_scale_rate_range_of_the_2048_image():
    gen = torch.Generator().manual_seed(0)
    sides = [scale_crop_side(504, (0.7, 1.3), 2048, gen) for _ in range(3000)]
    # target_size ~ U{1433..2662}, side = int(504 / (target_size / 2048)): 387 (x1.3) .. 720 (x0.7)
    assert min(sides) >= int(504 / (2662 / 2048)) and max(sides) <= int(504 / (1433 / 2048))
    assert min(sides) < 392 and max(sides) > 712
    m = _recipe_method("gta5_cbst")
    torch.manual_seed(0)
    image, crop = m._crop(torch.randn(3, 512, 1024), _label_with_blobs(), 2048)
    assert image.shape == (3, 504, 504) and crop.shape == (504, 504)  # --crop-size 500 -> 504


# ----------------------------------------------------------------------------------------- source portion
def test_source_portion_counts_per_round_and_the_cumulative_subset():
    m = _recipe_method()
    counts = [len(source_subset(24966, m.source_portion(r))) for r in range(6)]
    assert counts == [748, 811, 873, 936, 998, 1061]  # int(24966 x (0.03 + 0.0025 r))
    np.random.seed(0)  # the reference: np.random.seed(seed_int); np.random.choice(num_source, k, replace=False)
    assert np.array_equal(source_subset(24966, 0.03), np.random.choice(24966, 748, replace=False))
    assert np.array_equal(source_subset(24966, 0.0325)[:748], source_subset(24966, 0.03))  # each round nests


class _Recording(list):
    def __init__(self, items):
        super().__init__(items)
        self.read = []

    def __getitem__(self, i):
        self.read.append(i)
        return super().__getitem__(i)


def test_a_mixed_step_draws_source_images_from_the_round_subset_only():
    torch.manual_seed(0)
    m = build_method("cbst", build_model("minideeplab", 19, width=8), None, rounds=1, crop_size=16,
                     src_port=0.25, spatial_prior=False)
    source = _Recording([(torch.randn(3, 32, 64), torch.randint(0, 19, (32, 64)), i, False) for i in range(40)])
    target = [(torch.randn(3, 32, 64), None, i, False) for i in range(40)]
    m.on_round_start(0, target, source)
    subset = set(m._subset.tolist())
    assert len(subset) == 10  # int(40 x 0.25)
    source.read.clear()
    images = torch.stack([t[0] for t in target[:8]])
    drawn = 0
    for _ in range(10):
        logs = m.step(SourceBatch(images, torch.zeros(8, 32, 64, dtype=torch.long)),
                      TargetBatch(images, torch.arange(8), torch.zeros(8, dtype=torch.bool)))
        drawn += logs["source_images"]
    assert set(source.read) <= subset and len(source.read) == drawn
    assert drawn / 80 == pytest.approx(10 / 50, abs=0.1)  # each image a source one with p = 10 / (10 + 40)
    with pytest.raises(ValueError, match="crop_size"):
        build_method("cbst", build_model("minideeplab", 19, width=8), None, src_port=0.03)


class _Streamed(_Recording):
    """A list the loop's stream can index: it asks for ``(index, augmentation key)``."""

    def __getitem__(self, i):
        return super().__getitem__(i[0] if isinstance(i, tuple) else i)


@pytest.mark.parametrize("src_port", [0.25, 0.0])
def test_the_loop_loads_no_source_batch_when_the_round_mixes_its_own_source_images(src_port):
    torch.manual_seed(0)
    m = build_method("cbst", build_model("minideeplab", 19, width=8), None, rounds=1, crop_size=16,
                     src_port=src_port, spatial_prior=False)
    source = _Streamed([(torch.randn(3, 32, 64), torch.randint(0, 19, (32, 64)), i, False) for i in range(40)])
    target = _Streamed([(torch.randn(3, 32, 64), torch.zeros(32, 64, dtype=torch.long), i, False) for i in range(40)])
    by_method = []  # source images the method reads itself (the round's subset), per call

    def counting(f):
        def call(*args):
            before = len(source.read)
            out = f(*args)
            by_method.append(len(source.read) - before)
            return out
        return call

    m.step, m.on_round_start = counting(m.step), counting(m.on_round_start)
    fit(m, source, target, options=FitOptions(steps=4, batch_size=2, progress=False))
    by_loop = len(source.read) - sum(by_method)
    assert by_loop == (0 if src_port else 4 * 2)  # mixed batches: the loop's source batch would go unused
    assert m.draws_source_batches == (not src_port)


# ------------------------------------------------------------------------------------ fixed lr per round
def test_round_lr_is_fixed_within_a_round_and_divided_by_sqrt2_after_each():
    m = _recipe_method()
    lrs = [set_lr(m, i, 60) for i in (0, 9, 10, 19, 20, 59)]  # 6 rounds of 10 steps
    base = m.optimizers["model"].param_groups[0]["initial_lr"]
    assert lrs == pytest.approx([base, base, base / math.sqrt(2), base / math.sqrt(2), base / 2,
                                 base / math.sqrt(2) ** 5])
    heads = m.optimizers["model"].param_groups[-1]
    assert heads["lr"] == pytest.approx(heads["initial_lr"] / math.sqrt(2) ** 5)
    poly = build_method("cbst", build_model("minideeplab", 19, width=8), "minicity")
    assert poly.lr_factor(30, 60) is None  # MiniCity: the loop's poly lr
    assert set_lr(poly, 30, 60) == pytest.approx(0.01 * 0.5 ** 0.9)


# -------------------------------------------------------------------------------------- the PWL head
def test_pwl_head_is_pool_fc512_fc19_and_the_weak_loss_trains_both_layers():
    m = _recipe_method("gta5_mlsl_pwl")
    head = m.weak_head
    assert [tuple(layer.weight.shape) for layer in head] == [(512, m.model.feat_channels), (19, 512)]
    opt_params = {id(p) for g in m.optimizers["model"].param_groups for p in g["params"]}
    assert all(id(p) in opt_params for p in head.parameters())
    out = m.model(torch.randn(2, 3, 64, 64))
    label = torch.randint(0, 19, (2, 64, 64))
    m._weak(out, label).backward()
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in head.parameters())
    minicity = build_method("mlsl", build_model("minideeplab", 19, width=8), "minicity_pwl")
    assert isinstance(minicity.weak_head, torch.nn.Linear)  # MiniCity keeps its single layer


# ------------------------------------------------------------------------------------ labels on disk
def _disk_method(tmp_path, **kw):
    torch.manual_seed(0)
    m = build_method("mlsl", build_model("minideeplab", 19, width=8), "minicity", rounds=2, **kw)
    m.label_dir = tmp_path / "pseudo_labels"
    return m


def test_large_pseudo_labels_go_to_a_memory_mapped_file_named_by_the_checkpoint(tiny_minicity, tmp_path,
                                                                                monkeypatch):
    target = SegmentationList(tiny_minicity, "lists/target_train.txt")
    source = SegmentationList(tiny_minicity, "lists/source_train.txt")
    in_memory = _disk_method(tmp_path)
    in_memory.label_dir = None
    in_memory.on_round_start(1, target, source)
    monkeypatch.setattr(st, "DISK_BYTES", 0)
    m = _disk_method(tmp_path)
    (tmp_path / "pseudo_labels").mkdir()
    (tmp_path / "pseudo_labels" / ".round_1.npy.123-dead.tmp.npy").write_bytes(b"half")  # a killed earlier pass
    m.on_round_start(1, target, source)
    path = tmp_path / "pseudo_labels" / "round_1.npy"
    assert path.exists() and m.pseudo_labels.numel() == 0
    assert np.array_equal(np.load(path), in_memory.pseudo_labels.numpy())
    assert torch.equal(m.kept_pixels, in_memory.kept_pixels) and torch.equal(m.history, in_memory.history)
    batch = TargetBatch(torch.zeros(3, 3, 32, 64), torch.tensor([5, 0, 7]), torch.tensor([True, False, False]))
    assert torch.equal(m.target_labels(batch), in_memory.target_labels(batch))

    def size(method):
        buf = io.BytesIO()
        torch.save(method.state_dict(), buf)
        return buf.tell()

    n_labels = in_memory.pseudo_labels.numel()
    assert size(in_memory) - size(m) > n_labels - 1000  # the checkpoint holds the path, not the labels
    twin = _disk_method(tmp_path)
    twin.load_state_dict(copy.deepcopy(m.state_dict()))  # a resumed run reopens the round's file
    assert int(twin.round_index) == 1 and torch.equal(twin.target_labels(batch), m.target_labels(batch))
    path.unlink()
    with pytest.raises(FileNotFoundError, match="no-resume"):
        _disk_method(tmp_path).load_state_dict(m.state_dict())


def test_a_killed_run_with_labels_on_disk_resumes_with_the_same_labels_and_losses(tiny_minicity, tmp_path,
                                                                                  monkeypatch):
    monkeypatch.setattr(st, "DISK_BYTES", 0)
    source = SegmentationList(tiny_minicity, "lists/source_train.txt", hflip=True)
    target = SegmentationList(tiny_minicity, "lists/target_train.txt", hflip=True)

    def run(folder, stop_after=None):
        m = _disk_method(folder)
        return m, fit(m, source, target, options=FitOptions(steps=6, batch_size=4, run_dir=folder, log_every=1,
                                                            progress=False, stop_after=stop_after))

    whole, rows = run(tmp_path / "a")
    run(tmp_path / "b", stop_after=4)  # killed in round 1 (steps 3..5), after its labels were written
    resumed, rows_b = run(tmp_path / "b")
    assert [r["target"] for r in rows_b] == [r["target"] for r in rows]
    assert np.array_equal(np.load(tmp_path / "a" / "pseudo_labels" / "round_1.npy"),
                          np.load(tmp_path / "b" / "pseudo_labels" / "round_1.npy"))
    assert bytes(resumed.label_file.tolist()).decode().endswith("round_1.npy")


def test_a_mixed_step_is_one_loss_over_the_batch_with_the_auxiliary_ce_on_its_source_images(monkeypatch):
    torch.manual_seed(0)
    m = build_method("mlsl", build_model("minideeplab", 19, width=8), None, rounds=1, crop_size=16, loss="ce",
                     src_port=0.5, spatial_prior=False, lambda_seg=0.3, weak_labels=True, weak_head="fc512",
                     mine_port=0.8, tgt_port=0.9, tgt_port_max=0.9)
    source = [(torch.randn(3, 32, 64), torch.randint(0, 19, (32, 64)), i, False) for i in range(20)]
    target = [(torch.randn(3, 32, 64), None, i, False) for i in range(20)]
    m.on_round_start(0, target, source)
    ref = copy.deepcopy(m)
    calls = []
    original = st.seg_loss

    def recording(logits, label):
        calls.append(label.clone())
        return original(logits, label)

    monkeypatch.setattr(st, "seg_loss", recording)
    seen = []
    m.model.register_forward_pre_hook(lambda _, args: seen.append(args[0].detach().clone()))
    images = torch.stack([t[0] for t in target[:6]])
    torch.manual_seed(4)
    logs = m.step(SourceBatch(images, torch.zeros(6, 32, 64, dtype=torch.long)),
                  TargetBatch(images, torch.arange(6), torch.zeros(6, dtype=torch.bool)))
    assert 0 < logs["source_images"] < 6  # both kinds in the batch (this seed)
    (image,), (label, source_only) = seen, calls  # one forward; main CE over all, auxiliary CE on source images
    assert image.shape == (6, 3, 16, 16)
    is_source = (source_only != 255).flatten(1).any(1)
    assert int(is_source.sum()) == logs["source_images"]
    assert torch.equal(source_only[is_source], label[is_source])
    assert (label[~is_source][:, 4::8, 4::8] != 255).any()  # pseudo-labels on the target images' weak-label grid
    out = ref.model(image)
    grid = label[:, 4::8, 4::8]
    loss = (F.cross_entropy(out["out"], label, ignore_index=255) + 0.3 * F.cross_entropy(out["aux"], source_only,
            ignore_index=255) + weak_label_loss(ref.weak_head(out["feat"].mean((2, 3))), weak_labels(grid, 19)))
    params = [*ref.model.parameters(), *ref.weak_head.parameters()]
    grads = torch.autograd.grad(loss, params, allow_unused=True)
    for p, g, q in zip([*m.model.parameters(), *m.weak_head.parameters()], grads, params):
        g = torch.zeros_like(q) if g is None else g
        got = p.grad if p.grad is not None else torch.zeros_like(g)
        assert torch.allclose(got, g, rtol=1e-5, atol=1e-8)
