"""Figures for the notebooks: pure functions that return a matplotlib ``Figure`` (nothing is shown or saved)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import matplotlib.pyplot as plt
import numpy as np
import torch
from matplotlib.figure import Figure
from matplotlib.patches import Patch

from ..data.batch import IGNORE_INDEX
from ..data.dataset import denormalize
from ..data.labels import CITYSCAPES_CLASSES, CITYSCAPES_PALETTE, colorize


def legend_handles(class_ids: Sequence[int], names: Sequence[str] = CITYSCAPES_CLASSES,
                   palette: Sequence = CITYSCAPES_PALETTE) -> list[Patch]:
    return [Patch(color=np.asarray(palette[c]) / 255, label=names[c]) for c in class_ids]


def _colour_bar(fig: Figure, mappable, label: str, **kwargs):
    """A colour bar with its label: the quantity on the first line, the scale on the second, in a size that fits
    beside a short figure."""
    bar = fig.colorbar(mappable, **kwargs)
    bar.set_label(label, fontsize=8)
    return bar


def _off(ax) -> None:
    ax.set_xticks([])
    ax.set_yticks([])


def show_samples(datasets: Mapping[str, object], n: int = 4, *, class_ids: Sequence[int] | None = None) -> Figure:
    """For each named dataset, ``n`` images with their colourised labels below (grey where unlabelled).

    A dataset read in a 16- or 13-class set is coloured with that set's palette, so each class keeps its colour."""
    fig, axes = plt.subplots(2 * len(datasets), n, figsize=(2.2 * n, 2.3 * len(datasets)), squeeze=False)
    for r, (name, ds) in enumerate(datasets.items()):
        class_set = getattr(ds, "class_set", None)
        palette = class_set.palette if class_set is not None else CITYSCAPES_PALETTE
        for i in range(n):
            image, label = ds.load(i)
            axes[2 * r, i].imshow(image)
            if label is not None:
                axes[2 * r + 1, i].imshow(colorize(label, palette))
            else:
                axes[2 * r + 1, i].text(0.5, 0.5, "no label", ha="center", va="center", color="grey")
            _off(axes[2 * r, i])
            _off(axes[2 * r + 1, i])
        axes[2 * r, 0].set_ylabel(name, fontsize=10)
    if class_ids is not None:
        fig.legend(handles=legend_handles(class_ids), loc="lower center", ncol=min(len(class_ids), 9), fontsize=8)
    fig.tight_layout(rect=(0, 0.05 if class_ids is not None else 0, 1, 1))
    return fig


def class_frequencies(datasets: Mapping[str, object], class_ids: Sequence[int], max_images: int = 200):
    """Share of labelled pixels per class (%) in each dataset, as a DataFrame (classes x datasets)."""
    import pandas as pd

    out = {}
    for name, ds in datasets.items():
        counts = np.zeros(256, np.int64)
        for i in range(min(len(ds), max_images)):
            _, label = ds.load(i)
            counts += np.bincount(label.ravel(), minlength=256)
        labelled = counts[:255].sum()
        out[name] = [100 * counts[c] / labelled for c in class_ids]
    return pd.DataFrame(out, index=[CITYSCAPES_CLASSES[c] for c in class_ids]).round(2)


def channel_statistics(datasets: Mapping[str, object], max_images: int = 100):
    """Mean and standard deviation of each RGB channel (0-255) per dataset: the first-order style."""
    import pandas as pd

    rows = {}
    for name, ds in datasets.items():
        pixels = np.concatenate([ds.load(i)[0].reshape(-1, 3) for i in range(min(len(ds), max_images))]).astype(float)
        rows[name] = {**{f"mean {c}": pixels[:, k].mean() for k, c in enumerate("RGB")},
                      **{f"std {c}": pixels[:, k].std() for k, c in enumerate("RGB")}}
    return pd.DataFrame(rows).T.round(1)


def iou_bars(scores: Mapping[str, object], *, title: str = "per-class IoU (%)") -> Figure:
    """Grouped bars of per-class IoU for several named :class:`~udalib.eval.metrics.Scores`.

    Classes that are NaN in every result (absent from labels and predictions) are left out.
    """
    import pandas as pd
    import seaborn as sns

    frames = []
    for name, s in scores.items():
        frames.append(pd.DataFrame({"class": s.class_names, "IoU": s.iou, "result": name}))
    df = pd.concat(frames).dropna(subset=["IoU"])
    keep = df.groupby("class")["IoU"].count().index
    df = df[df["class"].isin(keep)]
    fig, ax = plt.subplots(figsize=(max(6, 0.9 * len(keep) + 2), 3.2))
    sns.barplot(df, x="class", y="IoU", hue="result", ax=ax)
    ax.set_ylim(0, 100)
    ax.set_title(title)
    ax.set_xlabel("")
    ax.set_ylabel("IoU (%)")
    ax.tick_params(axis="x", rotation=30)
    _legend_below(fig, ax, df["result"].nunique())
    return fig


