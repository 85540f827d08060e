# ---
# jupyter:
#   kernelspec:
#     display_name: Python 3
#     language: python
#     name: python3
# ---

# %% [markdown]
# # 05 · Adversarial adaptation of the output space (AdaptSegNet)
#
# **What you will learn.** How Tsai et al. (*Learning to Adapt Structured Output Space for Semantic Segmentation*,
# CVPR 2018) use a **discriminator** $D$ to make the segmenter's target predictions look like its source
# predictions. $D$ sees softmax maps $P = \mathrm{softmax}(G(x))$ and tells the domains apart; the segmenter $G$ is
# trained to fool it:
#
# $$\min_G\; \mathcal{L}_{seg}(x_s, y_s) + \sum_i \lambda^i_{adv}\, \mathcal{L}^i_{adv}(x_t), \qquad
# \min_{D_i}\; \mathcal{L}^i_d(P_s, P_t)$$
#
# with one discriminator per output level $i$ (the main head; **multi-level**: also the auxiliary head on stage 3).
# You will see what the discriminator sees, watch the two players' losses, and compare the result with
# source-only, AdaBN and **the same run with $\lambda_{adv}=0$**.
#
# **Runtime:** about a minute and a half on a 2-core CPU when the source model exists (notebook 01): the
# multi-level method and its control, and the multi-level method again for longer. The last cell prints this run's
# time.

# %% tags=["parameters"]
SEED: int = 0  # seed of the source model and of the adaptation runs
STEPS: int = 60  # adaptation iterations (each: a segmenter update, then a discriminator update)
LAMBDA_ADV_TARGET1: float | None = None  # λ_adv of the auxiliary output (the paper: 0.0002); None: adaptsegnet_multi's MiniCity preset
LAMBDA_ADV_TARGET2: float | None = None  # λ_adv of the main output (the paper: 0.001, LS-GAN 0.01); None: adaptsegnet_multi's MiniCity preset
LR_D: float | None = None  # discriminators' Adam learning rate (the paper: 1e-4); None: adaptsegnet_multi's MiniCity preset
GAN: str = "vanilla"  # "vanilla" (BCE) or "ls" (least squares)
RECIPE: str = ""  # full scale: "gta5_adaptsegnet_multi", "gta5_adaptsegnet_lsgan" or "gta5_adaptsegnet"
DATA_ROOT: str = ""  # folder written by data_scripts/, with pretrained/ (the ImageNet DeepLab init) (full scale)
DEVICE: str = "cpu"  # "cuda" at full scale
CASE_SEED: int | None = None  # None: the "works / breaks" cases from the atlas (mean over its seeds); a seed: train its runs now

# %% [markdown]
# ## Setup

# %%
import time

import pandas as pd
import torch
from IPython.display import Markdown, display

from udalib import losses, methods, results, viz, zoo
from udalib.data import minicity
from udalib.experiment import compare_runs, get_or_train, open_data, per_class_iou
from udalib.models.discriminator import FCDiscriminator
from udalib.train.checkpoint import load_checkpoint

preset = methods.method_config("adaptsegnet_multi", "minicity")  # the paper's defaults, then methods.PRESETS["adaptsegnet_multi"]["minicity"]
LAMBDA_ADV_TARGET1 = preset.lambda_adv_target1 if LAMBDA_ADV_TARGET1 is None else LAMBDA_ADV_TARGET1
LAMBDA_ADV_TARGET2 = preset.lambda_adv_target2 if LAMBDA_ADV_TARGET2 is None else LAMBDA_ADV_TARGET2
LR_D = preset.lr_d if LR_D is None else LR_D
START = time.perf_counter()
TARGET_EVAL = "minicity:target/val"
source_exp = zoo.source_experiment(SEED)
source_run = get_or_train(source_exp)  # notebook 01's run, or trained now (30 s)
source_model = source_run.model()
target_val = open_data(TARGET_EVAL, default_split="val", train=False, exp=source_exp)
source_val = open_data("minicity:source/val", default_split="val", train=False, exp=source_exp)

