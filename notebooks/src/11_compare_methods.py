# ---
# jupyter:
#   kernelspec:
#     display_name: Python 3
#     language: python
#     name: python3
# ---

# %% [markdown]
# # 11 · Comparing the methods: leaderboard, per-class IoU, predictions side by side
#
# **What you will learn.** How to read a comparison of UDA methods honestly: the mean and spread over **seeds**,
# gains against the right baselines (source-only, AdaBN and the $\lambda = 0$ controls of notebooks 03–08),
# **per-class** IoU rather than one mIoU, and what the predictions actually look like. Two widgets let you explore:
# a **per-class IoU explorer** (methods, seeds, class set 19/16/13, sorted by gain) and a **prediction comparer**
# (image, ground truth and several checkpoints side by side, with an opacity slider, an error mask and a clickable
# legend that highlights one class).
#
# Everything here reads the **results store**: every training run, whoever starts it (a notebook, papermill,
# `python -m udalib train`, torchrun), writes a run folder `runs/<method>-s<seed>-<key>/` with its config, losses,
# per-class IoU and checkpoint. This notebook lists them; a run you train with papermill tomorrow appears here with
# no glue code. The original papers' full-scale numbers are shown next to MiniCity's, **as reported** by the papers,
# not reproduced here.
#
# **Runtime:** about 25 s on a 2-core CPU when notebooks 01–08 have run (their runs are found; the missing runs,
# single-level AdaptSegNet and the test-time rows TENT and BN-α, are trained here). On a fresh checkout it first
# trains the missing MiniCity runs of `SEEDS`, every row of the results table, and prints how many and how long
# that took (several minutes per seed on a 2-core CPU).
#
# The two widgets need a live kernel: they run in JupyterLab (or Jupyter Notebook). On a static page (the course's
# web site) each is followed by a figure, drawn by an ordinary cell, of what it shows at first.

# %% tags=["parameters"]
SEEDS: list = [0]  # seeds whose standard MiniCity runs are trained now if missing (other seeds in runs/ are shown too)
TRAIN_MISSING: bool = True  # False: show what runs/ holds, train nothing
DATASET: str = "minicity:target/val"  # evaluation set of every table and of the comparer
CLASS_SET: str = "19"  # classes the mIoU averages over: "19", "16" (SYNTHIA's) or "13"
IMAGES: int = 8  # images the prediction comparer offers (each checkpoint predicts them once, when first shown)
COMPARE: list = ["source_only", "adabn", "maxsquare_iw_multi", "oracle"]  # shown side by side at first
DEVICE: str = "cpu"  # "cuda" for full-scale checkpoints

# %% [markdown]
# ## Setup

# %%
import time
from dataclasses import replace

from IPython.display import Markdown, display

from udalib import paths, results, viz, zoo
from udalib.data import eval_loader
from udalib.data.labels import CITYSCAPES_CLASSES
from udalib.eval.evaluate import predict
from udalib.eval.metrics import ConfusionMatrix
from udalib.experiment import find_run, get_or_train, open_data
from udalib.methods import method_config
from udalib.viz import widgets

# %% [markdown]
# ## The standard runs: found, or trained now
#
# The standard rows of the MiniCity results table, `udalib.zoo.MINICITY_ROWS` (what `benchmarks/minicity_table.py`
# runs first, before the mean teacher's rows of notebook 09), each a function `seed -> Experiment` built from the definitions notebooks 01–08 use. `find_run` looks a run up by its config's key
# (never training); `get_or_train` is checkpoint-or-train. The order matters: adaptation runs start from the source
# models above them.

# %%
ROWS = zoo.MINICITY_ROWS  # the standard rows of benchmarks/minicity_table.py, in training order
start, trained = time.perf_counter(), []
for seed in SEEDS if TRAIN_MISSING else []:
    for make in ROWS.values():
        if find_run(make(seed)) is None:
            trained.append(get_or_train(make(seed), progress=False).name)
print(f"trained {len(trained)} missing runs in {time.perf_counter() - start:.0f} s")

