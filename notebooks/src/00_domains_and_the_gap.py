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
# **Runtime:** seconds on a 2-core CPU; the very first run also writes MiniCity to `data/`. The last cell prints this
# run's time.

# %% tags=["parameters"]
SEED: int = 0  # which streets the shift-factor figure and exercise 1 show (images N_SHOW * SEED onwards)
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
import time

import numpy as np
import pandas as pd
from IPython.display import Markdown, display

from udalib import data, viz
from udalib.data import minicity

START = time.perf_counter()
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
# poles with signs, people, cars). So the **share of pixels per class**, `p(y)`, should be about the same in source
# and target: a pure *covariate shift*, the assumption every adaptation method of this course makes. The table
# checks it.

# %%
freq = viz.plots.class_frequencies({"source": source, "target": target}, CLASS_IDS, max_images=MAX_IMAGES)
freq["difference"] = (freq["target"] - freq["source"]).round(2)
freq

# %%
# the teaching claim, checked: no class's share moves by more than a few points between the domains (MiniCity is
# generated deterministically, so no parameter of this notebook but the datasets changes it)
largest = freq["difference"].abs().idxmax()
display(Markdown(f"The largest change of a class's share between source and target: {freq['difference'][largest]:+.2f} "
                 f"points ({largest}, {freq['source'][largest]:.1f} % of the source pixels)."))
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
# **First-order statistics** (the per-channel mean and spread of the pixels, 0-255) of each domain. The part of
# the shift that lives in them is what *AdaBN* (re-estimating BatchNorm statistics on target images, notebook 01)
# can undo without any training. It is also why every MiniCity table puts AdaBN next to each method.

# %%
stats = viz.plots.channel_statistics({"source": source, "target": target, **cities}, max_images=MAX_IMAGES)
moved = (stats.loc["target"] - stats.loc["source"]).round(1)
display(Markdown(f"Target minus source: {', '.join(f'{k} {v:+.1f}' for k, v in moved.items())}."))
stats

# %% [markdown]
# **Class colours move, and some move onto another class's colour.** The generator paints the target sky pale
# grey-white instead of blue, its buildings in grey concrete, its foliage olive instead of green (`minicity.Look`'s
# palette). A model that learned "blue means sky" on the source will be wrong on the target; this part of the shift
# is *not* a per-channel statistic, so BatchNorm re-estimation alone cannot fix it. The swatches show each class's
# mean colour per domain, and the line under them names the target classes whose mean colour lies nearer another
# class's source colour than their own.

# %%
colours = viz.plots.class_mean_colours({"source": source, "target": target, **cities}, CLASS_IDS,
                                       max_images=MAX_IMAGES)
viz.plots.colour_swatches(colours, CLASS_IDS);
names = [data.labels.CITYSCAPES_CLASSES[c] for c in CLASS_IDS]
distance = np.linalg.norm(colours["target"][:, None] - colours["source"][None], axis=2)  # (target class, source class)
crossed = {names[i]: names[j] for i, j in enumerate(distance.argmin(axis=1)) if i != j}
display(Markdown("Target classes whose mean colour is nearest another class's source colour: "
                 + (", ".join(f"{k} (nearest: source {v})" for k, v in crossed.items()) or "none") + "."))

# %%
shift = pd.DataFrame({name: np.linalg.norm(colours[name] - colours["source"], axis=1).round(1) for name in colours},
                     index=[data.labels.CITYSCAPES_CLASSES[c] for c in CLASS_IDS])
shift  # distance of each class's mean colour from its source colour (0-255 scale)

