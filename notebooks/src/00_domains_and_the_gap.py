# ---
# jupyter:
#   kernelspec:
#     display_name: Python 3
#     language: python
#     name: python3
# ---

# %% [markdown]
# # 00 · MiniCity: two domains and the gap between them
#
# **What you will learn.** Unsupervised domain adaptation (UDA) trains on a *labelled source* domain and must work on an
# *unlabelled target* domain. Here you meet the benchmark every udalib notebook runs on: **MiniCity**, a procedurally
# generated street-scene world with
#
# * a labelled **source** domain with a clean, synthetic-looking render (it plays GTA5 / SYNTHIA),
# * an unlabelled **target** domain with a photo-like render of the *same kind of scenes* (it plays Cityscapes),
# * four target **cities** (Rome, Rio, Tokyo, Taipei) with their own light and colour (they play NTHU CrossCity).
#
# You will see *what* differs between the domains (appearance) and *what does not* (layout and classes), because
# that design is what makes the gap both visible and closable.
#
# **Runtime:** about 10 s on a 2-core CPU (the very first run also writes MiniCity to `data/`, about 20 s more).

# %% tags=["parameters"]
SEED: int = 0  # which images to show
N_SHOW: int = 4  # images per domain in the figures
SOURCE: str = "minicity:source"  # labelled source domain; full scale: "gta5" or "synthia"
TARGET: str = "minicity:target"  # target domain; full scale: "cityscapes"
CITIES: str = "minicity:rome,minicity:rio,minicity:tokyo,minicity:taipei"  # full scale: "nthu:rome,nthu:rio,..."
DATA_ROOT: str = ""  # folder written by data_scripts/ (full scale only)
MAX_IMAGES: int = 150  # images per domain used for the statistics

# %% [markdown]
# ## Setup
#
# MiniCity is generated once and cached under `data/` (set `UDALIB_DATA` to put it elsewhere). Generation is
# deterministic: image *i* of a split is the same on every machine.

# %%
import numpy as np
import pandas as pd

from udalib import data, viz
from udalib.data import minicity

ROOT = DATA_ROOT or None
if SOURCE.startswith("minicity"):
    print("MiniCity folder:", minicity.generate())
source = data.open_dataset(SOURCE, "train", root=ROOT)
target = data.open_dataset(TARGET, "val", root=ROOT)  # labelled target images: for *looking* and evaluation only
cities = {spec.split(":")[-1]: data.open_dataset(spec, "val", root=ROOT) for spec in CITIES.split(",") if spec}
CLASS_IDS = list(minicity.MINICITY_TRAINIDS) if SOURCE.startswith("minicity") else list(range(19))
print(source, target, *cities.values(), sep="\n")

# %% [markdown]
# ## The domains side by side
#
# Each pair of rows shows images and their labels (Cityscapes colours). The source is flat-shaded and saturated; the
# target is overcast, textured, noisy and slightly blurred. The target *training* split has **no labels on disk**:
# adaptation methods only ever see its pixels. The labelled target `val` split shown here is for evaluation.

# %%
viz.plots.show_samples({"source": source, "target": target, **cities}, n=N_SHOW, class_ids=CLASS_IDS);

# %% [markdown]
# ## What stays the same: layout and classes
#
# Every domain draws its scenes from one layout distribution (horizon, road perspective, building blocks, trees,
# poles with signs, people, cars). So the **share of pixels per class**, `p(y)`, is about the same in source and
# target: this is a pure *covariate shift*, the assumption all five methods of this course make.

# %%
freq = viz.plots.class_frequencies({"source": source, "target": target}, CLASS_IDS, max_images=MAX_IMAGES)
freq["difference"] = (freq["target"] - freq["source"]).round(2)
freq

# %%
# the teaching claim, checked: no class's share moves by more than a few points between the domains
assert freq["difference"].abs().max() < 5, freq

# %% [markdown]
# ## What changes: appearance
#
# The generator describes each domain by a `Look`. Every field is one designed ingredient of the shift:

# %%
viz.show_source(minicity.Look)

# %%
looks = pd.DataFrame({name: {k: v for k, v in vars(look).items() if k not in ("name", "palette")}
                      for name, look in minicity.LOOKS.items()})
looks

# %% [markdown]
# **First-order statistics** (the per-channel mean and spread of the pixels) differ between the domains. This part
# of the shift is what *AdaBN* (re-estimating BatchNorm statistics on target images, notebook 01) can undo without
# any training. It is also why every MiniCity table puts AdaBN next to each method.

# %%
viz.plots.channel_statistics({"source": source, "target": target, **cities}, max_images=MAX_IMAGES)

# %% [markdown]
# **Class colours move, and some move onto another class's colour.** The target sky is pale grey-white instead of
# blue, the concrete buildings come close to the source sidewalk, the olive foliage moves away from the source
# green. A model that learned "blue means sky" on the source will be wrong on the target; this part of the shift
# is *not* a per-channel statistic, so BatchNorm re-estimation alone cannot fix it.

# %%
colours = viz.plots.class_mean_colours({"source": source, "target": target, **cities}, CLASS_IDS,
                                       max_images=MAX_IMAGES)
viz.plots.colour_swatches(colours, CLASS_IDS);

# %%
shift = pd.DataFrame({name: np.linalg.norm(colours[name] - colours["source"], axis=1).round(1) for name in colours},
                     index=[data.labels.CITYSCAPES_CLASSES[c] for c in CLASS_IDS])