# %% [markdown]
# ## Why align the outputs rather than the features
#
# Feature-level adversarial adaptation asks a discriminator to confuse the domains in the backbone's feature space:
# thousands of channels that encode *appearance* (colour, texture, lighting), which legitimately differs between a
# game engine and a camera. Aligning all of it is hard and not needed for the task.
#
# The segmentation output is different. It has only $C$ channels, and whatever the appearance, both domains
# produce **street layouts**: road at the bottom, sky at the top, cars on the road, poles thin and vertical.
# Spatial layout and local context are shared structure, so a discriminator on softmax maps has a small,
# task-relevant job: *does this map look like a plausible street scene as the source model would draw it?* Compare
# the source model's predictions below on source and on target images: whatever differs in their layouts (clean or
# fragmented regions, shapes in the wrong place) is what $D$ will pick up, and what $G$ will be pushed to fix.

# %%
viz.plots.show_predictions({"source model": source_model}, source_val, [0, 1], class_ids=list(minicity.MINICITY_TRAINIDS),
                           title="source images (the domain the model was trained on)");
viz.plots.show_predictions({"source model": source_model}, target_val, [0, 1], class_ids=list(minicity.MINICITY_TRAINIDS),
                           title="target images (never labelled in training)");

# %% [markdown]
# ## The discriminator and the two losses
#
# A fully-convolutional network of 4×4 stride-2 convolutions: it gives one logit per patch (about $H/32 \times
# W/32$), each deciding from a window of the input, its *receptive field*. The original code's label convention
# (`wasidennis/AdaptSegNet`): **source = 0, target = 1**.

# %%
viz.show_source(FCDiscriminator)
d = FCDiscriminator(19)
convs = [m for m in d.modules() if isinstance(m, torch.nn.Conv2d)]
field, jump = 1, 1
for conv in convs:  # each conv widens the window by (kernel - 1) input steps of the layers before it
    field, jump = field + (conv.kernel_size[0] - 1) * jump, jump * conv.stride[0]
grid = tuple(d(torch.rand(1, 19, 64, 128)).shape[-2:])
display(Markdown(
    f"{len(convs)} convolutions: each decision sees a window of {field} × {field} pixels (MiniCity images are 64 "
    f"rows high), and a 64 × 128 image gets a {grid[0]} × {grid[1]} grid of decisions. "
    f"{sum(p.numel() for p in d.parameters()):,} parameters at the original width, `ndf` = 64."))

# %% [markdown]
# The discriminator minimises Eq. (2), the segmenter Eq. (4): with $\ell$ the binary cross-entropy on the logits
# (vanilla GAN) or the squared error on the raw logits (LS-GAN),
#
# $$\mathcal{L}_d = \tfrac12\,\ell(D(P_s), 0) + \tfrac12\,\ell(D(P_t), 1), \qquad \mathcal{L}_{adv} = \ell(D(P_t), 0).$$
#
#
# You will write these losses yourself in exercise 3; the library's code follows the exercise.

# %%
# a discriminator that cannot tell the domains apart answers 0.5 everywhere: logit 0 (vanilla), output 0.5 (LS)
print("vanilla:", losses.discriminator_loss(torch.zeros(1, 1, 2, 4), torch.zeros(1, 1, 2, 4)).item(), "= log 2")
print("LS-GAN: ", losses.discriminator_loss(torch.full((1, 1, 2, 4), 0.5), torch.full((1, 1, 2, 4), 0.5), "ls").item())

# %% [markdown]
# ## The method: one step, two players, in the paper's order
#
# 1. **Segmenter**, discriminators frozen: supervised loss on the source batch, and the adversarial loss on the
#    target batch's softmax maps (each level weighted by its $\lambda_{adv}$). One SGD step.
# 2. **Discriminators**, on *detached* maps: source → 0, target → 1. One Adam step, with its own poly schedule.
#
# Both are submodules of the method, so a checkpoint holds the discriminators and their optimiser too.

# %%
viz.show_source(methods.AdaptSegNet.step)
viz.show_source(methods.AdaptSegNet.update_segmenter)
viz.show_source(methods.AdaptSegNet.update_discriminators)

# %% [markdown]
# ## Train AdaptSegNet (multi-level) and its control
#
# The **control** is the same run with $\lambda_{adv} = 0$ at both levels: the discriminators are trained exactly
# as in the real run, but the segmenter ignores them. Its segmenter gets source-only updates while target batches
# pass through it in train mode (which moves the BatchNorm statistics), so it is the right baseline for "what
# did the adversarial term add?". **AdaBN** re-estimates the source model's BatchNorm statistics on target images.

