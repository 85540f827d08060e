# ---
# jupyter:
#   kernelspec:
#     display_name: Python 3
#     language: python
#     name: python3
# ---

# %% [markdown]
# # 03 · Entropy minimisation (MinEnt)
#
# **What you will learn.** The simplest way to use unlabelled target images: make the model *confident* on them.
# MinEnt (Vu et al., *ADVENT*, CVPR 2019, Eq. 3; run here as the MaxSquare code base runs it) adds the mean entropy
# of the target predictions to the source loss:
#
# $$\min_\theta\; \mathcal{L}_{seg}(x_s, y_s) + \lambda_{target}\,\frac{1}{Z\,HW}\sum_{h,w} -\sum_c P_t^{(h,w,c)}\log P_t^{(h,w,c)}$$
#
# You will check the assumption it rests on (confident target pixels are mostly right), train it, and compare it
# with **the right controls**: the source model, AdaBN, and the *same run with* $\lambda_{target}=0$.
#
# **Runtime:** about a minute on a 2-core CPU (three adaptation runs, one of them the large-$\lambda$
# demonstration; the source model comes from notebook 01, or is trained here); the last cell prints this run's time.

# %% tags=["parameters"]
SEED: int = 0  # seed of the source model and of the adaptation run
STEPS: int = 60  # adaptation iterations (source + target batch each)
LAMBDA_TARGET: float | None = None  # weight of the entropy term (the paper's runs use 0.1); None: minent's MiniCity preset
RECIPE: str = ""  # full scale: "gta5_minent" (udalib/recipes/)
DATA_ROOT: str = ""  # folder written by data_scripts/, holding checkpoints/GTA5_source.pth (full scale)
DEVICE: str = "cpu"  # "cuda" at full scale
CASE_SEED: int | None = None  # None: the "works / breaks" cases from the atlas (mean over its seeds); a seed: train its runs now

# %% [markdown]
# ## Setup

# %%
import time

import pandas as pd
from IPython.display import Markdown, display

from udalib import losses, methods, results, viz, zoo
from udalib.data import eval_loader
from udalib.eval.evaluate import entropy_vs_accuracy
from udalib.experiment import compare_runs, find_run, get_or_train, open_data

preset = methods.method_config("minent", "minicity")  # the paper's defaults, then methods.PRESETS["minent"]["minicity"]
LAMBDA_TARGET = preset.lambda_target if LAMBDA_TARGET is None else LAMBDA_TARGET
START = time.perf_counter()
TARGET_EVAL = "minicity:target/val"
source_exp = zoo.source_experiment(SEED)
source_run = get_or_train(source_exp)  # notebook 01's run, or trained now
source_model = source_run.model()
target_val = open_data(TARGET_EVAL, default_split="val", train=False, exp=source_exp)
source_val = open_data("minicity:source/val", default_split="val", train=False, exp=source_exp)

# %% [markdown]
# ## Intuition: the source model is uncertain on the target
#
# Per-pixel entropy of the source-only model's prediction on target images: bright = uncertain. Look where the
# bright pixels sit: along object boundaries, or over whole regions whose appearance changed?

# %%
viz.plots.show_entropy(source_model, target_val, [0, 1, 2]);

# %% [markdown]
# MinEnt's bet is that **low-entropy pixels are mostly right**, so sharpening the uncertain ones moves them toward
# the classes of their confident neighbours. Check it: bucket labelled target pixels by normalised entropy and
# measure the accuracy in each bucket, on source and on target.

# %%
calib = pd.concat({"source val": entropy_vs_accuracy(source_model, eval_loader(source_val)),
                   "target val": entropy_vs_accuracy(source_model, eval_loader(target_val))}, axis=1)
share, acc = calib.xs("share of pixels (%)", axis=1, level=1), calib.xs("accuracy (%)", axis=1, level=1)
falls = acc["target val"].is_monotonic_decreasing
display(Markdown(
    f"Outside the most confident bucket: {100 - share['source val'].iloc[0]:.1f} % of the source pixels, "
    f"{100 - share['target val'].iloc[0]:.1f} % of the target pixels. On the target, accuracy goes from "
    f"{acc['target val'].iloc[0]:.1f} % in the most confident bucket to {acc['target val'].iloc[-1]:.1f} % in the "
    f"least confident one, {'falling' if falls else 'not falling'} bucket by bucket: confidence is "
    f"{'informative, which is what the method needs' if falls else 'only partly informative here'}."))