shift  # distance of each class's mean colour from its source colour (0-255 scale)

# %% [markdown]
# ## The shift, one factor at a time
#
# The target is composed of **named shift factors** (`minicity.SHIFT_FACTORS`), each a change of the source's look
# or scene with the real-world shift it stands for. `minicity:target` applies `minicity.TARGET_FACTORS`; any other
# mix is a domain of its own, `minicity:target-<factor>[+<factor>...]`, that any `Experiment` can adapt to. Those
# domains share the target's streets image for image (unless a factor changes the scene), so each column below is
# one street under each factor alone.

# %%
factors = pd.DataFrame({name: {"analogue": f.analogue, "changes": ", ".join([*f.look, *f.scene])}
                        for name, f in minicity.SHIFT_FACTORS.items()}).T
factors

# %%
import matplotlib.pyplot as plt

# `graded` scales the palette and texture factors, so it is shown with them
rows = {name: minicity.factor_domain(name) for name in minicity.SHIFT_FACTORS if name != "graded"}
rows |= {"palette+texture+graded": minicity.factor_domain(("palette", "texture", "graded")),
         "target (composite)": "target"}
streets = range(4)
fig, axes = plt.subplots(len(rows), len(streets), figsize=(2.2 * len(streets), 1.25 * len(rows)), squeeze=False)
for r, (name, domain) in enumerate(rows.items()):
    for c, i in enumerate(streets):
        axes[r, c].imshow(minicity.make_sample(domain, "val", i)[0])
        axes[r, c].set_xticks([])
        axes[r, c].set_yticks([])
    axes[r, 0].set_ylabel(name, rotation=0, ha="right", va="center")
fig.suptitle("minicity:target-<factor>/val, images 0-3", y=1.0)
fig.tight_layout()

# %% [markdown]
# ## Why this gap can be closed
#
# Shapes and context are shared: the sky is always at the top, the road is a wedge at the bottom, cars sit on
# the road, people stand on the sidewalk. A model that is *partly* right on the target, and confident where it is
# right, gives an adaptation method something to build on:
#
# * **entropy minimisation / max-square** (notebooks 03–04) push the target predictions to be confident,
# * **adversarial alignment** (04) makes target outputs look like source outputs,
# * **style normalisation** (05) removes per-instance style statistics,
# * **clustered embeddings** (06) pull target features to the source class centroids,
# * **self-training** (07) trains on the model's own most confident target predictions.
#
# Notebook 01 measures the gap: a source-only model against a target-supervised oracle.

# %% [markdown]
# ## Summary
#
# * MiniCity's source and target share their layout and classes (`p(y)` is the same) and differ in appearance.
# * Part of the appearance shift is first-order statistics (AdaBN-fixable); part is class colours crossing over
#   and texture, which needs adaptation.
# * The four cities are further variations of the target look.
#
# ## Exercises
#
# 1. Change `minicity.TARGET_LOOK` (e.g. `saturation=1.0, texture=0.0`) in a scratch cell, render a few images with
#    `minicity.make_sample("target", "val", i)` and look at how much of the shift is left.
# 2. Which city is closest to the source by the colour-distance table? Predict which city will be easiest to adapt
#    to, and check in notebook 09.
#
# ## Run at full scale
#
# The same notebook tours the real datasets once `data_scripts/` has prepared them (see the README):
#
# ```bash
# papermill notebooks/00_domains_and_the_gap.ipynb runs/notebooks/00_gta5_cityscapes.ipynb \
#     -p SOURCE gta5 -p TARGET cityscapes -p CITIES "nthu:rome,nthu:rio,nthu:tokyo,nthu:taipei" \
#     -p DATA_ROOT /data/prepared -p MAX_IMAGES 500
# ```

# %% [markdown]
# ## References
#
# * S. R. Richter, V. Vineet, S. Roth, V. Koltun. *Playing for Data: Ground Truth from Computer Games.* ECCV 2016
#   (arXiv 1608.02192): GTA5, the synthetic source MiniCity's source domain plays.
# * G. Ros, L. Sellart, J. Materzynska, D. Vazquez, A. M. Lopez. *The SYNTHIA Dataset: A Large Collection of
#   Synthetic Images for Semantic Segmentation of Urban Scenes.* CVPR 2016.
# * M. Cordts et al. *The Cityscapes Dataset for Semantic Urban Scene Understanding.* CVPR 2016 (arXiv 1604.01685):
#   the real target MiniCity's target domain plays.
# * Y.-H. Chen, W.-Y. Chen, Y.-T. Chen, B.-C. Tsai, Y.-C. F. Wang, M. Sun. *No More Discrimination: Cross City
#   Adaptation of Road Scene Segmenters.* ICCV 2017 (arXiv 1704.08509): NTHU CrossCity, the four cities.
# * How the reference implementations read these datasets, `ZJULearning/MaxSquareLoss` (commit 2fbc18f):
#   `datasets/gta5_Dataset.py:16` (`GTA5_Dataset`, its label-id to train-id map at line 54),
#   `datasets/cityscapes_Dataset.py:42` (`City_Dataset`, the map at line 88), `datasets/crosscity_Dataset.py:16`
#   (`CrossCity_Dataset`, the 13 shared classes at line 63).
