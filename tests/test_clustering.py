"""Orthogonal and clustered embeddings: each loss on a small hand-built case, the centroid rules, the method."""

from __future__ import annotations

import math

import pytest
import torch

from udalib.data.batch import SourceBatch, TargetBatch
from udalib.losses.clustering import (
    class_centroids,
    classes_at_feature_grid,
    clustering_loss,
    feature_rows,
    labels_at_feature_grid,
    orthogonality_loss,
    smooth_centroids,
    sparsity_loss,
)
from udalib.methods import build_method
from udalib.models import build_model

INF = float("inf")


def test_feature_rows_order_is_n_y_x():
    feat = torch.arange(2 * 3 * 1 * 2, dtype=torch.float32).reshape(2, 3, 1, 2)  # (N, F, h, w)
    rows = feature_rows(feat)
    assert rows.shape == (4, 3)
    assert torch.equal(rows[1], feat[0, :, 0, 1]) and torch.equal(rows[2], feat[1, :, 0, 0])


def test_centroids_are_shared_by_the_domains_and_absent_classes_are_inf():
    source = torch.tensor([[1.0, 0.0], [3.0, 0.0], [0.0, 4.0], [9.0, 9.0]])
    source_cls = torch.tensor([0, 0, 1, 255])  # the ignored row counts nowhere
    target = torch.tensor([[0.0, 2.0]])
    target_cls = torch.tensor([1])
    mu = class_centroids([source, target], [source_cls, target_cls], num_classes=3)
    assert torch.equal(mu[0], torch.tensor([2.0, 0.0]))
    assert torch.equal(mu[1], torch.tensor([0.0, 3.0]))  # mean of the source [0, 4] and the target [0, 2]
    assert torch.isinf(mu[2]).all()


def test_centroid_smoothing_rule_with_a_class_absent_from_the_batch():
    average = torch.tensor([[0.0, 0.0], [INF, INF], [6.0, 6.0]])
    current = torch.tensor([[2.0, 2.0], [4.0, 4.0], [INF, INF]])  # class 2 absent from this batch
    smoothed, new_average = smooth_centroids(current, average, 0.5)
    assert torch.equal(smoothed[0], torch.tensor([1.0, 1.0]))  # 0.5 * 2 + 0.5 * 0
    assert torch.equal(smoothed[1], torch.tensor([4.0, 4.0]))  # no average yet: starts from the current value
    assert torch.equal(smoothed[2], torch.tensor([6.0, 6.0]))  # absent: keeps the running average
    assert torch.equal(new_average, smoothed) and not new_average.requires_grad
    off, _ = smooth_centroids(current, average, -1.0)
    assert off is current  # coeff < 0: smoothing off (the seed's default)


def test_features_on_their_centroids_give_zero_pull_and_the_push_is_hand_computed():
    mu = torch.tensor([[0.0, 0.0], [2.0, 0.0], [INF, INF]])
    rows = [torch.tensor([[0.0, 0.0], [2.0, 0.0]]), torch.tensor([[2.0, 0.0]])]
    classes = [torch.tensor([0, 1]), torch.tensor([1])]
    pull, push = clustering_loss(rows, classes, mu)
    assert pull.item() == 0.0
    # |S| = 2; each centroid against the other: L1 norm 2 over 2 elements -> 1; mean over the two -> 1
    assert push.item() == pytest.approx(1.0)
    # off-centroid features: source class 0 at [1, 1]: L1 2 / (1 * 2) = 1, one class in that domain -> 1
    pull, _ = clustering_loss([torch.tensor([[1.0, 1.0]])], [torch.tensor([0])], mu)
    assert pull.item() == pytest.approx(1.0)
    # one centroid only: the seed divides by zero; here the push is 0
    assert clustering_loss(rows[:1], [torch.tensor([0, 0])], mu[:1])[1].item() == 0.0


def test_orthogonality_loss_zero_for_features_on_orthogonal_centroids_and_max_for_equal_ones():
    centroids = torch.tensor([[1.0, 0.0], [0.0, 1.0]], dtype=torch.float64)
    rows = 40 * centroids  # each feature on one of two orthogonal centroids
    assert orthogonality_loss(rows, centroids).item() == pytest.approx(0.0, abs=1e-12)
    same = torch.tensor([[1.0, 1.0], [1.0, 1.0]], dtype=torch.float64)
    assert orthogonality_loss(rows, same).item() == pytest.approx(math.log(2) / 2)
    # temperature: T scales the products before the softmax
    assert orthogonality_loss(rows, centroids, temperature=40.0).item() == pytest.approx(
        orthogonality_loss(rows / 40, centroids).item())