calib

# %% [markdown]
# Note the confident-and-wrong pixels too (the first row's accuracy is not 100 %): entropy minimisation will make
# those *more* confident.
#
# ## The objective
#
# udalib implements both terms as pure functions. $\mathcal{L}_{seg}$ is the pixel-wise cross-entropy over the
# labelled source pixels that every method uses (`losses.seg_loss`). For the target term, the original code
# (`ZJULearning/MaxSquareLoss`, its `softCrossEntropy`; normalisation `"original"` in udalib) averages $-P\log P$ over all $N\cdot C\cdot H\cdot W$ entries, i.e. divides the entropy by
# $C$; ADVENT divides by $\log C$. The two differ by the constant $C/\log C$, which the $\lambda$ values absorb.
# You will write the entropy loss yourself in exercise 1; the library's code follows the exercise.

# %%
viz.show_source(losses.seg_loss)

# %%
import math

import torch

uniform = torch.zeros(1, 19, 2, 2)  # a uniform posterior has the largest entropy, log C
print("the original's normalisation (the default):", losses.entropy_loss(uniform).item(), "= log(19) / 19 =",
      math.log(19) / 19)
print("ADVENT's, log_c:", losses.entropy_loss(uniform, "log_c").item())

# %% [markdown]
# ## The method
#
# One `step`: a source forward pass with the supervised loss, a separate target forward pass with the entropy
# loss, one SGD update on the sum. Target labels cannot reach this code: `TargetBatch` has no `label` field.

# %%
viz.show_source(methods.MinEnt.step)

# %% [markdown]
# ## Train MinEnt, and the controls
#
# * **AdaBN**: the source weights, BatchNorm statistics re-estimated on target images. No training.
# * **$\lambda_{target}=0$ control**: exactly the MinEnt run with the entropy weight at 0. Its weights get the
#   source-only updates, but every target batch passes through the network in train mode and moves the BatchNorm
#   running statistics. Any difference between MinEnt and this control is due to the entropy term.
#
# **BatchNorm during adaptation.** The original code bases let source and target batches both update the running
# statistics, so a model as trained carries a *mixture* of the two domains' statistics. The MiniCity runs keep the
# running statistics of target batches only (`zoo.BN_STATS = "target"`; source batches are normalised with their own
# batch statistics): the model as trained then has the target's statistics, as AdaBN does, and what MinEnt adds
# over both is the entropy term's own work. A run under the original policy is also scored with statistics
# re-estimated on target images after training ("target BN", AdaBN applied to the trained model); a run that kept
# target statistics already holds them, and has no such score.

# %%
if RECIPE:  # full scale: the original code's recipe on the real data
    from udalib.experiment import run
    from udalib.recipes import load_recipe
    full = run(load_recipe(RECIPE, data_root=DATA_ROOT, device=DEVICE))
    print(full.dir, *full.scores.items(), sep="\n")
minent_run = get_or_train(zoo.adaptation_experiment("minent", source_exp, steps=STEPS, lambda_target=LAMBDA_TARGET))
control_run = get_or_train(zoo.control_experiment(source_exp, steps=STEPS))
adabn_run = get_or_train(zoo.adabn_experiment(source_exp))

# %%
runs = {"source-only": source_run, "AdaBN": adabn_run, "control (lambda 0)": control_run, "MinEnt": minent_run}
table = compare_runs(runs, baseline=source_run, control=control_run)
table.round(2)

# %%
gain_bn = control_run.miou(TARGET_EVAL) - source_run.miou(TARGET_EVAL)
gain_ent = minent_run.miou(TARGET_EVAL) - control_run.miou(TARGET_EVAL)
print(f"of MinEnt's {gain_bn + gain_ent:+.1f} points over source-only, {gain_bn:+.1f} come from training on "
      f"target batches at all (BatchNorm statistics) and {gain_ent:+.1f} from the entropy term itself.")
# the teaching claim, checked: MinEnt beats source-only by at least 2 points (it does on each of the seeds 0-4 of
# benchmarks/results/minicity_table.csv)
assert minent_run.miou(TARGET_EVAL) >= source_run.miou(TARGET_EVAL) + 2, \
    f"MinEnt should gain at least 2 mIoU points over source-only\n{table}"

