"""Orthogonal and clustered embeddings -- Toldo, Michieli, Zanuttigh, WACV 2021 (``LTTM/UDAclustering``).

One step (the original's ``train_UDA.py``): source CE; IW-MaxSquare on the target output (the original calls it its
"entropy" loss in ``LTTM/UDAclustering`` ``tools/train_UDA.py``: it is the MaxSquare family's IW loss); then, on
the features of both
batches, centroids shared by the domains and three objectives:

* clustering (centroids from the bilinearly resized posteriors): pull features to their class centroid, push the
  centroids apart;
* orthogonality and sparsity (centroids recomputed from the nearest-resized argmax): each feature should align
  with one centroid only, and each centroid should use few channels.

Target classes come from the model's own predictions; source classes too, unless ``use_source_gt`` (the original's
default is False). The optional centroid smoothing keeps a running average (the ``centroid_avg`` buffer, saved
and resumed with the method); as in the original, it is applied at both centroid computations of a step.

Taught in ``notebooks/07_clustered_orthogonal_embeddings.ipynb``.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from ..data.batch import SourceBatch, TargetBatch
from ..losses import iw_maxsquare_loss
from ..losses.clustering import (
    class_centroids,
    classes_at_feature_grid,
    clustering_loss,
    feature_rows,
    labels_at_feature_grid,
    orthogonality_loss,
    smooth_centroids,
    sparsity_loss,
)
from .base import MINICITY_ADAPT, Method, MethodConfig, require_attributes


@dataclass
class ClusteringConfig(MethodConfig):
    # the feature terms read both domains' features: all four weigh target images
    TARGET_WEIGHTS = ("lambda_entropy", "lambda_cluster", "lambda_ortho", "lambda_sparse")
    # the original code's README values per backbone and source, and MiniCity's
    PRESETS = {
        "resnet101_gta5": {},  # the dataclass defaults
        "vgg16_gta5": {"lambda_cluster": 1e-1, "lambda_ortho": 2e-2, "lambda_sparse": 2e-2, "lambda_entropy": 2e-2},
        "resnet101_synthia": {"lambda_cluster": 2e-2, "lambda_ortho": 1e-1, "lambda_sparse": 1.0,
                              "lambda_entropy": 5e-2, "iw_ratio": 0.0},
        "vgg16_synthia": {"lambda_cluster": 5e-2, "lambda_ortho": 5e-2, "lambda_sparse": 2e-2, "lambda_entropy": 1e-2},
        # MiniCity: the original feature weights (R101, GTA5); IW-MaxSquare at maxsquare_iw's MiniCity weight. Larger
        # clustering weights hurt here (seed 0, 60 steps: 1.0 -> -0.6 points against MaxSquare+IW alone)
        "minicity": MINICITY_ADAPT | {"lambda_entropy": 5.0},
    }

    # lambda_seg (MethodConfig): 0, the original's DeeplabFeat has no auxiliary head; the MiniCity preset keeps its aux
    lambda_entropy: float = 0.1  # --lambda_entropy: weight of IW-MaxSquare on target (README R101 GTA5)
    iw_ratio: float = 0.2  # --IW_ratio
    lambda_cluster: float = 2e-2  # --lambda_cluster
    lambda_ortho: float = 2.0  # --lambda_ortho
    lambda_sparse: float = 0.5  # --lambda_sparse
    cluster_norm_order: float = 1.0  # --cluster_norm_order
    ortho_temp: float = 1.0  # --ortho_temp
    sparse_norm_order: int = 2  # --sparse_norm_order
    sparse_rho: float = 0.5  # --sparse_rho
    centroid_smoothing: float = -1.0  # --centroid_smoothing (< 0: off)
    use_source_gt: bool = False  # --use_source_gt: source classes from labels instead of predictions
    # defaults: README, ResNet-101, GTA5; presets "vgg16_gta5", "resnet101_synthia", "vgg16_synthia" above


class ClusteredEmbeddings(Method):
    r""":math:`\mathcal{L}_{seg} + \lambda_{ent}\mathcal{L}_{IW\text{-}ms} + \lambda_{cl}(d_s + d_t - d_{cent})
    + \lambda_{orth}\mathcal{L}_{orth} + \lambda_{sp}\mathcal{L}_{sp}`."""

    def __init__(self, model, cfg: ClusteringConfig | None = None):
        require_attributes(model, "clustered_embeddings", "num_classes", "feat_channels")
        super().__init__(model, cfg or ClusteringConfig())
        self.num_classes = model.num_classes
        # running average of the centroids (used only with centroid_smoothing >= 0); inf rows = no average yet
        self.register_buffer("centroid_avg", torch.full((model.num_classes, model.feat_channels), float("inf")))

    def _centroids(self, rows, classes):
        centroids = class_centroids(rows, classes, self.num_classes)
        if self.cfg.centroid_smoothing < 0:
            return centroids
        centroids, average = smooth_centroids(centroids, self.centroid_avg, self.cfg.centroid_smoothing)
        self.centroid_avg.copy_(average)
        return centroids

    def embedding_losses(self, out_s: dict, out_t: dict, src: SourceBatch) -> dict[str, torch.Tensor]:
        """The three feature-space objectives of one source/target pair of outputs (the original's two passes)."""
        c = self.cfg
        feats = [out_s["feat"], out_t["feat"]]
        sizes = [f.shape[-2:] for f in feats]  # each domain on its own feature grid (source and target sizes differ)
        rows = [feature_rows(f) for f in feats]
        probs = [F.softmax(out_s["out"], dim=1), F.softmax(out_t["out"], dim=1)]
        # pass 1: clustering, classes from the bilinearly resized posteriors
        classes = [classes_at_feature_grid(p, size, "bilinear") for p, size in zip(probs, sizes)]
        if c.use_source_gt:
            classes[0] = labels_at_feature_grid(src.label, sizes[0])
        pull, push = clustering_loss(rows, classes, self._centroids(rows, classes), c.cluster_norm_order)
        # pass 2: orthogonality and sparsity, classes from the nearest-resized argmax
        classes = [classes_at_feature_grid(p, size, "nearest") for p, size in zip(probs, sizes)]
        if c.use_source_gt:
            classes[0] = labels_at_feature_grid(src.label, sizes[0])
        centroids = self._centroids(rows, classes)
        seen = centroids[torch.isfinite(centroids).all(dim=1)]
        return {"cluster": pull - push, "ortho": orthogonality_loss(torch.cat(rows), seen, c.ortho_temp),
                "sparse": sparsity_loss(seen, c.sparse_rho, c.sparse_norm_order)}

    def step(self, src: SourceBatch, tgt: TargetBatch) -> dict[str, float]:
        c = self.cfg
        out_s, out_t = self.source_forward(src.image), self.model(tgt.image)
        l_seg, logs = self.source_loss(out_s, src)
        l_ent = iw_maxsquare_loss(out_t["out"], c.iw_ratio)
        terms = self.embedding_losses(out_s, out_t, src)
        loss = (l_seg + c.lambda_entropy * l_ent + c.lambda_cluster * terms["cluster"]
                + c.lambda_ortho * terms["ortho"] + c.lambda_sparse * terms["sparse"])
        self.update(self.optimizers["model"], loss)
        return logs | {"entropy": l_ent.item(), **{k: v.item() for k, v in terms.items()}}