def test_sparsity_loss_on_known_vectors():
    assert sparsity_loss(torch.tensor([[1.0, 0.5, 0.0]])).item() == pytest.approx(-(0.25 + 0 + 0.25) / 3)
    # each centroid is scaled by its own largest channel first
    assert sparsity_loss(torch.tensor([[2.0, 1.0, 0.0]])).item() == pytest.approx(-1 / 6)
    assert sparsity_loss(torch.tensor([[1.0, 0.5, 0.0]]), norm_order=1).item() == pytest.approx(-1 / 3)
    # a centroid already at 0 / 1 channels is the minimum: -(0.5^2)
    assert sparsity_loss(torch.tensor([[1.0, 0.0]])).item() == pytest.approx(-0.25)


def test_classes_at_the_feature_grid_bilinear_and_nearest():
    prob = torch.zeros(1, 2, 2, 4)
    prob[0, 0, :, :3] = 0.6  # class 0 on the three left columns, class 1 on the right column
    prob[0, 1, :, :3] = 0.4
    prob[0, 1, :, 3] = 1.0
    assert classes_at_feature_grid(prob, (1, 2), "nearest").tolist() == [0, 0]  # picks columns 0 and 2
    # bilinear with align_corners: the right cell samples column 3 exactly
    assert classes_at_feature_grid(prob, (1, 2), "bilinear").tolist() == [0, 1]
    label = torch.tensor([[[3, 3, 255, 255]]])
    assert labels_at_feature_grid(label, (1, 2)).tolist() == [3, 255]
    with pytest.raises(ValueError, match="bilinear"):
        classes_at_feature_grid(prob, (1, 2), "area")


def batches():
    g = torch.Generator().manual_seed(0)
    src = SourceBatch(torch.randn(2, 3, 32, 64, generator=g), torch.randint(0, 19, (2, 32, 64), generator=g))
    tgt = TargetBatch(torch.randn(2, 3, 32, 64, generator=g) * 1.5, torch.tensor([0, 1]))
    return src, tgt


def fresh(name, **overrides):
    torch.manual_seed(0)
    return build_method(name, build_model("minideeplab", 19, width=8), "minicity", **overrides)


def test_with_the_embedding_weights_at_zero_the_method_is_iw_maxsquare():
    # the seed's "entropy" loss is IW-MaxSquare: with cluster/ortho/sparse at 0 the update equals maxsquare_iw's
    src, tgt = batches()
    clustering = fresh("clustered_embeddings", lambda_cluster=0.0, lambda_ortho=0.0, lambda_sparse=0.0)
    iw = fresh("maxsquare_iw", lambda_target=clustering.cfg.lambda_entropy, iw_ratio=clustering.cfg.iw_ratio)
    clustering.step(src, tgt)
    iw.step(src, tgt)
    for (k, a), b in zip(clustering.model.named_parameters(), iw.model.parameters()):
        assert torch.allclose(a, b, atol=1e-6), k


def test_each_embedding_term_moves_the_features():
    src, tgt = batches()
    base = fresh("clustered_embeddings", lambda_cluster=0.0, lambda_ortho=0.0, lambda_sparse=0.0)
    base.step(src, tgt)
    for term in ("lambda_cluster", "lambda_ortho", "lambda_sparse"):
        weights = {"lambda_cluster": 0.0, "lambda_ortho": 0.0, "lambda_sparse": 0.0, term: 1.0}
        method = fresh("clustered_embeddings", **weights)
        logs = method.step(src, tgt)
        assert {"cluster", "ortho", "sparse", "entropy", "seg"} <= set(logs)
        assert not torch.equal(method.model.layer4.conv1[0].weight, base.model.layer4.conv1[0].weight), term


def test_centroid_average_is_method_state_and_resumes():
    src, tgt = batches()
    method = fresh("clustered_embeddings", centroid_smoothing=0.5)
    assert torch.isinf(method.centroid_avg).all()
    method.step(src, tgt)
    assert torch.isfinite(method.centroid_avg).any()
    state = method.state_dict()
    assert torch.equal(state["centroid_avg"], method.centroid_avg)
    restored = fresh("clustered_embeddings", centroid_smoothing=0.5)
    restored.load_state_dict(state)
    assert torch.equal(restored.centroid_avg, method.centroid_avg)
    a, b = method.step(src, tgt), restored.step(src, tgt)
    assert a == b


def test_vgg_and_synthia_presets_are_the_seed_readme_values():
    from udalib.methods import method_config

    vgg = method_config("clustered_embeddings", "vgg16_gta5")
    assert (vgg.lambda_cluster, vgg.lambda_ortho, vgg.lambda_sparse, vgg.lambda_entropy) == (0.1, 0.02, 0.02, 0.02)
    r101 = method_config("clustered_embeddings")
    assert (r101.lambda_cluster, r101.lambda_ortho, r101.lambda_sparse, r101.lambda_entropy) == (0.02, 2.0, 0.5, 0.1)
    syn = method_config("clustered_embeddings", "resnet101_synthia")
    assert (syn.lambda_sparse, syn.iw_ratio) == (1.0, 0.0)