# %% [markdown]
# **What the table shows on MiniCity.** The table above is one seed; read every seed of
# `benchmarks/results/minicity_table.csv` (written by `python benchmarks/minicity_table.py`, mIoU % on target val).
# A method's **margin** is its mIoU minus the better of AdaBN and its control, taken seed by seed: the gain that
# only its own loss can claim.

# %%
bench = results.benchmark_summary(["source_only", "adabn", "control_lambda0", "minent", "oracle"])
m, s, a, c = (bench.loc[r] for r in ("minent", "source_only", "adabn", "control_lambda0"))
bn_share = (c["as trained"] - s["as trained"]) / (m["as trained"] - s["as trained"])
display(Markdown(
    f"MinEnt reaches {m['as trained']:.1f} ± {m['± std']:.1f}, {m['as trained'] - s['as trained']:+.1f} over "
    f"source-only. The $\\lambda=0$ control reaches {c['as trained']:.1f} and AdaBN {a['as trained']:.1f} "
    f"({c['as trained'] - a['as trained']:+.1f} apart): training on target batches at all, which moves the BatchNorm "
    f"statistics to the target's, accounts for {100 * bn_share:.0f} % of MinEnt's gain over source-only. The entropy "
    f"term's own margin is {m['vs max(AdaBN, control)']:+.1f}, ahead of both controls on {m['seeds ahead']:.0f} of "
    f"{m.seeds:.0f} seeds."))
# the teaching claim, checked over the seeds of the benchmark table: BatchNorm statistics carry most of the gain
assert bn_share > 0.5 and m["vs max(AdaBN, control)"] > 0, bench
bench

# %% [markdown]
# This is the honest reading: do not credit MinEnt with what BatchNorm did. Notebook 04 shows why entropy's
# gradient favours pixels that are already confident, and what the max-square loss changes.
#
# ## Per class

# %%
viz.plots.iou_bars({name: r.scores[TARGET_EVAL] for name, r in runs.items()}, title="target val, per-class IoU (%)");

# %%
# one seed per class is noisy: the standard MinEnt and control runs of every seed in the store, per class
five = {name: [r for s in range(5) if (r := find_run(zoo.MINICITY_ROWS[name](s)))] for name in ("control_lambda0", "minent")}
if not RECIPE and min(map(len, five.values())) > 1:
    mean_iou = results.class_iou_table(five, TARGET_EVAL)
    over_control = (mean_iou.loc["minent"] - mean_iou.loc["control_lambda0"]).sort_values()
    display(Markdown(
        f"MinEnt minus its control, per class, mean over the seeds {sorted(r.config.seed for r in five['minent'])}: "
        f"the entropy term gains most on {over_control.idxmax()} ({over_control.max():+.1f}) and least on "
        f"{over_control.idxmin()} ({over_control.min():+.1f}), whatever one seed shows."))
    display(over_control.round(1).to_frame("MinEnt - control"))
else:
    print("the other seeds' standard runs are not in the store (python benchmarks/minicity_table.py trains them)")

# %% [markdown]
# The atlas section below shows, factor by factor, which kind of shift the entropy term helps with and which it
# makes worse.

# %% [markdown]
# ## After adaptation: entropy maps and losses

# %%
viz.plots.show_entropy(minent_run.model(), target_val, [0, 1, 2]);

# %%
viz.plots.training_curves({"MinEnt": minent_run.history(), "control": control_run.history()}, keys=("seg", "ent"));

# %% [markdown]
# ## Failure mode: too much weight on the entropy
#
# With a large $\lambda_{target}$ the cheapest way to lower the entropy is to predict the dominant classes
# everywhere, at the expense of the rare ones. The next cell trains the same run at ten times `LAMBDA_TARGET` and
# compares it class by class with the run above.