# %%
if RECIPE:  # full scale: the original code's recipe on the real data
    from udalib.experiment import run
    from udalib.recipes import load_recipe
    full = run(load_recipe(RECIPE, data_root=DATA_ROOT, device=DEVICE))
    print(full.dir, *full.scores.items(), sep="\n")
common = dict(steps=STEPS, lr_d=LR_D, gan=GAN)
adapt_run = get_or_train(zoo.adaptation_experiment("adaptsegnet_multi", source_exp, lambda_adv_target1=LAMBDA_ADV_TARGET1,
                                                   lambda_adv_target2=LAMBDA_ADV_TARGET2, **common))
control_run = get_or_train(zoo.adaptation_experiment("adaptsegnet_multi", source_exp, label="control (lambda_adv 0)",
                                                     **methods.control_args("adaptsegnet_multi"), **common))
adabn_run = get_or_train(zoo.adabn_experiment(source_exp))

# %% [markdown]
# ## The losses of both players
#
# A discriminator that cannot tell the domains apart has $\mathcal{L}_d = \log 2 \approx 0.69$ (vanilla GAN).
# In the **control** nobody fights back: $D$ can learn to separate source from target outputs, so $\mathcal{L}_d$
# falls and the (unused) adversarial loss of the segmenter climbs. In **AdaptSegNet** the segmenter pushes back, and
# $\mathcal{L}_d$ should stay nearer chance: the target maps become harder to tell from source maps. The line under
# the curves compares the two.

# %%
import math

histories = {"AdaptSegNet": adapt_run.history(), "control": control_run.history()}
chance = (math.log(2), "chance (log 2)") if GAN == "vanilla" else (0.25, "chance (LS: 0.25)")
viz.plots.training_curves(histories, keys=("seg", "adv_out", "d_out", "d_aux"),
                          reference={"d_out": chance, "d_aux": chance});
last = {name: h[["d_out", "adv_out"]].dropna().tail(10).mean() for name, h in histories.items()}  # last ten steps
display(Markdown(
    f"Over the last ten steps, $\\mathcal{{L}}_d$ of the main output averages {last['control'].d_out:.2f} in the "
    f"control and {last['AdaptSegNet'].d_out:.2f} in AdaptSegNet (chance: {chance[0]:.2f}); the segmenter's "
    f"adversarial loss {last['control'].adv_out:.2f} and {last['AdaptSegNet'].adv_out:.2f}."))


# %% [markdown]
# ## What the discriminator sees
#
# Each cell is one discriminator decision, $P(\text{target})$: red = "this looks like a target map", blue = "source".
# **Before adaptation**: the control's discriminator, trained for the same steps against a segmenter that never
# adapted, looking at that segmenter's target predictions. **After**: the adapted run's discriminator on the adapted
# segmenter's predictions. We load each run's checkpoint, which holds the discriminators.

# %%
def trained_method(r):  # the run's Method with every network it trained, discriminators included
    method = methods.build_method(r.config.method, r.model(), r.config.preset, **r.config.method_args)
    load_checkpoint(r.dir / "checkpoint.pt", method)
    return method.eval()


# %%
before, after = trained_method(control_run), trained_method(adapt_run)
players = {"before (control's D)": (before.model, before.discriminators["out"]),
           "after (AdaptSegNet's D)": (after.model, after.discriminators["out"])}
viz.plots.show_domain_confidence(players, target_val, [0, 1, 2], gan=GAN);

# %%
# mean P(target) in %: a discriminator that separates the domains gives source ~0 and target ~100
scores = viz.plots.discriminator_scores(players, {"source val": source_val, "target val": target_val}, gan=GAN)
gap = scores["target val"] - scores["source val"]  # how far apart the discriminator puts the two domains
b, a = scores.index
display(Markdown(
    f"Before adaptation the discriminator gives source images {scores.loc[b, 'source val']:.0f} % and target images "
    f"{scores.loc[b, 'target val']:.0f} % P(target), {abs(gap[b]):.0f} points apart; after adaptation "
    f"{scores.loc[a, 'source val']:.0f} % and {scores.loc[a, 'target val']:.0f} %, {abs(gap[a]):.0f} points apart: the "
    "segmenter's target maps have become " + ("harder" if abs(gap[a]) < abs(gap[b]) else "no harder")
    + " to tell from its source maps."))