def seed_style_clustering(rows, classes, centroids, p):
    """A direct transcription of the seed's loops: whole-matrix norms divided by the element count."""
    def dist(t):
        return torch.linalg.vector_norm(t.reshape(-1), ord=p) / t.numel()
    present = torch.isfinite(centroids).all(dim=1)
    pull = 0.0
    for r, cls in zip(rows, classes):
        terms = [dist(centroids[c] - r[cls == c]) for c in torch.unique(cls).tolist() if present[c]]
        pull = pull + torch.stack(terms).mean()
    seen = centroids[present]
    push = torch.stack([dist(seen[i] - torch.cat([seen[:i], seen[i + 1:]])) for i in range(len(seen))]).mean()
    return pull, push


@pytest.mark.parametrize("p", [1.0, 2.0])
def test_clustering_loss_equals_the_seed_loops_on_random_data(p):
    g = torch.Generator().manual_seed(0)
    rows = [torch.rand(40, 6, generator=g, dtype=torch.float64), torch.rand(30, 6, generator=g, dtype=torch.float64)]
    classes = [torch.randint(0, 4, (40,), generator=g), torch.randint(1, 5, (30,), generator=g)]
    mu = class_centroids(rows, classes, num_classes=6)  # classes 5 absent: inf row
    got = clustering_loss(rows, classes, mu, norm_order=p)
    want = seed_style_clustering(rows, classes, mu, p)
    assert got[0].item() == pytest.approx(want[0].item()) and got[1].item() == pytest.approx(want[1].item())


def test_a_model_without_feature_channels_is_a_clear_error():
    class Bare(torch.nn.Module):
        num_classes = 19

        def forward(self, x):
            return {"out": x}

    with pytest.raises(ValueError, match="needs a model with feat_channels"):
        build_method("clustered_embeddings", Bare())
    with pytest.raises(ValueError, match="needs a model with feat_channels"):
        build_method("cbst", Bare())


@pytest.mark.parametrize("use_source_gt", [False, True])
def test_domains_of_different_sizes_are_assigned_on_their_own_feature_grids(use_source_gt):
    # GTA5 1280x720 against Cityscapes 1024x512: the feature grids differ in size and aspect, and each domain's
    # classes come from its own posterior resized to its own grid (the seed's per-domain feature processing)
    import torch.nn.functional as F

    g = torch.Generator().manual_seed(1)
    src = SourceBatch(torch.randn(2, 3, 40, 72, generator=g), torch.randint(0, 19, (2, 40, 72), generator=g))
    tgt = TargetBatch(torch.randn(2, 3, 32, 64, generator=g) * 1.5, torch.tensor([0, 1]))
    method = fresh("clustered_embeddings", use_source_gt=use_source_gt)
    method.eval()
    with torch.no_grad():
        out_s, out_t = method.model(src.image), method.model(tgt.image)
        assert out_s["feat"].shape[-2:] != out_t["feat"].shape[-2:]
        terms = method.embedding_losses(out_s, out_t, src)

        rows = [feature_rows(out_s["feat"]), feature_rows(out_t["feat"])]
        grids = [tuple(out_s["feat"].shape[-2:]), tuple(out_t["feat"].shape[-2:])]
        probs = [F.softmax(out_s["out"], 1), F.softmax(out_t["out"], 1)]
        # pass 1 (clustering): argmax of the posterior resized bilinearly to the domain's grid
        bil = [F.interpolate(p, size=s, mode="bilinear", align_corners=True).argmax(1).reshape(-1)
               for p, s in zip(probs, grids)]
        # pass 2 (orthogonality, sparsity): the full-resolution argmax resized with nearest neighbour
        near = [F.interpolate(p.argmax(1, keepdim=True).float(), size=s, mode="nearest").long().reshape(-1)
                for p, s in zip(probs, grids)]
        if use_source_gt:
            gt = F.interpolate(src.label[:, None].float(), size=grids[0], mode="nearest").long().reshape(-1)
            bil[0], near[0] = gt, gt
        for r, b, n in zip(rows, bil, near):
            assert len(r) == len(b) == len(n)
        pull, push = clustering_loss(rows, bil, class_centroids(rows, bil, 19), method.cfg.cluster_norm_order)
        mu = class_centroids(rows, near, 19)
        seen = mu[torch.isfinite(mu).all(dim=1)]
    assert torch.allclose(terms["cluster"], pull - push)
    assert torch.allclose(terms["ortho"], orthogonality_loss(torch.cat(rows), seen, method.cfg.ortho_temp))
    assert torch.allclose(terms["sparse"], sparsity_loss(seen, method.cfg.sparse_rho, method.cfg.sparse_norm_order))
    method.train()
    method.step(src, tgt)  # a whole step at the two sizes