# %%
# the same run at ten times the weight, found in runs/ or trained now (as long as the run above)
if not RECIPE:
    STRONG = 10 * LAMBDA_TARGET
    strong_run = get_or_train(zoo.adaptation_experiment("minent", source_exp, steps=STEPS, lambda_target=STRONG))
    strong = pd.DataFrame({f"MinEnt, lambda {LAMBDA_TARGET:g}": minent_run.scores[TARGET_EVAL].iou,
                           f"MinEnt, lambda {STRONG:g}": strong_run.scores[TARGET_EVAL].iou},
                          index=minent_run.scores[TARGET_EVAL].class_names).dropna()
    strong["change"] = strong.iloc[:, 1] - strong.iloc[:, 0]
    class_ids = [list(viz.plots.CITYSCAPES_CLASSES).index(name) for name in strong.index]
    strong["share of pixels (%)"] = viz.plots.class_frequencies({"target": target_val}, class_ids)["target"].to_numpy()
    up, down = strong.change[strong.change >= 0.5], strong.change[strong.change <= -0.5]
    display(Markdown(
        f"Ten times the weight moves the mean from {minent_run.miou(TARGET_EVAL):.1f} to "
        f"{strong_run.miou(TARGET_EVAL):.1f}. Classes that gain half a point or more: "
        f"{', '.join(up.index) or 'none'}; classes that lose as much: "
        f"{', '.join(f'{k} ({v:+.1f})' for k, v in down.sort_values().items()) or 'none'}. "
        f"The gaining classes cover {strong.loc[up.index, 'share of pixels (%)'].sum():.0f} % of the target pixels, "
        f"the losing ones {strong.loc[down.index, 'share of pixels (%)'].sum():.0f} %."))
strong.round(1) if not RECIPE else "the strong-weight run is MiniCity's"

# %% [markdown]
# The entropy term has no notion of class balance: the cheapest confidence is on the classes that fill the most
# pixels, and the mean IoU weighs every class the same. Notebook 04's image-wise weights (IW) add a balance.

# %% [markdown]
# ## Where it works, where it breaks
#
# The **atlas** (`benchmarks/results/minicity_atlas.csv`, read in notebook 11) trained MinEnt with its controls on
# each single shift factor of notebook 00 alone, several seeds each. `results.factor_cases` reads the factor
# where the method's margin is largest ("works") and the one where it is smallest ("breaks") and shows both cases
# class by class: source-only, AdaBN, the λ=0 control and the method, each the mean over the atlas's seeds, and in
# the last column the method's margin over the better of AdaBN and the control (taken seed by seed, then averaged).
# With `CASE_SEED` set to a seed, the same table comes from that seed's four runs of each case, found or trained now
# (about a minute).

# %%
ROW = "minent"  # the row of zoo.MINICITY_ROWS; its controls: zoo.CONTROLS[ROW]
results.factor_cases(ROW, CASE_SEED) if not RECIPE else "the atlas is MiniCity's"

# %%
# the reading below is the atlas's (benchmarks/results/minicity_atlas.csv), whatever CASE_SEED shows above
(works, _), (breaks, _) = results.works_and_breaks(ROW).values()
assert (works, breaks) == ("palette", "converge"), (works, breaks)  # the two shifts the reading explains
w, b = (results.atlas_case_table(ROW, f)["margin"].drop("mIoU") for f in (works, breaks))
margins = results.atlas_margins()[0].loc[ROW].drop(["composite", works, breaks], errors="ignore")
display(Markdown(
    f"In the atlas, under `{works}` {(w > 0).sum()} of {len(w)} classes gain over the better of AdaBN and the "
    f"control, {', '.join(w.nlargest(3).index)} most. Under `{breaks}` {', '.join(b[b < 0].sort_values().index)} "
    f"lose, and the largest gain of any class is {b.max():+.1f} points ({b.idxmax()}). On the other single factors "
    f"the margin is {', '.join(f'{v:+.1f} (`{k}`)' for k, v in margins.items())}."))

# %% [markdown]
# **Reading it.** Under `palette` the classes keep their shapes and places but take other colours, several of them
# another class's source colour. The source model with target statistics is partly right, and confident where it is
# right, so sharpening its target predictions pulls the unsure pixels toward what the context supports. Under
# `converge` the shift makes two pairs of classes look alike (sidewalk paved like the road, foliage dulled toward
# building). There the model is confidently *wrong*, and entropy minimisation sharpens those errors. MinEnt rests on
# "confident target pixels are mostly right"; `converge` is the shift that breaks it. On the shifts that AdaBN
# absorbs (`photometry`, `exposure`) or that the source model already handles, the entropy term has little to add.