scores

# %% [markdown]
# Note that the discriminator sees only softmax maps, never images: what it detects is a difference in the *shape*
# of the predictions (fragmented regions, implausible layouts), which is exactly what the segmenter is pushed to fix.
# A GAN stopped after a few dozen steps is rarely at its equilibrium, where the two domains would be
# indistinguishable.

# %% [markdown]
# ## Results

# %%
runs = {"source-only": source_run, "AdaBN": adabn_run, "control (lambda_adv 0)": control_run,
        "AdaptSegNet multi": adapt_run}
table = compare_runs(runs, baseline=source_run, control=control_run)
table.round(2)

# %%
gain_bn = control_run.miou(TARGET_EVAL) - source_run.miou(TARGET_EVAL)
gain_adv = adapt_run.miou(TARGET_EVAL) - control_run.miou(TARGET_EVAL)
print(f"of AdaptSegNet's {gain_bn + gain_adv:+.1f} points over source-only, {gain_bn:+.1f} come from training on "
      f"target batches at all (BatchNorm statistics) and {gain_adv:+.1f} from the adversarial term itself.")
# the teaching claim, checked: at least 2 points above source-only (on each of the seeds 0-4 of
# benchmarks/results/minicity_table.csv too)
assert adapt_run.miou(TARGET_EVAL) >= source_run.miou(TARGET_EVAL) + 2, \
    f"AdaptSegNet should gain at least 2 mIoU points over source-only\n{table}"

# %% [markdown]
# ## Per class

# %%
viz.plots.iou_bars({name: r.scores[TARGET_EVAL] for name, r in runs.items()}, title="target val, per-class IoU (%)");

# %%
per_class = per_class_iou(runs, TARGET_EVAL)
change = per_class.sub(per_class["control (lambda_adv 0)"], axis=0)  # change per class against the control
adv = change["AdaptSegNet multi"]
print(f"AdaptSegNet against the control: gains on {', '.join(adv.index[adv >= 0.5]) or 'none'}; "
      f"loses on {', '.join(adv.index[adv <= -0.5]) or 'none'}")
change.round(1)

# %%
viz.plots.show_predictions({"source-only": source_model, "control": control_run.model(), "AdaptSegNet": adapt_run.model()},
                           target_val, [0, 1, 2], class_ids=list(minicity.MINICITY_TRAINIDS));

# %% [markdown]
# **Reading the table honestly.** A single seed is noisy, so read every seed of
# `benchmarks/results/minicity_table.csv` (`python benchmarks/minicity_table.py`, mIoU % on target val and, in the
# source column of the table above, what adaptation costs on the source domain):

# %%
bench = results.benchmark_summary(["source_only", "adabn", "control_adaptsegnet", "adaptsegnet",
                                       "adaptsegnet_multi", "maxsquare_iw_multi", "oracle"])
for row in ("adaptsegnet", "adaptsegnet_multi", "maxsquare_iw_multi"):
    b = bench.loc[row]
    print(f"{row:20s} {b['as trained']:.1f} ± {b['± std']:.1f}: {b['vs max(AdaBN, control)']:+.1f} over the better of "
          f"AdaBN and its control, ahead of both on {b['seeds ahead']:.0f} of {b.seeds:.0f} seeds")
mean, margin = bench["as trained"], bench["vs max(AdaBN, control)"]
source_cost = table.loc["AdaptSegNet multi", "source mIoU"] - table.loc["source-only", "source mIoU"]
display(Markdown(
    f"The $\\lambda_{{adv}}=0$ control trains the discriminators but gives the segmenter no adversarial gradient; "
    f"it lands {mean['control_adaptsegnet'] - mean['adabn']:+.1f} from AdaBN, since both carry the target's BatchNorm "
    f"statistics (`zoo.BN_STATS`). Over the better of the two, the adversarial term adds {margin['adaptsegnet']:+.1f} "
    f"single-level and {margin['adaptsegnet_multi']:+.1f} multi-level; multi-level reaches "
    f"{mean['adaptsegnet_multi']:.1f} against {mean['maxsquare_iw_multi']:.1f} for MaxSquare+IW+Multi (notebook 04) "
    f"at the same number of steps. On this seed, the source column of the results table shows what pulling target "
    f"maps toward source-like maps does on the source domain: {source_cost:+.1f} points against source-only."))