# %% [markdown]
# Now the whole store: every finished run under `runs/`. The standard rows collect every seed they find (not only
# `SEEDS`); all other runs (other step counts, λ sweeps, papermill runs with other parameters, full-scale recipes)
# are grouped over seeds by `results.group_runs` and named by what sets them apart. Runs trained with older preset
# values (a preset is a method's MiniCity settings; such a run's folder key is no longer its config's key) are left
# out: `results.is_stale`.

# %%
store = results.load_runs()
seeds = sorted({r.config.seed for r in store})
standard = {name: [r for s in seeds if (r := find_run(make(s)))] for name, make in ROWS.items()}
standard = {name: runs for name, runs in standard.items() if runs}
others = results.group_runs(store, exclude=[r for runs in standard.values() for r in runs])
rows = standard or others  # at full scale (UDALIB_RUNS elsewhere) there are no MiniCity rows
baseline = "source_only" if "source_only" in rows else next(iter(rows))
print(f"{len(store)} runs in {paths.runs_dir()}: {sum(map(len, standard.values()))} standard runs "
      f"({len(standard)} rows, seeds {seeds}) and {len(others)} other experiments")

# %% [markdown]
# ## The leaderboard
#
# mIoU (%) on `DATASET` over the class set, **mean and sample standard deviation over the seeds found**, as trained
# and with BatchNorm statistics re-estimated on target images (*target BN*; empty for runs that never saw a target
# image), the gain over source-only, and beside it the number the original papers **report** for GTA5 → Cityscapes
# with DeepLab-v2 ResNet-101 (ResNet-38 for CBST and MLSL). Those come from the papers and READMEs (the MaxSquare and
# AdaptSegNet READMEs, `engrjavediqbal/udass-leaderboard`): they are *as reported*, not reproduced, and on a different benchmark, so compare orderings, not values.

# %%
board = results.leaderboard(rows, DATASET, class_set=CLASS_SET, baseline=baseline)
reported = results.reported_table()[["mIoU", "as reported"]]
reported = reported.rename(columns={"mIoU": "GTA5→CS mIoU (as reported)", "as reported": "reported for"})
shown = results.with_spread(board).join(reported).round(2)
shown.astype(object).where(shown.notna(), "")  # blank where nothing was reported

# %%
# a reported number and a MiniCity row pair up only when they are the same variant: read each row's config

def variant_mismatch(name):
    """What differs between the MiniCity runs of a row and the variant its reported number is for ("" if none)."""
    if name not in reported.index or not rows.get(name):
        return ""
    c = rows[name][0].config
    cfg, told = method_config(c.method, c.preset, **c.method_args), reported.loc[name, "reported for"]
    if "LS-GAN" in told and getattr(cfg, "gan", "ls") != "ls":
        return f"MiniCity runs use the {cfg.gan} GAN; the reported number is for LS-GAN"
    if "SISC-PWL" in told and not getattr(cfg, "weak_labels", True):
        return "MiniCity runs are MLSL with cross-entropy only; the reported number is for SISC-PWL (weak labels)"
    return ""


mismatches = {name: variant_mismatch(name) for name in board.index}
for name, why in mismatches.items():
    if why:
        print(f"{name}: not the reported variant. {why}")
print("every other row with a reported number is its reported variant" if any(mismatches.values())
      else "every row with a reported number is its reported variant")

# %%
# the table's story, with slack: target labels beat everything, and re-estimating BatchNorm alone closes part of
# the gap (MiniCity's domains differ mostly in colour statistics)
if {"source_only", "adabn", "oracle"} <= set(board.index):
    assert board.loc["oracle", "mIoU"] > board.loc["adabn", "mIoU"] > board.loc["source_only", "mIoU"], \
        f"the oracle should beat AdaBN, and AdaBN source-only\n{board}"
per_row = {name: len({r.config.seed for r in runs}) for name, runs in rows.items()}
most = max(per_row.values(), default=0)
if most <= 1:
    print("one seed per row here: the table has no spread (no ±); a difference of a point or two may be seed noise")
else:
    print(f"seeds per row: {min(per_row.values())} to {most}; ± is the sample standard deviation over them")

# %%
# the reading of the leaderboard, from the runs found and the five-seed table
spread = results.benchmark_summary()["± std"]
text = ("**Reading it.** On MiniCity, AdaBN (no training at all) is the baseline to beat, and every method should be "
        "read against its control: the λ = 0 runs train on source labels while target batches pass through the "
        "network, which moves the BatchNorm statistics to the target's (`zoo.BN_STATS`) and nothing else, so they "
        "land near AdaBN")