# %% [markdown]
# ## The shift, one factor at a time
#
# The target is composed of **named shift factors** (`minicity.SHIFT_FACTORS`): a *shift factor* is one change of
# the source's look or scene, with the real-world shift it stands for. `minicity:target` is the **composite** of the
# factors in `minicity.TARGET_FACTORS`, applied in order; any other mix is a domain of its own,
# `minicity:target-<factor>[+<factor>...]`, that any `Experiment` can adapt to. Those domains share the target's
# streets image for image (unless a factor changes the scene), so each column below is one street under each factor
# alone. The **atlas** (`benchmarks/minicity_atlas.py`, read in notebooks 03-08 and 11) trains every method with
# its controls on each factor alone, to see which kind of shift each method can close.

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
streets = range(N_SHOW * SEED, N_SHOW * (SEED + 1))
fig, axes = plt.subplots(len(rows), len(streets), figsize=(2.2 * len(streets), 1.25 * len(rows)), squeeze=False)
for r, (name, domain) in enumerate(rows.items()):
    for c, i in enumerate(streets):
        axes[r, c].imshow(minicity.make_sample(domain, "val", i)[0])
        axes[r, c].set_xticks([])
        axes[r, c].set_yticks([])
    axes[r, 0].set_ylabel(name, rotation=0, ha="right", va="center")
fig.suptitle(f"the same streets (val images {streets[0]}-{streets[-1]}, columns)\nunder each shift factor alone (rows)",
             y=1.0)
fig.tight_layout()

# %% [markdown]
# ## Why this gap can be closed
#
# Shapes and context are shared: the sky is always at the top, the road is a wedge at the bottom, cars sit on
# the road, people stand on the sidewalk. A model that is *partly* right on the target, and confident where it is
# right, gives an adaptation method something to build on (notebook 03 checks how far that holds):
#
# * **entropy minimisation / max-square** (notebooks 03–04) push the target predictions to be confident,
# * **adversarial alignment** (05) makes target outputs look like source outputs,
# * **style normalisation** (06) removes per-instance style statistics,
# * **clustered embeddings** (07) pull target features to the source class centroids,
# * **self-training** (08) trains on the model's own most confident target predictions.
#
# Notebook 01 measures the gap: a **source-only** model (trained on source labels alone, no adaptation) against a
# target-supervised **oracle** (the same model trained on labelled target images: an upper bound that no adaptation
# method may use).

# %% [markdown]
# ## Summary
#
# * MiniCity's source and target share their layout and classes (`p(y)` moves by less than the bound checked above)
#   and differ in appearance.
# * Part of the appearance shift is first-order statistics (AdaBN-fixable); part is class colours crossing over
#   and texture, which needs adaptation.
# * The four cities are further variations of the target look.
#
# ## Exercises
#
# 1. Take parts of the shift away: edit `my_look` in the cell below (e.g. `texture=0.0, noise=0.0, blur=0.0`, or
#    the source's `palette=minicity.SOURCE_LOOK.palette`), run it, and look at how much of the shift is left. (The
#    domains are built when udalib is imported, so changing `minicity.TARGET_LOOK` itself changes no image; to
#    *train* on a partial shift, use a factor mix such as `minicity:target-palette+texture`.)
# 2. Which city is closest to the source by the colour-distance table? Predict which city will be easiest to adapt
#    to, and check in notebook 10.
#
# %% tags=["exercise"]
# exercise 1: a look of your own, rendered on the same streets as the source and target looks
from dataclasses import replace

my_look = replace(minicity.TARGET_LOOK, texture=0.0, noise=0.0, blur=0.0)  # edit me: any field of minicity.Look
compare = {"source": minicity.SOURCE_LOOK, "target": minicity.TARGET_LOOK, "my_look": my_look}
fig, axes = plt.subplots(len(compare), N_SHOW, figsize=(2.2 * N_SHOW, 1.3 * len(compare)), squeeze=False)
for c in range(N_SHOW):
    layout = minicity.sample_layout(np.random.default_rng([SEED, c]), scene=minicity.TARGET_SCENE)
    for r, (name, look) in enumerate(compare.items()):
        axes[r, c].imshow(minicity.render(layout, look, np.random.default_rng([SEED, c, 1])))
        axes[r, c].set_xticks([])
        axes[r, c].set_yticks([])
        axes[r, 0].set_ylabel(name, rotation=0, ha="right", va="center")
fig.suptitle("the same streets in the source look, the target look and yours", y=1.0)
fig.tight_layout()

# %%
print(f"this notebook ran in {time.perf_counter() - START:.0f} s")

# %% [markdown]
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