# the teaching claim, checked over the seeds of the benchmark table: the adversarial term adds a margin over both controls
assert margin["adaptsegnet_multi"] > 0 and margin["adaptsegnet"] > 0, bench
bench

# %% [markdown]
# The margin is not on every class: the per-class change against the control (printed above the per-class table)
# names the classes that lose; thin poles, a cell or two wide on the output grid, are what the atlas reading below
# singles out.
#
# **The MiniCity preset.** It departs from the paper's values (the config's defaults, which are the original code's
# README values) in the adversarial weights, the discriminator's learning rate and its width; the next cell reads
# both from the config. In a few dozen steps the discriminator barely learns at the paper's values (exercise 1 lets
# you check). The cell after it trains the multi-level run for longer and compares it with the default run.

# %%
paper, preset = methods.method_config("adaptsegnet_multi"), methods.method_config("adaptsegnet_multi", "minicity")
fields = ["lambda_adv_target1", "lambda_adv_target2", "lr_d", "ndf"]
pd.DataFrame({"paper (the original's README)": [getattr(paper, f) for f in fields],
              "MiniCity preset": [getattr(preset, f) for f in fields]}, index=fields).assign(
    ratio=lambda t: t.iloc[:, 1] / t.iloc[:, 0])

# %%
# the multi-level run for longer, found in runs/ or trained now
if not RECIPE:
    LONG_STEPS = 5 * STEPS // 3  # two thirds more steps than the run above
    long_run = get_or_train(zoo.adaptation_experiment(
        "adaptsegnet_multi", source_exp, lambda_adv_target1=LAMBDA_ADV_TARGET1, lambda_adv_target2=LAMBDA_ADV_TARGET2,
        **{**common, "steps": LONG_STEPS}))
    longer = pd.DataFrame({name: {"target val": r.miou(TARGET_EVAL), "source val": r.miou("minicity:source/val")}
                           for name, r in [("AdaBN", adabn_run), (f"control, {STEPS} steps", control_run),
                                           (f"AdaptSegNet multi, {STEPS} steps", adapt_run),
                                           (f"AdaptSegNet multi, {LONG_STEPS} steps", long_run)]}).T
    floor = max(adabn_run.miou(TARGET_EVAL), control_run.miou(TARGET_EVAL))
    more = long_run.miou(TARGET_EVAL) - adapt_run.miou(TARGET_EVAL)
    display(Markdown(
        f"Over the better of AdaBN and the control: {adapt_run.miou(TARGET_EVAL) - floor:+.1f} after {STEPS} steps, "
        f"{long_run.miou(TARGET_EVAL) - floor:+.1f} after {LONG_STEPS}. The {LONG_STEPS - STEPS} more steps move the "
        f"target score by {more:+.1f} and the source score by "
        f"{long_run.miou('minicity:source/val') - adapt_run.miou('minicity:source/val'):+.1f} on this seed: "
        + ("the adversarial term, with the preset's large weights, does most of its work early."
           if abs(more) < 1 else "longer training still changes the result on this seed.")))
longer.round(2) if not RECIPE else "the longer run is MiniCity's"

# %% [markdown]
# ## Where it works, where it breaks
#
# The atlas (notebook 03; `benchmarks/results/minicity_atlas.csv`, read in notebook 11) ran AdaptSegNet multi-level
# with its controls on each single shift factor of notebook 00 alone, several seeds each. `results.factor_cases`
# reads its best and worst factor from it and shows both cases class by class: source-only, AdaBN, the λ=0 control
# and the method, each the mean over the atlas's seeds, and in the last column the
# method's margin over the better of AdaBN and the control (taken seed by seed, then averaged). With `CASE_SEED` set
# to a seed, the same table comes from that seed's four runs of each case, found or trained now (about a minute).

# %%
ROW = "adaptsegnet_multi"  # the row of zoo.MINICITY_ROWS; its controls: zoo.CONTROLS[ROW]
results.factor_cases(ROW, CASE_SEED) if not RECIPE else "the atlas is MiniCity's"