if {"adabn", "control_lambda0"} <= set(board.index):
    text += (f" (here {board.loc['control_lambda0', 'mIoU']:.1f} against AdaBN's "
             f"{board.loc['adabn', 'mIoU']:.1f})")
display(Markdown(
    text + ". What a method gains over both is its own loss's work. How far to trust one difference depends on the "
    "seeds behind each row (the line under the leaderboard): with one seed there is no spread to read, and the "
    f"standard deviation over the five seeds of `benchmarks/results/minicity_table.csv` runs from {spread.min():.1f} "
    f"to {spread.max():.1f} points from row to row, as much as many differences between methods; run more seeds "
    "(exercise 4) or read that table in notebooks 03–08. The reported column ranks the methods at full scale; "
    "MiniCity's 64×128 synthetic cities are a teaching stand-in and do not reproduce those values."))

# %% [markdown]
# ## Which checkpoint? Last, selected without target labels, selected with them
#
# Every original code base reports the checkpoint that scores best on the target's *labelled* validation set: a
# choice a real user cannot make. A run trained with `select_every=N` (an `Experiment` field;
# `python -m udalib train --select-every N`) is scored every N steps, and its `scores.json` keeps three labelled
# selections: the **last** checkpoint, the one the information-maximisation validator picks on unlabelled target
# images (**IM-selected**, notebook 12), and the one target labels pick (**target-selected**, kept as
# `best_model.pt`). `udalib table` shows the three side by side. The runs of `benchmarks/minicity_table.py
# --select-every 10` (seeds 0–2) are read below; runs of the store trained with `select_every` are shown after them.

# %%
import pandas as pd

RULES = {"last": "last", "im": "IM-selected (no target labels)", "target": "target-selected (uses target labels)",
         "regret": "regret of IM"}
summary = results.selection_summary(pd.read_csv(results.SELECTION_TABLE))  # benchmarks/results/, over seeds
selection = summary[list(RULES)].rename(columns=RULES)
spread = summary[[f"{col} std" for col in RULES]].set_axis(list(RULES.values()), axis=1)
selection_shown = selection.map("{:.2f}".format) + " ± " + spread.map("{:.2f}".format)
selection_shown.insert(0, "seeds", summary["seeds"])
selection_shown

# %%
gain = selection[RULES["target"]] - selection[RULES["last"]]
worst = selection["regret of IM"].idxmax()
print(f"target labels gain {gain.min():.2f} to {gain.max():.2f} points over the last checkpoint; "
      f"IM selection gives back {selection['regret of IM'].min():.2f} to {selection['regret of IM'].max():.2f} "
      f"(most: {worst}, {selection.loc[worst, 'regret of IM']:.2f})")
same_order = list(selection[RULES["last"]].sort_values().index) == list(selection[RULES["target"]].sort_values().index)
print("the rows rank the same under the last and the target-selected checkpoint" if same_order
      else "the ranking of the rows changes between the last and the target-selected checkpoint")
assert gain.max() < 1, gain  # stored (seeds 0-2): the reading below says "a fraction of a point"
# the standard rows trained with select_every=10 in this store (the benchmark's runs, or your own)
live = {name: [r for s in seeds if (r := find_run(replace(make(s), select_every=10)))] for name, make in ROWS.items()}
live = {name: runs for name, runs in live.items() if runs}
if live:
    display(results.with_spread(results.selection_board(live, DATASET)).round(2))
else:
    print("no standard run of this store was trained with select_every=10 (train one: "
          "get_or_train(replace(zoo.MINICITY_ROWS['minent'](0), select_every=10)))")

# %% [markdown]
# **Reading it.** At MiniCity's 60 adaptation steps with a poly learning rate, the last checkpoint is nearly the
# best one: selecting on target labels adds a fraction of a point (the line above), so the numbers the original code
# bases report (selected on target labels) and the last checkpoint differ little here. A label-free validator is
# then safe when it picks a late checkpoint, and costly when it picks an early one: the row with the largest regret
# above is the one where IM preferred a checkpoint the labels did not. At full scale, with tens of thousands of
# steps and scores that swing between snapshots, the three rules can differ more: that is when `select_every`
# matters.
#
# ## Per class
#
# Averages hide which classes move. The heat maps show each row's per-class IoU (mean over seeds) and its gain over
# source-only; classes absent from `DATASET` are left out.