# %% [markdown]
# ## Summary
#
# * MinEnt sharpens target predictions; it relies on confident pixels being mostly right.
# * Training on target batches moves BatchNorm statistics; the $\lambda=0$ control and AdaBN measure that effect,
#   and on MiniCity they account for most of MinEnt's gain over source-only (checked over seeds above). Keeping
#   target statistics during adaptation (`zoo.BN_STATS`) leaves the entropy term's own margin visible.
#
# ## Exercises
#
# 1. Implement the entropy loss with both normalisations and a pixel mask (below, checked on values computed by
#    hand).
# 2. Predict, then run: does MinEnt make the confident-and-wrong pixels grow (below)?
# 3. Use ADVENT's normalisation (`zoo.adaptation_experiment("minent", source_exp, normalization="log_c")`). Which
#    $\lambda$ gives the same training as `LAMBDA_TARGET` with the original normalisation (`"original"`)?
# 4. Train MinEnt and its control with the original code's BatchNorm policy,
#    `dataclasses.replace(zoo.adaptation_experiment("minent", source_exp), bn_stats="both")` (and the same for
#    `zoo.control_experiment(source_exp)`). Predict first: as trained, where do they land against AdaBN? Then compare
#    their "target BN" scores.

# %% [markdown] tags=["exercise"]
# ### Exercise 1: implement the entropy loss
#
# Write `my_entropy_loss(logits, normalization, mask)` for logits of shape `(N, C, H, W)`: the mean over pixels of
# $-\sum_c P\log P$ with $P = \mathrm{softmax}(x)$ over the class dimension, divided by $C$ (`"original"`, what the
# MaxSquare code base computes) or by $\log C$ (`"log_c"`, ADVENT's). `mask`, when given, is a boolean `(N, H, W)`
# tensor of the pixels that count (say, the valid area of a padded crop): the mean then runs over those pixels only,
# which `losses.entropy_loss` does not offer. Then run the check, which compares your function with values computed
# by hand.

# %% nbgrader={"grade": false, "grade_id": "03-ex1-solution", "locked": false, "schema_version": 3, "solution": true, "task": false} tags=["solution"]
import math

import torch
import torch.nn.functional as F


def my_entropy_loss(logits: torch.Tensor, normalization: str = "original",
                    mask: torch.Tensor | None = None) -> torch.Tensor:
    ### BEGIN SOLUTION
    log_p = F.log_softmax(logits, dim=1)
    entropy = -(log_p.exp() * log_p).sum(dim=1)  # (N, H, W)
    mean = entropy.mean() if mask is None else entropy[mask].mean()
    c = logits.shape[1]
    return mean / (c if normalization == "original" else math.log(c))
    ### END SOLUTION

# %% nbgrader={"grade": true, "grade_id": "03-ex1-check", "locked": true, "points": 1, "schema_version": 3, "solution": false, "task": false} tags=["check"]
import math

import torch

# three pixels of one image, three classes, as logits whose softmax is easy by hand:
# (0, 0, 0) -> P = (1/3, 1/3, 1/3); (0, log 3, log 4) -> P = (1/8, 3/8, 4/8); (log 2, 0, 0) -> P = (1/2, 1/4, 1/4)
logits = torch.tensor([[0.0, 0.0, 0.0], [0.0, math.log(3), math.log(4)], [math.log(2), 0.0, 0.0]]).T.reshape(1, 3, 1, 3)
h = [math.log(3), -(1 / 8 * math.log(1 / 8) + 3 / 8 * math.log(3 / 8) + 1 / 2 * math.log(1 / 2)), 1.5 * math.log(2)]
batch, keep = logits.repeat(2, 1, 2, 1), torch.tensor([True, False, True]).repeat(2, 2, 1)  # (2, 3, 2, 3), (2, 2, 3)
for norm, z in (("original", 3), ("log_c", math.log(3))):
    got = my_entropy_loss(batch, norm)
    assert torch.is_tensor(got) and got.shape == (), "return a scalar tensor"
    assert math.isclose(got.item(), sum(h) / 3 / z, rel_tol=1e-5), (
        f"{norm}: expected the mean entropy {sum(h) / 3:.4f} divided by {z:.4f}, got {got.item():.4f}")
    got = my_entropy_loss(batch, norm, keep)
    assert math.isclose(got.item(), (h[0] + h[2]) / 2 / z, rel_tol=1e-5), (
        f"{norm} with a mask: the mean runs over the masked pixels only (here the first and the third)")
print("my_entropy_loss gives the entropies computed by hand")

# %% [markdown]
# The library's entropy loss (`udalib/losses/entropy.py`), to compare with your solution:

# %% tags=["answer-source"]
viz.show_source(losses.entropy_map)
viz.show_source(losses.entropy_loss)