# %%
# the reading below is the atlas's (benchmarks/results/minicity_atlas.csv), whatever CASE_SEED shows above
(works, _), (breaks, _) = results.works_and_breaks(ROW).values()
assert (works, breaks) == ("palette", "camera"), (works, breaks)  # the two shifts the reading explains
w, b = (results.atlas_case_table(ROW, f)["margin"].drop("mIoU") for f in (works, breaks))
prior = results.atlas_margins()[0].loc[ROW, "prior"]
display(Markdown(
    f"In the atlas, under `{works}` {', '.join(w.nlargest(3).index)} gain most over the better of AdaBN and the "
    f"control ({', '.join(f'{v:+.1f}' for v in w.nlargest(3))}); {', '.join(w[w < 0].index) or 'no class'} "
    f"{'loses' if (w < 0).sum() == 1 else 'lose'}. Under `{breaks}` {(b < 0).sum()} of {len(b)} classes lose, "
    f"{', '.join(b.nsmallest(3).index)} most, and the mean margin is {b.mean():+.1f}. Under `prior` the margin is "
    f"{prior:+.1f}."))

# %% [markdown]
# **Reading it.** The discriminator sees output *layouts*, never colours. Under `palette` the target's layouts are the
# source's, so making the target outputs look like source outputs repairs what the colours broke. A pole is a cell
# or two wide on the output grid, and a likely reason for its loss is that the segmenter drops what the
# discriminator reads as noise. Under `camera` the horizon is higher in every target image: the *correct* target
# layout differs from the source's, and the discriminator pushes the target outputs toward the source's lower
# horizon, below what simply re-estimating BatchNorm statistics gives. Output-space alignment assumes the label
# layout is shared between the domains; a camera change breaks that assumption outright, and a label-prior change
# (`prior`, denser traffic) breaks it too (the atlas row in notebook 11).

# %% [markdown]
# ## The paper's claim, over seeds
#
# Read from the benchmark table (every seed) at run time; the rule, every paper's claims and the reasons: notebook 11 and
# `benchmarks/RESULTS.md`.

# %%
results.claims_report(['AdaptSegNet multi-level > single-level'])

# %% [markdown]
# ## Summary
#
# * AdaptSegNet aligns **softmax outputs**, a low-dimensional space whose layout is shared across domains, with a
#   patch discriminator per output level.
# * Each step has two players, in order: the segmenter (source CE + fooling the frozen $D$ on target maps), then the
#   discriminators (source → 0, target → 1 on detached maps). Adam with its own poly schedule for $D$.
# * The discriminator loss near $\log 2$ means $D$ is fooled; the control shows how $D$ fares when nobody
#   fights back.
# * Against the $\lambda_{adv}=0$ control and AdaBN, the adversarial term adds a margin on MiniCity (checked over
#   seeds above). Report it against the control and AdaBN, not only against source-only.
#
# ## Exercises
#
# 1. Use the paper's values, `LAMBDA_ADV_TARGET1 = 0.0002`, `LAMBDA_ADV_TARGET2 = 0.001`, `LR_D = 1e-4`. How do
#    the discriminator loss curves and the gain over the control change?
# 2. Set `GAN = "ls"`. The LS-GAN loss has a different scale (chance is 0.25 for $\mathcal{L}_d$ of a
#    discriminator that outputs 0.5): what value of `LAMBDA_ADV_TARGET2` gives a comparable push?
# 3. Implement the per-patch GAN loss and the two adversarial losses built on it (below, checked on values computed
#    by hand).
# 4. Predict, then run: does the auxiliary discriminator help on MiniCity (below)?
# 5. The discriminator's receptive field covers the whole MiniCity image height. What would a discriminator with
#    3 layers (receptive field $1 + 3 \cdot (1 + 2 + 4) = 22$ pixels) judge instead? Write it with `nn.Sequential` and pass it through
#    `viz.plots.domain_probability`.

# %% [markdown] tags=["exercise"]
# ### Exercise 3: implement the discriminator's loss and the adversarial term
#
# With the label convention of the reference code (source = 0, target = 1) and $\ell$ the binary cross-entropy on
# logits (`"vanilla"`) or the squared error on the raw logits (`"ls"`), write `my_patch_loss(d_logits, domain, kind)`:
# $\ell$ of each patch against the label `domain`, **one value per patch**, the same shape as the discriminator
# logits `(N, 1, h, w)` (the library only gives the mean). Then, averaging over the patches,
# `my_discriminator_loss(d_source, d_target, kind)` $= \tfrac12\,\ell(D(P_s), 0) + \tfrac12\,\ell(D(P_t), 1)$ and
# `my_adversarial_loss(d_target, kind)` $= \ell(D(P_t), 0)$. The check compares them with values computed by hand.