# %%
per_class = results.class_iou_table(rows, DATASET, class_set=CLASS_SET)
fig = viz.plots.iou_heatmap(per_class, limits=(0, 100),
                            title=f"per-class IoU (%) on {DATASET}, mean over seeds ({per_class.shape[1]} classes "
                                  "present); scale 0 to 100")
fig.axes[0].set(xlabel="class", ylabel="row (method, control or reference)")
fig.axes[1].set_ylabel("IoU (%)");

# %%
gains = (per_class - per_class.loc[baseline]).drop(index=baseline)
fig = viz.plots.iou_heatmap(gains, center=0,
                            title=f"gain over {baseline} (IoU points); red below 0, blue above, symmetric around 0")
fig.axes[0].set(xlabel="class", ylabel="row (method, control or reference)")
fig.axes[1].set_ylabel(f"IoU gain over {baseline} (points)");

# %%
# what the two heat maps say, read from them
mean_gain = gains.drop(index="oracle", errors="ignore").mean().sort_values(ascending=False)
hardest = per_class.max().sort_values()  # each class's best row, the oracle included
display(Markdown(
    f"Over the rows above (the oracle aside), the classes that gain most over {baseline} on average are "
    + ", ".join(f"{c} ({v:+.1f})" for c, v in mean_gain.head(4).items())
    + "; the hardest classes, whose best row reaches the least, the oracle included, are "
    + ", ".join(f"{c} ({v:.1f} at best)" for c, v in hardest.head(3).items()) + "."))

# %%
as_reported = results.reported_table()[list(CITYSCAPES_CLASSES)].dropna()
fig = viz.plots.iou_heatmap(as_reported, limits=(0, 100),
                            title="GTA5 → Cityscapes per-class IoU (%), as reported (not reproduced); scale 0 to 100")
fig.axes[0].set(xlabel="class", ylabel="method, as reported")
fig.axes[1].set_ylabel("IoU (%)");

# %% [markdown]
# ## Each paper's central claim, on MiniCity
#
# Every paper claims that its addition beats what it builds on. `results.claim_verdicts` checks each claim on
# the five-seed table (`benchmarks/results/minicity_table.csv`): both rows' mean ± std, the paired difference (same
# seed, same source model) and on how many seeds the claimed winner is ahead. A claim *holds on MiniCity* when the
# winner is ahead on the mean and on every seed but at most one; otherwise it *does not hold*. `benchmarks/RESULTS.md`
# gives the reason found for each claim that does not hold; notebooks 04–08 show each claim beside its method.

# %%
claims = results.claim_verdicts()
claims.drop(columns=["winner", "beaten"])

# %% [markdown]
# ## Where each method works and where it breaks: the atlas
#
# One number per method hides *which* shift a method's loss can act on. `benchmarks/minicity_atlas.py` runs every
# method with its AdaBN row and its λ = 0 control on each **single shift factor** of MiniCity (notebook 00:
# `minicity:target-<factor>`, the same streets under one change) and on the composite (every factor at once: the
# target domain of notebooks 01–08), three seeds each. The heat
# map shows each method's margin over the better of its two controls, per seed and then averaged: blue where the
# method's own loss adds something, red where it does worse than simply training on target batches or re-estimating
# BatchNorm statistics. Each cell reads mean ± std and the seeds on which the method is ahead.

# %%
atlas_mean, atlas_std, atlas_ahead = results.atlas_margins()
viz.plots.atlas_heatmap(atlas_mean, atlas_std, atlas_ahead);

# %%
single = atlas_mean.drop(columns="composite", errors="ignore")
pd.DataFrame({"works best on": single.idxmax(axis=1), "margin": single.max(axis=1).round(1),
              "worst on": single.idxmin(axis=1), "margin there": single.min(axis=1).round(1)})