def _legend_below(fig: Figure, ax, entries: int) -> None:
    """The axes' legend moved under the figure, outside the axes, so that it covers no bar."""
    handles, labels = ax.get_legend_handles_labels()
    if ax.get_legend() is not None:
        ax.get_legend().remove()
    ncol = min(entries, 6)
    rows = -(-entries // ncol)
    extra = 0.25 * rows + 0.1  # inches of figure added under the axes for the legend
    fig.set_figheight(fig.get_figheight() + extra)
    fig.legend(handles, labels, loc="lower center", ncol=ncol, fontsize=8, frameon=False)
    fig.tight_layout(rect=(0, extra / fig.get_figheight(), 1, 1))


@torch.no_grad()
def show_predictions(models: Mapping[str, torch.nn.Module], dataset, indices: Sequence[int], *,
                     normalization: str = "imagenet", class_ids: Sequence[int] | None = None,
                     title: str = "") -> Figure:
    """Rows: images; columns: image, ground truth, then each named model's prediction; ``title`` above them all
    (e.g. which domain the images come from)."""
    cols = 2 + len(models)
    fig, axes = plt.subplots(len(indices), cols, figsize=(2.4 * cols, 1.4 * len(indices) + 0.6), squeeze=False)
    for r, idx in enumerate(indices):
        image, label, *_ = dataset[idx]
        axes[r, 0].imshow(denormalize(image, normalization))
        axes[r, 1].imshow(colorize(label.numpy()))
        for c, (name, model) in enumerate(models.items(), start=2):
            was_training = model.training
            model.eval()
            pred = model(image[None])["out"].argmax(1)[0].numpy()
            model.train(was_training)
            axes[r, c].imshow(colorize(pred))
            if r == 0:
                axes[r, c].set_title(name, fontsize=9)
        for ax in axes[r]:
            _off(ax)
    axes[0, 0].set_title("image", fontsize=9)
    axes[0, 1].set_title("ground truth", fontsize=9)
    if class_ids is not None:
        fig.legend(handles=legend_handles(class_ids), loc="lower center", ncol=min(len(class_ids), 9), fontsize=8)
    if title:
        fig.suptitle(title, fontsize=10)
    fig.tight_layout(rect=(0, 0.07 if class_ids is not None else 0, 1, 1))
    return fig


# What each column of a run's metrics.csv holds (udalib.train.fit logs the learning rate, the methods their losses),
# for the panels of training_curves: key -> (title, y-axis label). A key not listed is shown under its own name.
LOG_KEYS: dict[str, tuple[str, str]] = {
    "seg": ("source segmentation loss (CE)", "loss"),
    "lr": ("learning rate (poly schedule)", "learning rate"),
    "ent": ("target entropy loss", "loss"),
    "entropy": ("target output loss (image-wise weighted max-square)", "loss"),
    "target": ("target loss (the method's own term)", "loss"),
    "guidance": ("multi-level guidance loss (CE, auxiliary head)", "loss"),
    "adv_out": ("adversarial loss, output level", "loss"),
    "adv_aux": ("adversarial loss, auxiliary level", "loss"),
    "d_out": ("discriminator loss, output level", "loss"),
    "d_aux": ("discriminator loss, auxiliary level", "loss"),
    "cluster": ("clustering loss (pull to own centroid − push from others)", "loss"),
    "ortho": ("orthogonality loss of the class centroids", "loss"),
    "sparse": ("sparsity loss of the class centroids", "loss"),
    "causality": ("dual causality loss (SNR blocks)", "loss"),
    "stage_ce": ("segmentation loss of the SNR blocks' heads (CE)", "loss"),
    "weak": ("weak-label loss (image-level classes)", "loss"),
    "pseudo_kept": ("target pixels with a pseudo-label", "share of pixels"),
    "source_images": ("source images in the batch", "images"),
    "target_batches": ("target batches seen", "batches"),
    "seconds": ("wall time", "seconds"),
}


def log_key_title(key: str) -> str:
    """The words for a logged key (:data:`LOG_KEYS`); an unknown key is its own title."""
    return LOG_KEYS.get(key, (key, key))[0]


def training_curves(histories: Mapping[str, object], keys: Sequence[str] = ("seg",),
                    reference: Mapping[str, tuple[float, str]] | None = None, *,
                    titles: Mapping[str, str] | None = None) -> Figure:
    """Loss curves (one panel per logged key) for several named runs' ``metrics.csv`` DataFrames.

    Each panel is titled in words (:data:`LOG_KEYS`, or ``titles``: ``{key: title}``; an unknown key keeps its
    name), with "training step" on the x axis and the quantity on the y axis. ``reference``: ``{key: (value,
    label)}``, a dashed horizontal line on that key's panel, e.g. a discriminator's chance level
    ``{"d_out": (math.log(2), "chance, log 2")}``."""
    reference, titles = reference or {}, titles or {}
    fig, axes = plt.subplots(1, len(keys), figsize=(4.5 * len(keys), 3.2), squeeze=False)
    for ax, key in zip(axes[0], keys):
        for name, df in histories.items():
            if key in df:
                ax.plot(df["step"], df[key], label=name)
        if key in reference:
            value, text = reference[key]
            ax.axhline(value, color="grey", linestyle="--", linewidth=1, label=text)
        ax.set_xlabel("training step")
        ax.set_ylabel(LOG_KEYS.get(key, (key, key))[1])
        ax.set_title(titles.get(key, log_key_title(key)), fontsize=10)
        ax.legend(fontsize=8)
    fig.tight_layout()
    return fig


def class_mean_colours(datasets: Mapping[str, object], class_ids: Sequence[int], max_images: int = 100):
    """Mean RGB colour (0-255) of each class's pixels, per dataset: ``{name: (len(class_ids), 3) array}``."""
    out = {}
    for name, ds in datasets.items():
        sums, counts = np.zeros((256, 3)), np.zeros(256)
        for i in range(min(len(ds), max_images)):
            image, label = ds.load(i)
            flat = label.ravel()
            np.add.at(sums, flat, image.reshape(-1, 3))
            counts += np.bincount(flat, minlength=256)
        out[name] = sums[list(class_ids)] / np.maximum(counts[list(class_ids)], 1)[:, None]
    return out


def colour_swatches(colours: Mapping[str, np.ndarray], class_ids: Sequence[int]) -> Figure:
    """One row of colour patches per dataset, one column per class (from :func:`class_mean_colours`)."""
    fig, ax = plt.subplots(figsize=(0.9 * len(class_ids) + 1.5, 0.5 * len(colours) + 0.8))
    grid = np.stack([colours[name] for name in colours]) / 255
    ax.imshow(grid, aspect="auto")
    ax.set_yticks(range(len(colours)), list(colours))
    ax.set_xticks(range(len(class_ids)), [CITYSCAPES_CLASSES[c] for c in class_ids], rotation=30)
    ax.set_title("mean colour of each class")
    fig.tight_layout()
    return fig


def gradient_magnitudes(losses: Mapping[str, object], probs: np.ndarray | None = None):
    """|d loss / d p| for a binary pixel whose top class has probability ``p`` (0.5 to 1), per named loss.

    The logits are ``(log p, log(1 - p))``, so the softmax is exactly ``(p, 1 - p)`` and autograd gives the
    derivative of the very function the library trains with along ``p`` (no hand-written formula). This is the
    paper's Fig. 2 argument: entropy's gradient, ``log(p / (1 - p))``, grows without bound as ``p -> 1``, so
    already-confident (easy) pixels dominate; max-square's, ``2p - 1``, grows linearly. Returns a DataFrame
    indexed by ``p``.
    """
    import pandas as pd

    probs = np.linspace(0.5, 0.999, 200) if probs is None else probs
    out = {}
    for name, loss in losses.items():
        p = torch.tensor(probs, dtype=torch.double, requires_grad=True)
        logits = torch.stack([p.log(), (1 - p).log()], dim=1)[..., None, None]  # (P, 2, 1, 1)
        total = sum(loss(logits[i:i + 1]) for i in range(len(probs)))  # one "image" per p
        (grad,) = torch.autograd.grad(total, p)
        out[name] = grad.abs().numpy()
    return pd.DataFrame(out, index=pd.Index(probs, name="p"))


def gradient_plot(grads, *, normalize: bool = True) -> Figure:
    """Plot :func:`gradient_magnitudes`; ``normalize`` scales each curve to a maximum of 1."""
    fig, ax = plt.subplots(figsize=(5, 3.2))
    for name in grads:
        y = grads[name] / grads[name].max() if normalize else grads[name]
        ax.plot(grads.index, y, label=name)
    ax.set_xlabel("probability of the predicted class, p")
    ax.set_ylabel("|d loss / d p|" + (" (scaled to max 1)" if normalize else ""))
    ax.legend()
    fig.tight_layout()
    return fig


@torch.no_grad()
def show_entropy(model: torch.nn.Module, dataset, indices: Sequence[int], *, normalization: str = "imagenet") -> Figure:
    """Rows: images; columns: image, prediction, per-pixel entropy (natural log) of the main head, on a fixed
    scale from 0 (certain) to log C (uniform over the C classes)."""
    from ..losses import entropy_map

    fig, axes = plt.subplots(len(indices), 3, figsize=(7.5, 1.4 * len(indices) + 0.4), squeeze=False)
    was_training = model.training
    model.eval()
    for r, idx in enumerate(indices):
        image = dataset[idx][0]
        logits = model(image[None])["out"]
        axes[r, 0].imshow(denormalize(image, normalization))
        axes[r, 1].imshow(colorize(logits.argmax(1)[0].numpy()))
        im = axes[r, 2].imshow(entropy_map(logits)[0].numpy(), cmap="magma", vmin=0, vmax=np.log(logits.shape[1]))
        for ax in axes[r]:
            _off(ax)
    model.train(was_training)
    for ax, title in zip(axes[0], ("image", "prediction", "entropy H (nats)")):
        ax.set_title(title, fontsize=9)
    classes = logits.shape[1]
    _colour_bar(fig, im, f"entropy H (nats)\n0 to log {classes} = {np.log(classes):.2f}", ax=axes[:, 2].tolist(),
                shrink=0.8)
    return fig


@torch.no_grad()
def domain_probability(model: torch.nn.Module, discriminator: torch.nn.Module, images: torch.Tensor, *,
                       level: str = "out", gan: str = "vanilla") -> torch.Tensor:
    """AdaptSegNet's discriminator view: its belief that each patch of the model's softmax map is from the target.

    ``sigmoid(D)`` for the vanilla GAN (label convention: source 0, target 1); for LS-GAN, whose logits regress
    the labels directly, ``D`` clipped to ``[0, 1]``. Both networks run in eval mode (restored afterwards).

    Shape:
        images ``(N, 3, H, W)`` -> ``(N, h, w)`` with ``h, w`` about ``H/32, W/32`` (one value per D patch).
    """
    states = model.training, discriminator.training
    model.eval()
    discriminator.eval()
    logits = discriminator(model(images)[level].softmax(dim=1))[:, 0]
    model.train(states[0])
    discriminator.train(states[1])
    return logits.sigmoid() if gan == "vanilla" else logits.clamp(0, 1)


def show_domain_confidence(players: Mapping[str, tuple], dataset, indices: Sequence[int], *, level: str = "out",
                           gan: str = "vanilla", normalization: str = "imagenet") -> Figure:
    """Rows: images; columns: the image, then for each named ``(model, discriminator)`` pair the discriminator's
    P(target) per patch (:func:`domain_probability`) over the image: red = "target", blue = "source"."""
    cols = 1 + len(players)
    fig, axes = plt.subplots(len(indices), cols, figsize=(2.8 * cols, 1.5 * len(indices) + 0.5), squeeze=False)
    for r, idx in enumerate(indices):
        image = dataset[idx][0]
        shown = denormalize(image, normalization)
        axes[r, 0].imshow(shown)
        for c, (name, (model, disc)) in enumerate(players.items(), start=1):
            prob = domain_probability(model, disc, image[None], level=level, gan=gan)[0].numpy()
            ax = axes[r, c]
            ax.imshow(shown.mean(axis=2), cmap="gray")
            h, w = shown.shape[:2]
            im = ax.imshow(prob, cmap="coolwarm", vmin=0, vmax=1, alpha=0.6, extent=(0, w, h, 0),
                           interpolation="nearest")
            for (i, j), p in np.ndenumerate(prob):  # one number per discriminator patch
                ax.text((j + 0.5) * w / prob.shape[1], (i + 0.5) * h / prob.shape[0], f"{p:.2f}", ha="center",
                        va="center", fontsize=7)
            if r == 0:
                ax.set_title(name, fontsize=9)
        for ax in axes[r]:
            _off(ax)
    axes[0, 0].set_title("image", fontsize=9)
    _colour_bar(fig, im, "discriminator's P(target)\n0 source, 1 target", ax=axes[:, 1:].ravel().tolist(),
                shrink=0.8)
    return fig


def discriminator_scores(players: Mapping[str, tuple], datasets: Mapping[str, object], *, level: str = "out",
                         gan: str = "vanilla", max_images: int = 64):
    """Mean P(target) (%) that each named ``(model, discriminator)`` pair gives the images of each dataset, as a
    DataFrame (players x datasets). A discriminator that separates the domains gives source images ~0 and target
    images ~100; one that the segmenter has fooled gives both about the same."""
    import pandas as pd

    rows = {}
    for name, (model, disc) in players.items():
        rows[name] = {}
        for ds_name, ds in datasets.items():
            images = torch.stack([ds[i][0] for i in range(min(len(ds), max_images))])
            rows[name][ds_name] = 100 * domain_probability(model, disc, images, level=level, gan=gan).mean().item()
    return pd.DataFrame(rows).T.round(1)


def style_vectors(features: torch.Tensor) -> np.ndarray:
    """Per-image style of a feature map: the per-channel mean and standard deviation over space (what instance
    normalization removes). ``(N, C, H, W)`` -> ``(N, 2C)``."""
    f = features.detach().float()
    return torch.cat([f.mean(dim=(2, 3)), f.std(dim=(2, 3))], dim=1).numpy()


def domain_separability(styles: Mapping[str, np.ndarray]) -> float:
    """Accuracy (%) of a nearest-centroid rule that tells the domains apart from style vectors, with leave-one-out
    centroids (chance: 100 / number of domains; returned as such when every statistic is constant). High: the style
    statistics carry the domain."""
    names = list(styles)
    data = np.concatenate([styles[n] for n in names])
    labels = np.concatenate([np.full(len(styles[n]), i) for i, n in enumerate(names)])
    scale = data.std(axis=0)
    keep = scale > 1e-3 * max(float(np.abs(data).max()), 1e-12)  # constant statistics (e.g. after IN) carry nothing
    if not keep.any():
        return 100.0 / len(names)
    data = data[:, keep] / scale[keep]
    sums = np.stack([data[labels == i].sum(axis=0) for i in range(len(names))])
    counts = np.array([(labels == i).sum() for i in range(len(names))], dtype=float)
    correct = 0
    for x, y in zip(data, labels):
        centroids = sums.copy()
        centroids[y] -= x
        n = counts.copy()
        n[y] -= 1
        centroids /= np.maximum(n, 1)[:, None]
        correct += int(np.argmin(((centroids - x) ** 2).sum(axis=1)) == y)
    return 100.0 * correct / len(data)


def style_scatter(panels: Mapping[str, Mapping[str, np.ndarray]], *, shared_axes: bool = True) -> Figure:
    """One panel per feature kind: the per-image style vectors of each domain projected on two principal axes, with
    the nearest-centroid domain accuracy and the spread (root-mean-square distance of the images to their mean) in
    the title.

    ``shared_axes``: every panel is centred on its own median (a few odd images do not move the rest) and projected
    on the first panel's two principal axes, within the first panel's limits, so that the spreads compare at a
    glance (a panel whose styles collapse shows one spot); points beyond the limits are drawn at the edge (as
    triangles) and counted in the title. Panels of another dimension, or all of them with ``shared_axes=False``,
    use their own axes and limits."""
    items = list(panels.items())
    first = np.concatenate(list(items[0][1].values()))
    _, _, first_vt = np.linalg.svd(first - first.mean(axis=0), full_matrices=False)
    first_xy = (first - np.median(first, axis=0)) @ first_vt[:2].T
    pad = 0.08 * (first_xy.max(axis=0) - first_xy.min(axis=0) + 1e-12)
    first_lim = (first_xy.min(axis=0) - pad, first_xy.max(axis=0) + pad)
    fig, axes = plt.subplots(1, len(items), figsize=(4.2 * len(items), 4.0), squeeze=False)
    for ax, (title, styles) in zip(axes[0], items):
        data = np.concatenate(list(styles.values()))
        mean = data.mean(axis=0)
        centre = np.median(data, axis=0)
        shared = shared_axes and data.shape[1] == first.shape[1]
        if shared:
            vt, (lo, hi) = first_vt, first_lim
        else:
            _, _, vt = np.linalg.svd(data - mean, full_matrices=False)
            xy = (data - mean) @ vt[:2].T
            margin = 0.08 * (xy.max(axis=0) - xy.min(axis=0) + 1e-12)
            lo, hi = xy.min(axis=0) - margin, xy.max(axis=0) + margin
        outside = 0
        for colour, (name, st) in zip(plt.rcParams["axes.prop_cycle"].by_key()["color"] * 4, styles.items()):
            xy = (st - (centre if shared else mean)) @ vt[:2].T
            out = ((xy < lo) | (xy > hi)).any(axis=1)
            outside += int(out.sum())
            inside = np.clip(xy, lo, hi)
            ax.scatter(inside[~out, 0], inside[~out, 1], s=8, alpha=0.7, color=colour, label=name)
            ax.scatter(inside[out, 0], inside[out, 1], s=14, alpha=0.9, color=colour, marker="^")
        ax.set_xlim(lo[0], hi[0])
        ax.set_ylim(lo[1], hi[1])
        spread = float(np.sqrt(((data - mean) ** 2).sum(axis=1).mean()))
        beyond = f", {outside} beyond the view (▲ at the edge)" if outside else ""
        ax.set_title(f"{title}\ndomain told apart: {domain_separability(styles):.0f}%, spread {spread:.2g}{beyond}",
                     fontsize=9)
        which = "of the first panel" if shared and ax is not axes[0][0] else ""
        ax.set_xlabel(f"principal axis 1 {which}".strip(), fontsize=8)
        ax.set_ylabel(f"principal axis 2 {which}".strip(), fontsize=8)
        ax.tick_params(labelsize=7)
    axes[0][0].legend(fontsize=7)
    fig.tight_layout()
    return fig


def feature_projection(panels: Mapping[str, Mapping[str, dict]], class_ids: Sequence[int]) -> Figure:
    """Feature cells projected on the first two principal components of each panel, coloured by their (label)
    class in the dataset palette; one marker per domain (``o`` the first, ``x`` the second, ...).

    ``panels``: {title: {domain: :func:`udalib.eval.evaluate.feature_sample` output}}.
    """
    markers = "ox^s"
    fig, axes = plt.subplots(1, len(panels), figsize=(4.6 * len(panels), 4), squeeze=False)
    for ax, (title, domains) in zip(axes[0], panels.items()):
        data = np.concatenate([d["rows"] for d in domains.values()])
        mean = data.mean(axis=0)
        _, _, vt = np.linalg.svd(data - mean, full_matrices=False)
        for marker, (name, d) in zip(markers, domains.items()):
            keep = np.isin(d["label"], class_ids)
            xy = (d["rows"][keep] - mean) @ vt[:2].T
            colours = np.asarray(CITYSCAPES_PALETTE)[d["label"][keep]] / 255.0
            ax.scatter(xy[:, 0], xy[:, 1], c=colours, marker=marker, s=10, alpha=0.6, linewidths=0.6, label=name)
        ax.set_title(title, fontsize=9)
        ax.set_xticks([])
        ax.set_yticks([])
        ax.set_xlabel("PCA component 1 of the panel's features", fontsize=8)
        ax.set_ylabel("PCA component 2", fontsize=8)
        ax.legend(fontsize=7)
    fig.legend(handles=legend_handles(class_ids), loc="lower center", ncol=min(len(class_ids), 8), fontsize=7,
               frameon=False)
    fig.tight_layout(rect=(0, 0.08, 1, 1))
    return fig


def class_centroids_of(sample: dict, class_ids: Sequence[int]) -> np.ndarray:
    """Mean feature of each class (by label) in a :func:`~udalib.eval.evaluate.feature_sample`; NaN if absent."""
    return np.stack([sample["rows"][sample["label"] == c].mean(axis=0) if (sample["label"] == c).any()
                     else np.full(sample["rows"].shape[1], np.nan) for c in class_ids])


def cosine_similarity_matrix(centroids: np.ndarray) -> np.ndarray:
    """Pairwise cosine similarity of centroid rows (1 on the diagonal; 0 = orthogonal)."""
    unit = centroids / np.linalg.norm(centroids, axis=1, keepdims=True).clip(min=1e-12)
    return unit @ unit.T


def similarity_heatmaps(matrices: Mapping[str, np.ndarray], class_ids: Sequence[int]) -> Figure:
    """Centroid cosine-similarity matrices side by side, with the mean off-diagonal similarity in each title. A class
    with no pixel in the sample (a NaN centroid) has no similarity: its row reads "no pixels of this class"."""
    names = [CITYSCAPES_CLASSES[c] for c in class_ids]
    fig, axes = plt.subplots(1, len(matrices), figsize=(4.4 * len(matrices), 3.8), squeeze=False, layout="constrained")
    for ax, (title, m) in zip(axes[0], matrices.items()):
        im = ax.imshow(m, vmin=0, vmax=1, cmap="viridis")
        for i in np.flatnonzero(np.isnan(np.asarray(m, dtype=float)).all(axis=1)):
            ax.text((len(m) - 1) / 2, i, "no pixels of this class", ha="center", va="center", fontsize=7)
        off = m[~np.eye(len(m), dtype=bool)]
        ax.set_title(f"{title}\nmean off-diagonal cosine {np.nanmean(off):.2f}", fontsize=9)
        ax.set_xticks(range(len(names)), names, rotation=90, fontsize=7)
        ax.set_yticks(range(len(names)), names, fontsize=7)
    _colour_bar(fig, im, "cosine similarity\n0 orthogonal, 1 parallel", ax=axes[0].tolist(), shrink=0.8)
    return fig


def sparsity_histogram(centroids: Mapping[str, np.ndarray]) -> Figure:
    """Histogram of the centroid channels scaled by each centroid's largest channel (the sparsity loss's
    :math:`\\hat\\mu`): sparse centroids pile up near 0 and 1, away from 0.5."""
    fig, ax = plt.subplots(figsize=(5, 3))
    for name, c in centroids.items():
        c = c[np.isfinite(c).all(axis=1)]
        scaled = c / np.clip(c.max(axis=1, keepdims=True), 1e-12, None)
        ax.hist(scaled.ravel(), bins=20, range=(0, 1), alpha=0.5, label=name)
    ax.set_xlabel("centroid channel / its largest channel")
    ax.set_ylabel("channels")
    ax.legend(fontsize=8)
    fig.tight_layout()
    return fig


# ------------------------------------------------------------------------------ comparing runs (notebook 11)
def overlay(image: np.ndarray, label: np.ndarray, alpha: float = 0.6, *, highlight: int | None = None,
            palette: Sequence = CITYSCAPES_PALETTE) -> np.ndarray:
    """A label map in the dataset's palette blended over its image.

    .. math:: o = (1 - w)\\, x + w\\, \\mathrm{colour}(y), \\qquad
              w = \\alpha \\text{ on labelled pixels, } 0 \\text{ elsewhere}

    With ``highlight`` (a class id) only that class is coloured, and every other pixel shows the image in grey at
    half brightness, so one class stands out in every panel.

    Shape: ``image`` ``(H, W, 3)`` uint8, ``label`` ``(H, W)`` integer (255 = unlabelled) -> ``(H, W, 3)`` uint8.
    """
    if not 0 <= alpha <= 1:
        raise ValueError(f"alpha (the opacity of the labels) must lie in [0, 1], got {alpha}")
    if image.shape[:2] != label.shape:
        raise ValueError(f"image {image.shape[:2]} and label {label.shape} must have the same height and width")
    label = np.asarray(label).astype(np.int64)
    img = image.astype(np.float64)
    coloured = (label >= 0) & (label < len(palette)) if highlight is None else label == highlight
    base = img if highlight is None else np.where(coloured[..., None], img, img.mean(axis=2, keepdims=True) * 0.5)
    w = (alpha * coloured)[..., None]
    return np.round((1 - w) * base + w * colorize(label, palette)).astype(np.uint8)


def error_overlay(image: np.ndarray, label: np.ndarray, prediction: np.ndarray, *,
                  highlight: int | None = None) -> tuple[np.ndarray, float]:
    """Wrong pixels in red over the image in grey at half brightness, and the share (%) of them.

    The share is of labelled pixels (100 - pixel accuracy). With ``highlight`` (a class id), only that class's
    errors count (its missed pixels and its false alarms), as a share of the pixels labelled *or* predicted as it:
    100 - the class's IoU on this image. NaN when there is nothing to count.

    Shape: ``(H, W, 3)`` uint8, ``(H, W)`` and ``(H, W)`` integer -> ``(H, W, 3)`` uint8 and a float.
    """
    label, prediction = np.asarray(label).astype(np.int64), np.asarray(prediction).astype(np.int64)
    counted = label != IGNORE_INDEX
    if highlight is not None:
        counted &= (label == highlight) | (prediction == highlight)
    wrong = counted & (prediction != label)
    picture = np.repeat(image.astype(np.float64).mean(axis=2, keepdims=True) * 0.5, 3, axis=2)
    picture[wrong] = (255, 0, 0)
    share = 100.0 * wrong.sum() / counted.sum() if counted.any() else float("nan")
    return np.round(picture).astype(np.uint8), share


def compare_predictions(image: np.ndarray, label: np.ndarray, predictions: Mapping[str, np.ndarray], *,
                        alpha: float = 0.6, errors: bool = False, highlight: int | None = None,
                        class_ids: Sequence[int] | None = None, names: Sequence[str] = CITYSCAPES_CLASSES,
                        palette: Sequence = CITYSCAPES_PALETTE) -> Figure:
    """One image, its ground truth and each named prediction side by side, as :func:`overlay` panels.

    ``errors`` adds a row with each prediction's :func:`error_overlay` (the share of wrong pixels in its title);
    ``highlight`` colours one class only (and counts only its errors); ``class_ids`` adds a legend.
    """
    cols = 2 + len(predictions)
    rows = 2 if errors else 1
    fig, axes = plt.subplots(rows, cols, figsize=(2.6 * cols, 1.6 * rows + 0.5), squeeze=False)
    axes[0, 0].imshow(image)
    axes[0, 1].imshow(overlay(image, label, alpha, highlight=highlight, palette=palette))
    axes[0, 0].set_title("image", fontsize=9)
    axes[0, 1].set_title("ground truth", fontsize=9)
    for c, (name, pred) in enumerate(predictions.items(), start=2):
        axes[0, c].imshow(overlay(image, pred, alpha, highlight=highlight, palette=palette))
        axes[0, c].set_title(name, fontsize=9)
        if errors:
            picture, share = error_overlay(image, label, pred, highlight=highlight)
            axes[1, c].imshow(picture)
            what = f"{names[highlight]} " if highlight is not None else ""
            axes[1, c].set_title(f"{what}errors {share:.1f}%", fontsize=9)
    for ax in axes.ravel():
        _off(ax)
    if errors:
        axes[1, 0].set_axis_off()
        axes[1, 1].set_axis_off()
    if class_ids is not None:
        fig.legend(handles=legend_handles(class_ids, names, palette), loc="lower center",
                   ncol=min(len(class_ids), 10), fontsize=8)
    fig.tight_layout(rect=(0, 0.1 if class_ids is not None else 0, 1, 1))
    return fig


def entropy_maps(image: np.ndarray, maps: Mapping[str, np.ndarray]) -> Figure:
    """The image and each named per-pixel normalised entropy map (:math:`H / \\log C`, 0 = certain, 1 = uniform)
    on one colour scale."""
    cols = 1 + len(maps)
    fig, axes = plt.subplots(1, cols, figsize=(2.6 * cols + 0.8, 2.1), squeeze=False)
    axes[0, 0].imshow(image)
    axes[0, 0].set_title("image", fontsize=9)
    im = None
    for ax, (name, m) in zip(axes[0, 1:], maps.items()):
        im = ax.imshow(m, cmap="magma", vmin=0, vmax=1)
        ax.set_title(f"{name}\nmean {np.mean(m):.2f}", fontsize=9)
    for ax in axes[0]:
        _off(ax)
    if im is not None:
        _colour_bar(fig, im, "entropy H / log C\n0 certain, 1 uniform", ax=axes[0].tolist(), shrink=0.8)
    return fig


def class_iou_bars(long, *, order: Sequence[str] | None = None, title: str = "per-class IoU (%)") -> Figure:
    """Per-class IoU bars, one colour per name, the mean over seeds with a bar for the standard deviation.

    ``long``: a DataFrame with columns ``name``, ``seed``, ``class``, ``IoU``
    (:func:`udalib.results.class_iou_long`); ``order``: the names, in the order of the bars.
    """
    import seaborn as sns

    classes = list(dict.fromkeys(long["class"]))
    fig, ax = plt.subplots(figsize=(max(6, 0.9 * len(classes) + 2), 3.4))
    sns.barplot(long, x="class", y="IoU", hue="name", hue_order=order, errorbar="sd", ax=ax, err_kws={"linewidth": 1})
    ax.set_ylim(0, 100)
    ax.set_title(title)
    ax.set_xlabel("")
    ax.set_ylabel("IoU (%), mean ± std over seeds")
    ax.tick_params(axis="x", rotation=30)
    _legend_below(fig, ax, len(order) if order is not None else long["name"].nunique())
    return fig


def iou_heatmap(table, *, title: str = "per-class IoU (%)", center: float | None = None,
                limits: tuple[float, float] | None = None, cap: float | None = None,
                label: str | None = None) -> Figure:
    """Method x class heat map of a DataFrame (rows: methods, columns: classes), every cell annotated; NaN cells
    stay blank.

    The colour scale is fitted to the data (its smallest to its largest value), so that differences of a few points
    show; ``limits`` fixes it instead (e.g. ``(0, 100)``). ``center`` (e.g. 0 for gains over a baseline) switches to
    a diverging colour map symmetric around it, out to the largest distance from it or to ``cap`` if that is
    smaller: cells beyond ``cap`` take the end colours (the colour bar's arrows mark them; their text gives the
    value), so that one row of large changes does not wash out the small ones.

    ``label``: the colour bar's quantity with its units (default "IoU (%)", or "IoU change (points)" with
    ``center``); the scale is added to it where this function fixes it (``limits``, the centre, the cap)."""
    import seaborn as sns

    data = table.astype(float)
    values = data.to_numpy()
    finite = values[np.isfinite(values)]
    if cap is not None and cap <= 0:
        raise ValueError(f"cap (the largest distance from center that gets its own colour) must be > 0, got {cap}")
    extend = "neither"
    if center is not None:
        reach = float(np.abs(finite - center).max()) if finite.size else 1.0
        lim = max(reach, 1e-9) if cap is None else min(cap, max(reach, 1e-9))
        if reach > lim:
            extend = "both"
        kwargs = {"cmap": "RdBu", "center": center, "vmin": center - lim, "vmax": center + lim}
        label = f"{label or 'IoU change (points)'}\ncentred at {center:g}"
        if reach > lim:
            label += f", capped at ±{lim:g}"
    else:
        lo, hi = limits if limits is not None else ((finite.min(), finite.max()) if finite.size else (0.0, 100.0))
        kwargs = {"cmap": "viridis", "vmin": lo, "vmax": hi if hi > lo else lo + 1}
        label = label or "IoU (%)"
        if limits is not None:
            label += f"\nscale {lo:g} to {hi:g}"
    fig, ax = plt.subplots(figsize=(0.85 * data.shape[1] + 3, 0.42 * data.shape[0] + 1.8))
    sns.heatmap(data, annot=True, fmt=".1f", annot_kws={"fontsize": 8}, ax=ax, cbar_kws={"extend": extend},
                **kwargs)
    ax.collections[0].colorbar.set_label(label, fontsize=8)
    ax.set_title(title)
    ax.set_xlabel("")
    ax.set_ylabel("")
    ax.tick_params(axis="y", rotation=0)  # row names side by side, never stacked into one another
    plt.setp(ax.get_xticklabels(), rotation=30, ha="right")
    fig.tight_layout()
    return fig


def confusion_matrix_plot(cm, class_names: Sequence[str] = CITYSCAPES_CLASSES, *, title: str = "") -> Figure:
    """A confusion matrix (rows: ground truth, columns: prediction) as row percentages: cell ``(i, j)`` is the share
    of class ``i``'s pixels predicted as ``j``, so the diagonal is each class's recall. Classes absent from both
    the labels and the predictions are left out."""
    import seaborn as sns

    cm = np.asarray(cm, dtype=np.float64)
    if cm.ndim != 2 or cm.shape[0] != cm.shape[1] or cm.shape[0] != len(class_names):
        raise ValueError(f"confusion matrix of shape {cm.shape} needs a square matrix with one row per class "
                         f"({len(class_names)} names)")
    keep = (cm.sum(axis=0) + cm.sum(axis=1)) > 0
    rows = cm[keep][:, keep]
    share = 100 * rows / np.maximum(rows.sum(axis=1, keepdims=True), 1)
    names = [n for n, k in zip(class_names, keep) if k]
    fig, ax = plt.subplots(figsize=(0.55 * len(names) + 2.5, 0.5 * len(names) + 1.2))
    sns.heatmap(share, annot=True, fmt=".0f", annot_kws={"fontsize": 7}, cmap="Blues", vmin=0, vmax=100,
                xticklabels=names, yticklabels=names, ax=ax)
    ax.collections[0].colorbar.set_label("% of the true class's pixels\nscale 0 to 100", fontsize=8)
    ax.set_xlabel("predicted")
    ax.set_ylabel("ground truth")
    ax.set_title(title)
    fig.tight_layout()
    return fig


def atlas_heatmap(mean, std, ahead=None, *, title: str = "margin over max(AdaBN, λ=0 control), mIoU points",
                  cap: float = 5.0) -> Figure:
    """Method x factor heat map of the atlas (:func:`udalib.results.atlas_margins`): colour is the mean margin
    on a diverging scale centred at 0 (red: the method loses to its controls, blue: it gains), symmetric around 0
    so that equal gains and losses look equally strong, and capped at ``cap`` points so that one extreme cell does
    not wash out the rest (the colour bar's arrows mark cells beyond it; their text gives the value). Each cell reads
    "mean ± std" and, if given, seeds ahead."""
    mean = mean.astype(float)
    std = std.reindex_like(mean).astype(float)
    values = mean.to_numpy()
    lim = min(cap, max(1.0, float(np.nanmax(np.abs(values))))) if np.isfinite(values).any() else 1.0
    fig, ax = plt.subplots(figsize=(1.25 * mean.shape[1] + 3, 0.5 * mean.shape[0] + 1.6))
    im = ax.imshow(np.ma.masked_invalid(values), cmap="RdBu", vmin=-lim, vmax=lim, aspect="auto")
    for i in range(mean.shape[0]):
        for j in range(mean.shape[1]):
            if not np.isfinite(values[i, j]):
                continue
            text = f"{round(values[i, j], 1) + 0.0:+.1f}±{std.iat[i, j]:.1f}"  # + 0.0: no "-0.0"
            if ahead is not None:
                text += f"\n{ahead.iat[i, j]}"
            strong = abs(values[i, j]) > 0.6 * lim
            ax.text(j, i, text, ha="center", va="center", fontsize=7, color="white" if strong else "black")
    ax.set_xticks(range(mean.shape[1]), list(mean.columns), rotation=30, ha="right")
    ax.set_yticks(range(mean.shape[0]), list(mean.index))
    beyond = np.isfinite(values) & (np.abs(values) > lim)
    _colour_bar(fig, im, f"mean margin (mIoU points)\nscale ±{lim:g}", ax=ax, shrink=0.8,
                extend="both" if beyond.any() else "neither")
    ax.set_title(title, fontsize=10)
    fig.tight_layout()
    return fig