# %% nbgrader={"grade": false, "grade_id": "05-ex3-solution", "locked": false, "schema_version": 3, "solution": true, "task": false} tags=["solution"]
import torch
import torch.nn.functional as F


def my_patch_loss(d_logits: torch.Tensor, domain: float, kind: str = "vanilla") -> torch.Tensor:
    ### BEGIN SOLUTION
    target = torch.full_like(d_logits, domain)
    if kind == "vanilla":
        return F.binary_cross_entropy_with_logits(d_logits, target, reduction="none")
    return (d_logits - target) ** 2
    ### END SOLUTION


def my_discriminator_loss(d_source: torch.Tensor, d_target: torch.Tensor, kind: str = "vanilla") -> torch.Tensor:
    ### BEGIN SOLUTION
    return 0.5 * (my_patch_loss(d_source, 0.0, kind).mean() + my_patch_loss(d_target, 1.0, kind).mean())
    ### END SOLUTION


def my_adversarial_loss(d_target: torch.Tensor, kind: str = "vanilla") -> torch.Tensor:
    ### BEGIN SOLUTION
    return my_patch_loss(d_target, 0.0, kind).mean()
    ### END SOLUTION

# %% nbgrader={"grade": true, "grade_id": "05-ex3-check", "locked": true, "points": 1, "schema_version": 3, "solution": false, "task": false} tags=["check"]
import math

import torch

# two patches with logits 0 and log 3: sigmoid gives P(target) = 1/2 and 3/4
d = torch.tensor([0.0, math.log(3)]).view(1, 1, 1, 2)
by_hand = {  # l(logit, label) per patch
    ("vanilla", 0.0): [math.log(2), -math.log(1 / 4)],  # -log(1 - P(target))
    ("vanilla", 1.0): [math.log(2), -math.log(3 / 4)],  # -log P(target)
    ("ls", 0.0): [0.0, math.log(3) ** 2],  # (logit - 0)^2
    ("ls", 1.0): [1.0, (math.log(3) - 1) ** 2],  # (logit - 1)^2
}
for (kind, domain), expected in by_hand.items():
    got = my_patch_loss(d, domain, kind)
    assert got.shape == d.shape, "one loss value per patch: the shape of the discriminator logits"
    assert torch.allclose(got.flatten(), torch.tensor(expected)), (
        f"{kind}, label {domain:g}: expected {expected}, got {got.flatten().tolist()}")
d_source, d_target = d, d.flip(-1)  # the same two patches, in the other order
for kind in ("vanilla", "ls"):
    mean = {k: sum(v) / 2 for k, v in by_hand.items() if k[0] == kind}
    assert math.isclose(my_discriminator_loss(d_source, d_target, kind).item(),
                        0.5 * (mean[kind, 0.0] + mean[kind, 1.0]), rel_tol=1e-5), (
        f"{kind}: L_d = (l(D(P_s), 0) + l(D(P_t), 1)) / 2, each averaged over the patches; source = 0, target = 1")
    assert math.isclose(my_adversarial_loss(d_target, kind).item(), mean[kind, 0.0], rel_tol=1e-5), (
        f"{kind}: the segmenter wants its target maps judged source (0)")
print("my_patch_loss, my_discriminator_loss and my_adversarial_loss give the values computed by hand")

# %% [markdown]
# The library's losses (`udalib/losses/adversarial.py`), to compare with your solution:

# %% tags=["answer-source"]
viz.show_source(losses.gan_loss)
viz.show_source(losses.discriminator_loss)
viz.show_source(losses.adversarial_loss)

# %% [markdown] tags=["exercise"]
# ### Exercise 4: predict, then run
#
# This notebook trains the multi-level variant: a second discriminator on the auxiliary output. Before running the
# next cell, predict: over every seed of `benchmarks/results/minicity_table.csv` and the shifts of the atlas
# (`minicity_atlas.csv`, several seeds each), how many points does the multi-level variant add over the single-level
# one, and on how many seeds is it ahead?