# %% [markdown]
# ## Explore: per-class IoU over methods, seeds and class sets
#
# Pick methods (ctrl/shift-click), seeds and the class set; the table and the bars update. The table has the mean
# per-class IoU over the selected seeds, the mIoU (mean ± std over seeds) and its gain over the baseline; tick
# *sort by gain* to rank the methods. Every other experiment in `runs/` is in the list too, named by what sets it
# apart (e.g. `maxsquare · steps 100`).

# %%
picked = [n for n in ("adabn", "control_lambda0", "maxsquare_iw_multi", "adaptsegnet_multi", "cbst") if n in rows]
explorer = widgets.IoUExplorer({**rows, **others}, DATASET, baseline=baseline, selected=picked or None,
                               class_set=CLASS_SET)
explorer

# %% [markdown]
# The explorer itself runs in JupyterLab, with this notebook's kernel. What it shows at first, drawn by an ordinary
# cell for a static page: its table and its bars, for its first methods, every seed and the class set `CLASS_SET`.

# %%
first_view = list(dict.fromkeys([explorer.baseline.value, *explorer.methods.value]))  # the widget's default choice
groups = {**rows, **others}
display(explorer.table.round(2))
fig = viz.plots.class_iou_bars(results.class_iou_long({n: groups[n] for n in first_view}, DATASET, class_set=CLASS_SET),
                               order=list(explorer.table.index),
                               title=f"per-class IoU (%) on {DATASET}, mean ± std over seeds: the explorer at first")
fig.axes[0].set(xlabel="class", ylabel="IoU (%)");

# %% [markdown]
# ## Explore: predictions side by side
#
# One checkpoint per method and seed. Pick an image and two or more checkpoints; the opacity slider blends the
# colour-coded labels over the image, *error mask* adds each prediction's wrong pixels in red (with their share),
# *entropy* shows how unsure each model is, and a click on a class in the legend highlights it everywhere (its
# errors only, and its IoU on this image in the status line). Predictions are made once per checkpoint, for all
# `IMAGES` images, when it is first shown; everything else is redrawing.

# %%
checkpoints = {f"{name} · seed {r.config.seed}": r for name, runs in rows.items() for r in runs}
first = [f"{n} · seed {rows[n][0].config.seed}" for n in COMPARE if n in rows]
comparer = widgets.PredictionComparer(checkpoints, DATASET, images=IMAGES, selected=first if len(first) > 1 else None,
                                      device=DEVICE)
comparer

# %% [markdown]
# The comparer itself runs in JupyterLab, with this notebook's kernel. What it shows at first, drawn by an ordinary
# cell for a static page: image 0, its ground truth and the first checkpoints' predictions over it, at the default
# opacity, with their pixel accuracy on this image (the widget's status line).

# %%
cache, shown_runs = comparer.cache, list(comparer.methods.value)
image0, label0 = cache.sample(0)
fig = viz.plots.compare_predictions(image0, label0, {n: cache.prediction(n, 0) for n in shown_runs},
                                    alpha=comparer.opacity.value, class_ids=list(comparer.legend),
                                    names=cache.class_set.names, palette=cache.class_set.palette)
fig.suptitle(f"{DATASET}, image 0: the comparer at first (labels over the image)", fontsize=10)
fig.tight_layout(rect=(0, 0.1, 1, 0.95))
print("pixel accuracy on this image:", " · ".join(f"{n}: {v:.1f}%" for n, v in comparer.scores.items()))

# %% [markdown]
# The same widget, driven from code: image 1 with the error mask, then only the errors on sidewalk (the class that
# borders the road in every street). `comparer.scores` holds the numbers of the status line.

# %%
comparer.image.value = 1
comparer.errors.value = True
sidewalk = [c for c, b in comparer.legend.items() if b.description == "sidewalk"]
if sidewalk:
    comparer.toggle_highlight(sidewalk[0])
{name: round(v, 1) for name, v in comparer.scores.items()}

# %%
viz.plots.entropy_maps(comparer.cache.sample(1)[0], {n: comparer.cache.entropy(n, 1) for n in comparer.methods.value});

# %% [markdown]
# ## Confusions and training curves
#
# Where do the pixels go? Row-normalised confusion matrices on `DATASET` for the baseline and the best adaptation
# method (the oracle, AdaBN and the controls aside): each row is a true class, each cell the share of its pixels
# predicted as the column's class.