# %% [markdown] tags=["exercise"]
# ### Exercise 2: predict, then run
#
# The calibration table above bucketed the source model's target pixels by normalised entropy. The next cell
# builds it for the $\lambda=0$ control and for MinEnt, whose only difference is the entropy term. Before running
# it, predict: against the control, (a) does MinEnt put more or fewer pixels in the most confident bucket (entropy
# below 0.1 log C), (b) does the accuracy inside that bucket rise or fall, and (c) do the pixels that are confident
# *and wrong* grow or shrink, as a share of all pixels?

# %% [markdown]
# *Your prediction:* ...

# %%
calib_after = pd.concat({"source-only": calib["target val"],
                         "control (lambda 0)": entropy_vs_accuracy(control_run.model(), eval_loader(target_val)),
                         "MinEnt": entropy_vs_accuracy(minent_run.model(), eval_loader(target_val))}, axis=1)
confident_wrong = {}
for model_name, b in calib_after.iloc[0].groupby(level=0, sort=False):
    share, acc = b[model_name, "share of pixels (%)"], b[model_name, "accuracy (%)"]
    confident_wrong[model_name] = share * (100 - acc) / 100
    print(f"{model_name:18s} most confident bucket: {share:.1f} % of the pixels, {acc:.1f} % of them right; "
          f"confident and wrong: {confident_wrong[model_name]:.1f} % of all pixels")
first = calib_after.iloc[0]
(s_ctl, a_ctl), (s_ent, a_ent) = (first[n].to_numpy() for n in ("control (lambda 0)", "MinEnt"))
cw_src, cw_ctl, cw_ent = confident_wrong.values()
display(Markdown(
    f"**Discussion.** Against the control, MinEnt puts {'more' if s_ent > s_ctl else 'fewer'} pixels in the most "
    f"confident bucket ({s_ent:.1f} % against {s_ctl:.1f} %), and the accuracy inside the bucket moves from "
    f"{a_ctl:.1f} % to {a_ent:.1f} %. The confident-and-wrong pixels {'grow' if cw_ent > cw_ctl else 'shrink'}, from "
    f"{cw_ctl:.1f} % to {cw_ent:.1f} % of all pixels: " + (
        "entropy minimisation sharpens the errors along with the rest, as the bet of this notebook predicts. "
        if cw_ent > cw_ctl else "here the entropy term confirmed fewer errors than it sharpened right pixels. ")
    + f"Against source-only ({cw_src:.1f} % confident and wrong) the control "
    f"{'has fewer' if cw_ctl < cw_src else 'has more'} confident errors: that change is the BatchNorm statistics', "
    "which the control shares, one more reason to read every effect against the control."))
calib_after

# %%
print(f"this notebook ran in {time.perf_counter() - START:.0f} s")

# %% [markdown]
# ## Run at full scale
#
# GTA5 → Cityscapes with DeepLab-v2 ResNet-101, from the MaxSquare GTA5 source checkpoint
# (`$DATA_ROOT/checkpoints/GTA5_source.pth`, see the README), `lambda_target 0.1`, batch 1, 15 rounds × 2 epochs
# (89,280 iterations), evaluated on Cityscapes val at 1024×512 with flip. The README reports MinEnt at 42.2 mIoU
# (source-only 36.9). One GPU, about a day:
#
# ```bash
# papermill notebooks/03_entropy_minimization.ipynb runs/notebooks/03_gta5_minent.ipynb \
#     -p RECIPE gta5_minent -p DATA_ROOT /data/prepared -p DEVICE cuda
# python -m udalib run gta5_minent --data-root /data/prepared --device cuda   # the same, from the shell
# ```

# %% [markdown]
# ## References
#
# * T.-H. Vu, H. Jain, M. Bucher, M. Cord, P. Pérez. *ADVENT: Adversarial Entropy Minimization for Domain Adaptation
#   in Semantic Segmentation.* CVPR 2019 (arXiv 1811.12833). MinEnt is its Eq. 3.
# * M. Chen, H. Xue, D. Cai. *Domain Adaptation for Semantic Segmentation with Maximum Squares Loss.* ICCV 2019
#   (arXiv 1909.13589). Its code base runs MinEnt as `--target_mode entropy`.
# * The reference implementation, `ZJULearning/MaxSquareLoss` (commit 2fbc18f): `utils/loss.py:17`
#   (`softCrossEntropy`; the mean over all $N \cdot C \cdot H \cdot W$ entries that `losses.entropy_loss(..., "original")`
#   reproduces is line 33), `tools/solve_gta5.py:115` (`--target_mode entropy` selects it) and `:259` (the target
#   loss weighted by `lambda_target`).