# %% [markdown]
# *Your prediction:* ...

# %%
results_dir = results.BENCHMARK_TABLE.parent
seeds = pd.read_csv(results_dir / "minicity_table.csv").pivot(index="seed", columns="method", values="target_miou")
by_seed = seeds["adaptsegnet_multi"] - seeds["adaptsegnet"]
atlas = pd.read_csv(results_dir / "minicity_atlas.csv").pivot_table(index="factor", columns="method",
                                                                 values="target_miou", aggfunc="mean")
by_shift = atlas["adaptsegnet_multi"] - atlas["adaptsegnet"]
print(f"{len(by_seed)} seeds: {by_seed.mean():+.2f} on average, ahead on {(by_seed > 0).sum()} of {len(by_seed)} "
      f"(from {by_seed.min():+.2f} to {by_seed.max():+.2f})")
print(f"atlas, {len(by_shift)} shifts: {by_shift.mean():+.2f} on average, at most {by_shift.max():+.2f}")
spread = seeds["adaptsegnet"].std()
# a check on the stored tables (no seed, no parameter of this notebook changes them): the discussion below says so
assert abs(by_shift).max() < 1 and abs(by_seed.mean()) < min(1, spread), (by_seed, by_shift)
display(Markdown(
    f"**Discussion.** The auxiliary discriminator helps little on MiniCity: {by_seed.mean():+.2f} points on average "
    f"over the {len(by_seed)} seeds, less than the spread of the single-level method between seeds ({spread:.1f}), and at most "
    f"{abs(by_shift).max():.2f} points either way on the shifts of the atlas."))
pd.DataFrame({"multi - single (mIoU points)": by_shift}).round(2)

# %% [markdown]
# MiniDeepLab's auxiliary head
# sits one stage before the main one (stage 3 against stage 4, both at output stride 8) on a 64×128 image: the two
# outputs carry nearly the same layout, so a second discriminator has little new to align. The paper's multi-level
# design pairs DeepLab-v2's conv4 and conv5 outputs on images of 1024×512 and more.

# %%
print(f"this notebook ran in {time.perf_counter() - START:.0f} s")

# %% [markdown]
# ## Run at full scale
#
# The AdaptSegNet README's three GTA5 → Cityscapes runs (DeepLab-v2 ResNet-101 from the ImageNet init, BN affine
# frozen, batch 1, source 1280×720, target 1024×512, 150k of a 250k-iteration poly schedule; one GPU, about two
# days each). Reported on Cityscapes val: 44.1 (single-level LS-GAN), 42.4 (multi-level), 41.4 (single-level).
#
# ```bash
# papermill notebooks/05_adversarial_output_space.ipynb runs/notebooks/05_gta5_adaptsegnet_lsgan.ipynb \
#     -p RECIPE gta5_adaptsegnet_lsgan -p DATA_ROOT /data/prepared -p DEVICE cuda
# papermill notebooks/05_adversarial_output_space.ipynb runs/notebooks/05_gta5_adaptsegnet_multi.ipynb \
#     -p RECIPE gta5_adaptsegnet_multi -p DATA_ROOT /data/prepared -p DEVICE cuda
# papermill notebooks/05_adversarial_output_space.ipynb runs/notebooks/05_gta5_adaptsegnet.ipynb \
#     -p RECIPE gta5_adaptsegnet -p DATA_ROOT /data/prepared -p DEVICE cuda
# ```
#
# ## References
#
# * Y.-H. Tsai, W.-C. Hung, S. Schulter, K. Sohn, M.-H. Yang, M. Chandraker. *Learning to Adapt Structured Output
#   Space for Semantic Segmentation.* CVPR 2018 (arXiv 1802.10349; the LS-GAN results are in the v4 appendix).
# * X. Mao et al. *Least Squares Generative Adversarial Networks.* ICCV 2017.
# * The reference implementation, `wasidennis/AdaptSegNet` (commit fca9ff0): `model/discriminator.py:5`
#   (`FCDiscriminator`); in `train_gta2cityscapes_multi.py`, line 261 (the labels, source 0 and target 1), lines
#   326 and 330 (the adversarial terms of the two levels), line 334 (their weighted sum), lines 356 to 384 (the
#   discriminators' losses on source and target maps, each halved at lines 362 and 384).