# %%
methods = [n for n in board.index if n != "oracle" and not n.startswith(("adabn", "control"))]
best = board.loc[methods, "mIoU"].idxmax()
for name in dict.fromkeys([baseline, best]):
    run = rows[name][0]
    model, cm = run.model(DEVICE), ConfusionMatrix(run.config.num_classes)
    for image, label, *_ in eval_loader(open_data(DATASET, default_split="val", train=False, exp=run.config)):
        cm.update(predict(model, image.to(DEVICE)).argmax(1).cpu(), label)
    viz.plots.confusion_matrix_plot(cm.matrix, run.scores[DATASET].class_names, title=f"{name}, seed {run.config.seed}")

# %%
curves = {n: rows[n][0].history() for n in dict.fromkeys([best, "control_lambda0", "maxsquare"]) if n in rows}
viz.plots.training_curves(curves, keys=("seg", "target"));

# %% [markdown]
# ## Summary
#
# * A results store (one folder per run: config, losses, per-class IoU, checkpoint) is all a comparison needs;
#   `udalib.results` reads it and groups runs over seeds (`results.over_seeds`), so any run shows up here.
# * Report mean ± std over seeds and the gain over the *controls*, not only over source-only.
# * Per-class IoU and the predictions show *what* a method changes, and which classes stay hard for every method,
#   the oracle included (the per-class heat maps and the sentence under them).
# * Reported full-scale numbers rank the methods; MiniCity does not reproduce their values.

# %% [markdown] tags=["exercise"]
# ## Exercises
#
# 1. Train a new variant with papermill (e.g. `papermill notebooks/04_maximum_squares.ipynb out.ipynb -p STEPS 100`),
#    re-run this notebook and find it in the explorer: what is its gain over its control?
# 2. Switch the class set to 13: which method gains the most, and why do poles matter?
# 3. In the comparer, highlight *sidewalk* and step through the images: which method fixes the road/sidewalk
#    confusion, and at what cost elsewhere?
# 4. Run with `-y "SEEDS: [0, 1, 2]"` (trains the missing seeds): does the ranking survive three seeds?

# %% [markdown]
# ## Run at full scale
#
# Full-scale runs write the same run folders. Train the recipes (the "Run at full scale" cells of notebooks 01–08,
# or `python -m udalib run gta5_maxsquare_iw_multi --data-root /data/prepared`), keep their runs folder
# apart from MiniCity's, and point this notebook at it:
#
# ```bash
# UDALIB_RUNS=/data/runs papermill notebooks/11_compare_methods.ipynb runs/notebooks/11_full.ipynb \
#     -p TRAIN_MISSING False -p DATASET cityscapes/val@512x1024 -p IMAGES 4 -p DEVICE cuda
# ```
#
# The explorer and the comparer then show the full-scale runs (their configs hold the data root), next to the
# numbers reported by the original papers.
#
# ## References
#
# * `engrjavediqbal/udass-leaderboard`, the MaxSquare and AdaptSegNet READMEs: the reported
#   numbers.
# * M. Chen, H. Xue, D. Cai. *Domain Adaptation for Semantic Segmentation with Maximum Squares Loss*. ICCV 2019
#   (arXiv 1909.13589).
# * T.-H. Vu, H. Jain, M. Bucher, M. Cord, P. Pérez. *ADVENT: Adversarial Entropy Minimization for Domain Adaptation
#   in Semantic Segmentation.* CVPR 2019 (arXiv 1811.12833).
# * Y.-H. Tsai et al. *Learning to Adapt Structured Output Space for Semantic Segmentation*. CVPR 2018
#   (arXiv 1802.10349).
# * X. Jin, C. Lan, W. Zeng, Z. Chen. *Style Normalization and Restitution for Domain Generalization and
#   Adaptation*. arXiv 2101.00588, 2021.
# * M. Toldo, U. Michieli, P. Zanuttigh. *Unsupervised Domain Adaptation in Semantic Segmentation via Orthogonal and
#   Clustered Embeddings*. WACV 2021 (arXiv 2011.12616).
# * Y. Zou et al. *Class-Balanced Self-Training*. ECCV 2018 (arXiv 1810.07911); J. Iqbal, M. Ali. *MLSL*. WACV 2020.
# * Each method's reference implementation, with files and lines: the References of notebooks 03 to 08.
