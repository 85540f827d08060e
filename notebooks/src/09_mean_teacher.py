# ---
# jupyter:
#   kernelspec:
#     display_name: Python 3
#     language: python
#     name: python3
# ---

# %% [markdown]
# # 09 · The mean teacher: DACS, ClassMix and the confidence weight
#
# **What you will learn.** Notebook 08's self-training labels the target in *rounds*, with the model it has at the
# start of each round. A **mean teacher** (Tarvainen & Valpola, NeurIPS 2017) labels every batch instead, with a
# copy of the segmenter whose weights are an exponential moving average (EMA) of the segmenter's:
# slower than the student, smoother, and never trained by gradient. DACS (Tranheden et al., WACV 2021) builds on it:
#
# * **ClassMix across domains**: half the classes of a source image are pasted onto a target image; the mixed
#   image's label is the source label where pasted and the teacher's pseudo-label elsewhere.
# * **A confidence weight**: the pseudo-labelled pixels count as much as the share of the batch's target pixels on
#   which the teacher is confident.
#
# $$\min_\theta\; \mathcal{L}_{seg}(x_s, y_s) + \lambda\,\mathcal{L}_{mix}(x_m, y_m, w_m), \qquad
#   \theta'_t = \alpha_t\,\theta'_{t-1} + (1-\alpha_t)\,\theta_t$$
#
# You will plot the teacher's decay $\alpha_t$ and see which student iterates the teacher averages, draw ClassMix on
# a real MiniCity batch, follow the confidence weight through training, see what MIC's block masks hide, ask what
# BatchNorm learns from mixed batches, and read the papers' claims (DACS, the mean teacher, rare-class sampling,
# MIC) checked on five seeds against the controls of notebook 01: **AdaBN** and the **λ = 0 control** (the same
# training with the target loss switched off), then see on which shift factors each gains and where it breaks. A
# method's **margin** is its score minus the better of the two.
#
# **Runtime:** about 20 s on a 2-core CPU after notebook 01 (one DACS run of 60 steps; the source model comes from
# notebook 01), about a minute opened alone on a fresh clone (MiniCity generated and the source model trained
# first); the last cell prints this run's time.

# %% tags=["parameters"]
SEED: int = 0  # seed of the source model and of the DACS run
STEPS: int = 60  # adaptation iterations (source + target batch each)
ALPHA: float | None = None  # the teacher's EMA decay (the original: alpha_teacher); None: dacs's MiniCity preset
THRESHOLD: float | None = None  # confidence of a pseudo-label that counts in the weight; None: dacs's MiniCity preset
RECIPE: str = ""  # full scale: "gta5_dacs" (udalib/recipes/)
DATA_ROOT: str = ""  # folder written by data_scripts/ (full scale)
DEVICE: str = "cpu"  # "cuda" at full scale

# %% [markdown]
# ## Setup

# %%
import copy
import time

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import torch
from IPython.display import Markdown, display
from matplotlib.patches import Patch

from udalib import results, verdicts, viz, zoo
from udalib.data import eval_loader, minicity
from udalib.data.labels import CITYSCAPES_CLASSES, colorize
from udalib.eval.evaluate import evaluate
from udalib.experiment import get_or_train, open_data
from udalib.losses import dacs as dl
from udalib.losses import mic
from udalib.methods import build_method, method_config
from udalib.methods.adabn import adapt_batchnorm
from udalib.methods.dacs import DACS
from udalib.methods.mean_teacher import MeanTeacher
from udalib.train.checkpoint import load_checkpoint


def draw_row(axes, panels, titles):
    """One row of image panels (a 2-D panel in grey), titled, without ticks."""
    for ax, panel, title in zip(axes, panels, titles):
        ax.imshow(panel, cmap="gray" if panel.ndim == 2 else None)
        ax.set_title(title, fontsize=7)
        ax.set_xticks([])
        ax.set_yticks([])


START = time.perf_counter()
TARGET_EVAL = "minicity:target/val"
CLASSES = list(minicity.MINICITY_TRAINIDS)
preset = method_config("dacs", "minicity")  # the paper's defaults, then methods.PRESETS["dacs"]["minicity"]
ALPHA = preset.alpha if ALPHA is None else ALPHA
THRESHOLD = preset.threshold if THRESHOLD is None else THRESHOLD
source_exp = zoo.source_experiment(SEED)
source_run = get_or_train(source_exp)  # notebook 01's run, or trained now (about 30 s)
target_val = open_data(TARGET_EVAL, default_split="val", train=False, exp=source_exp)

# %% [markdown]
# ## The mean teacher
#
# After every optimiser step of the segmenter (the *student*), the teacher moves towards it by $1 - \alpha_t$, with
# $\alpha_t = \min(1 - \frac{1}{t+1}, \alpha)$ and $t$ the number of updates before this one. The first update copies
# the student ($\alpha_0 = 0$); until $1 - 1/(t+1)$ reaches $\alpha$, the teacher is the plain average of the
# student's weights so far.

# %%
viz.show_source(MeanTeacher.decay)
viz.show_source(MeanTeacher.update)

# %% [markdown]
# Which student iterates does the teacher hold, and with what weight? The teacher is linear in the iterates, so a
# student with one weight per step, set to 1 at its own step and 0 elsewhere, leaves in the teacher the weight each
# iterate got. The library's `MeanTeacher` does the averaging below, after `STEPS` updates and after five times as
# many.

# %%
def iterate_weights(updates: int, alpha: float = ALPHA) -> np.ndarray:
    """The weight of each of the student's ``updates`` iterates in the teacher after ``updates`` updates."""
    student = torch.nn.Linear(updates, 1, bias=False)
    teacher = MeanTeacher(student, alpha)
    for k in range(updates):
        with torch.no_grad():
            student.weight.zero_()
            student.weight[0, k] = 1.0  # the k-th iterate: 1 in its own slot
        teacher.update(student)
    return teacher.ema.weight[0].numpy().copy()


clock = MeanTeacher(torch.nn.Linear(1, 1), ALPHA)  # only its update counter moves
alphas = []
for _ in range(5 * STEPS):
    alphas.append(clock.decay())
    clock.updates += 1
short, long = iterate_weights(STEPS), iterate_weights(5 * STEPS)

fig, (a, b) = plt.subplots(1, 2, figsize=(11, 3.2))
a.plot(alphas, label=r"$\alpha_t = \min(1 - 1/(t+1), \alpha)$")
a.axvline(STEPS, color="grey", ls="--", lw=1, label=f"STEPS = {STEPS}")
a.set(xlabel="update t", ylabel=r"$\alpha_t$", title=f"the teacher's decay (α = {ALPHA})")
a.legend(fontsize=8)
b.plot(np.arange(1, STEPS + 1), short, label=f"after {STEPS} updates")
b.plot(np.arange(1, 5 * STEPS + 1), long, label=f"after {5 * STEPS} updates")
b.set(xlabel="student iterate (step)", ylabel="weight in the teacher", title="what the teacher averages")
b.legend(fontsize=8)
fig.tight_layout()

plain = float(np.abs(short - 1 / STEPS).max())
first_full = next((t for t, x in enumerate(alphas) if x >= ALPHA), None)
window = round(1 / (1 - ALPHA))  # 1 / (1 - alpha) updates: the EMA's memory
recent = float(long[-window:].sum())
display(Markdown(
    f"After {STEPS} updates every iterate weighs {short.mean():.4f} = 1/{STEPS} (largest departure from the plain "
    f"average: {plain:.1e}): " + (
        f"$\\alpha_t$ first reaches $\\alpha$ at update {first_full}, after the run ends, so **at {STEPS} steps the "
        "teacher is the plain average of the student's iterates**, not a moving average. "
        if first_full is None or first_full >= STEPS else
        f"$\\alpha_t$ reaches $\\alpha$ at update {first_full}, within the run. ")
    + f"After {5 * STEPS} updates the weights decay towards the past: the last {window} iterates "
    f"hold {100 * recent:.0f} % of the teacher, the first one {long[0]:.1e}."))
assert plain < 1e-6 or (first_full is not None and first_full < STEPS)

# %% [markdown]
# ## DACS, one step
#
# Each step: the supervised loss on the source batch; the teacher's pseudo-labels and their confidence on the plain
# target batch; ClassMix of each source image onto its target image; colour jitter and blur on the mixed images;
# the pixel-weighted cross-entropy on them; one SGD step; the teacher's update.

# %%
viz.show_source(DACS.step)
viz.show_source(dl.confidence_weight)
viz.show_source(dl.pixel_weighted_ce)

# %%
if RECIPE:  # full scale: the original code's recipe on the real data
    from udalib.experiment import run
    from udalib.recipes import load_recipe
    full = run(load_recipe(RECIPE, data_root=DATA_ROOT, device=DEVICE))
    print(full.dir, *full.scores.items(), sep="\n")
args = {k: v for k, v in {"alpha": ALPHA, "threshold": THRESHOLD}.items() if getattr(preset, k) != v}
dacs_run = get_or_train(zoo.adaptation_experiment("dacs", source_exp, steps=STEPS, **args))  # about 10 s
dacs = build_method("dacs", dacs_run.model(), dacs_run.config.preset, **dacs_run.config.method_args)
load_checkpoint(dacs_run.dir / "checkpoint.pt", dacs)  # the student and its teacher, as the run ended
print(f"{dacs_run.name}: target val mIoU {dacs_run.miou(TARGET_EVAL):.1f}, source-only "
      f"{source_run.miou(TARGET_EVAL):.1f}; the teacher after {int(dacs.teacher.updates)} updates")

# %% [markdown]
# ## ClassMix on a MiniCity batch
#
# Four source training images and four target training images. For each pair, the classes drawn from the source
# label (half of them, rounded up; the ignore label counts as a class, as in the original) give the mask; the mixed
# image is the source where the mask is on and the target elsewhere; its label is the source label under the mask
# and the teacher's pseudo-label elsewhere (drawn white where the label is ignored). The weight of each pixel: 1
# under the mask, $w_t$ elsewhere.

# %%
source_train = open_data("minicity:source", default_split="train", train=False, exp=source_exp)
target_train = open_data("minicity:target", default_split="train", train=False, exp=source_exp)
pairs = range(4)
xs = torch.stack([source_train[i][0] for i in pairs])
ys = torch.stack([source_train[i][1] for i in pairs])
xt = torch.stack([target_train[i][0] for i in pairs])
confidence, pseudo = dacs.teacher(xt)["out"].softmax(dim=1).max(dim=1)
w_t = dl.confidence_weight(confidence, dacs.cfg.threshold)
draw = torch.Generator().manual_seed(SEED)
pasted = [dl.class_mix_classes(y, dacs.cfg.mix_ignore, generator=draw) for y in ys]
mask = torch.stack([dl.class_mix_mask(y, c) for y, c in zip(ys, pasted)])
mixed, mixed_label = dl.mix(mask, xs, xt), dl.mix(mask, ys, pseudo)


def coloured(label):
    rgb = colorize(label.numpy())
    rgb[label.numpy() == 255] = 255
    return rgb


def name(c: int) -> str:
    return "ignored" if c == 255 else CITYSCAPES_CLASSES[c]


fig, axes = plt.subplots(len(pairs), 5, figsize=(14, 1.7 * len(pairs) + 1.0))
for r in pairs:
    panels = [viz.plots.denormalize(xs[r], "imagenet"), viz.plots.denormalize(xt[r], "imagenet"), mask[r].numpy(),
              viz.plots.denormalize(mixed[r], "imagenet"), coloured(mixed_label[r])]
    titles = ["source image", "target image", "mask: " + ", ".join(name(int(c)) for c in pasted[r]),
              "mixed image", "mixed label (teacher on target)"]
    draw_row(axes[r], panels, titles)
handles = viz.plots.legend_handles(CLASSES) + [Patch(facecolor="white", edgecolor="grey", label="ignored")]
fig.legend(handles=handles, loc="lower center", ncol=len(handles), fontsize=8, frameon=False)
fig.tight_layout(rect=(0, 0.06, 1, 1))

present = [len(torch.unique(y)) for y in ys]
assert [len(c) for c in pasted] == [(n + n % 2) // 2 for n in present]
display(Markdown(
    f"The four source labels hold {', '.join(map(str, present))} classes (the ignore label counted); "
    f"{', '.join(str(len(c)) for c in pasted)} of them are pasted. The mask covers "
    f"{100 * mask.float().mean():.0f} % of the pixels: the pasted classes bring their shapes and the source's "
    f"context with them, so the mixed label's boundaries are the source's, exact, and the rest of the label is the "
    f"teacher's. On this batch the teacher is confident (top probability ≥ {dacs.cfg.threshold}) on "
    f"{100 * float(w_t):.0f} % of the target pixels: $w_t$ = {float(w_t):.2f}."))

# %% [markdown]
# ## The confidence weight over training
#
# $w_t$ is one number per batch: the share of the target batch's pixels whose top teacher probability reaches the
# threshold. The run logs the step's value every 10 steps (`metrics.csv`, column `pseudo_weight`). On the left, its
# course; on the right, how it depends on the threshold on the batch above, with the teacher as the run ended.

# %%
history = dacs_run.history().dropna(subset=["pseudo_weight"])
taus = np.linspace(0.5, 0.999, 60)
share = [float(dl.confidence_weight(confidence, t)) for t in taus]
fig, (a, b) = plt.subplots(1, 2, figsize=(11, 3.2))
a.plot(history["step"], history["pseudo_weight"], marker="o")
a.set(xlabel="step", ylabel="$w_t$", title="confidence weight of the pseudo-labels", ylim=(0, 1))
b.plot(taus, share)
b.axvline(dacs.cfg.threshold, color="grey", ls="--", lw=1, label=f"threshold {dacs.cfg.threshold}")
b.set(xlabel="threshold τ", ylabel="share of target pixels ≥ τ", title="the batch above", ylim=(0, 1))
b.legend(fontsize=8)
fig.tight_layout()
first, last = history["pseudo_weight"].iloc[0], history["pseudo_weight"].iloc[-1]
assert history["pseudo_weight"].max() < 1  # the last sentence below
display(Markdown(
    f"The weight goes from {first:.2f} at step {int(history['step'].iloc[0])} to {last:.2f} at step "
    f"{int(history['step'].iloc[-1])}: "
    + ("it grows as the teacher grows confident on the target, so the pseudo-labels count more as training goes on. "
       if last > first else "it does not grow over this run, as the teacher is no more confident at the end. ")
    + "Below 1 throughout: a target pixel never counts as much as a pasted source pixel, whose label is true."))

# %% [markdown]
# ## Rare-class sampling
#
# ClassMix pastes the classes a source image holds, so a class that few source pixels show is rarely pasted and
# rarely learnt. Rare-class sampling (RCS; Hoyer et al., DAFormer, CVPR 2022) draws the source images class first:
# class $c$ with probability $P(c) = \mathrm{softmax}_c\big((1 - f_c)/T\big)$, $f_c$ its share of the source labels'
# pixels, then an image that holds enough of $c$ (`udalib.data.rcs`, `Experiment.rcs_temperature`). Below, MiniCity's
# source statistics and the probabilities at DAFormer's $T$; whether RCS lifts the rare classes is a claim of the
# table at the end.

# %%
from udalib.data import rcs

T = 0.01  # DAFormer's rcs_class_temp
pixels = rcs.class_pixels(source_train)  # (images, classes) pixel counts of the source training labels
pixel_share = pixels.sum(0) / pixels.sum()
probs = rcs.rcs_class_probs(pixels.sum(0), T)
rcs_table = pd.DataFrame({"share of the source pixels (%)": 100 * pixel_share[CLASSES],
                          "images holding the class (%)": 100 * (pixels[:, CLASSES] > 0).mean(0),
                          f"RCS draws it (%), T = {T}": 100 * probs[CLASSES]},
                         index=[CITYSCAPES_CLASSES[c] for c in CLASSES])
by_share = rcs_table.iloc[:, 0].sort_values()
rarest, commonest = list(by_share.index[:3]), list(by_share.index[-3:])
drawn, holding = rcs_table.iloc[:, 2], rcs_table.loc[commonest].iloc[:, 1].min()


def listed(items) -> str:
    return ", ".join(items[:-1]) + " and " + items[-1]


display(Markdown(
    f"The three rarest classes, {listed(rarest)}, hold {by_share[rarest].sum():.1f} % of the source pixels "
    f"together; RCS draws one of them {drawn[rarest].sum():.0f} % of the time, and the three commonest, "
    f"{listed(commonest)}, {drawn[commonest].sum():.2f} % of the time; these are in "
    + ("every source image" if holding == 100 else f"{holding:.0f} % or more of the source images")
    + ", so they come with the others."))
rcs_table.round(2)

# %% [markdown]
# ## MIC: masked images, the teacher's labels
#
# MIC (Hoyer et al., CVPR 2023) adds one term to a host method (DACS, MinEnt, AdaptSegNet): the target image is cut
# into blocks, a share $r$ of them is masked out (set to the mean colour), and the student must predict, on the
# masked image, the teacher's pseudo-labels of the *whole* image, weighted by the teacher's confidence as in DACS.
# What is hidden can only be inferred from the context that survives the mask. On MiniCity's 64 × 128 images the
# blocks are 4 pixels (the original's 32 at half resolution, scaled to MiniCity).

# %%
viz.show_source(mic.block_mask)
viz.show_source(mic.masked_consistency_loss)

# %%
mic_preset = method_config("dacs_mic", "minicity")
keep = mic.block_mask(xt.shape, mic_preset.mask_ratio, mic_preset.mask_block,
                      generator=torch.Generator().manual_seed(SEED))
masked = mic.mask_image(xt, keep)
with torch.no_grad():
    dacs.model.eval()  # the DACS student (trained without MIC), as it is scored
    on_masked = dacs.model(masked)["out"].argmax(1)
    on_full = dacs.model(xt)["out"].argmax(1)
hidden = keep[:, 0] == 0

fig, axes = plt.subplots(len(pairs), 5, figsize=(14, 1.7 * len(pairs) + 1.0))
for r in pairs:
    panels = [viz.plots.denormalize(xt[r], "imagenet"), keep[r, 0].numpy(),
              viz.plots.denormalize(masked[r], "imagenet"), colorize(pseudo[r].numpy()), colorize(on_masked[r].numpy())]
    titles = ["target image", f"kept blocks (white), {100 * mic_preset.mask_ratio:.0f} % masked", "masked image",
              "teacher on the full image", "DACS student on the masked image"]
    draw_row(axes[r], panels, titles)
fig.legend(handles=viz.plots.legend_handles(CLASSES), loc="lower center", ncol=len(CLASSES), fontsize=8, frameon=False)
fig.tight_layout(rect=(0, 0.06, 1, 1))

agree_hidden = 100 * float((on_masked == pseudo)[hidden].float().mean())
agree_kept = 100 * float((on_masked == pseudo)[~hidden].float().mean())
agree_full = 100 * float((on_full == pseudo).float().mean())
display(Markdown(
    f"The mask hides {100 * float(hidden.float().mean()):.0f} % of the pixels. The DACS student, never trained on "
    f"masked images, agrees with the teacher's labels on {agree_full:.0f} % of the pixels of the full images; on the "
    f"masked images, on {agree_kept:.0f} % of the pixels it still sees and on {agree_hidden:.0f} % of the hidden "
    f"ones. The fall from {agree_full:.0f} % to {agree_hidden:.0f} % is what MIC's term trains away: predicting a "
    "region from its surroundings. Its claims (is X+MIC "
    "above X for each host, and above MIC with nothing masked, ratio 0?) are in the table at the end."))

# %% [markdown]
# ## BatchNorm with mixed batches
#
# The MiniCity runs keep BatchNorm running statistics of target batches only (`bn_stats="target"`, notebook 03).
# DACS has no plain target batch in its training forward passes: the source batch (which leaves the statistics
# alone) and the *mixed* batch (which moves them). Its model therefore ends with statistics of mixed images, target
# backgrounds with pasted source classes (the docstring of `udalib.methods.dacs.DACS` says so). Does that cost
# anything? Re-estimate the statistics on plain target images (AdaBN on the trained model) and score both.

# %%
retuned = copy.deepcopy(dacs.model)
adapt_batchnorm(retuned, eval_loader(target_train))
as_trained = evaluate(dacs.model, eval_loader(target_val), 19).miou
with_target_bn = evaluate(retuned, eval_loader(target_val), 19).miou
assert abs(as_trained - dacs_run.miou(TARGET_EVAL)) < 0.01  # the run's own score, recomputed
layer = next(m for m in dacs.model.modules() if isinstance(m, torch.nn.BatchNorm2d))
layer_t = next(m for m in retuned.modules() if isinstance(m, torch.nn.BatchNorm2d))
gap = float((layer.running_mean - layer_t.running_mean).abs().mean() / layer_t.running_var.sqrt().mean())
display(Markdown(
    f"Seed {SEED}: DACS as trained {as_trained:.1f}, with target BatchNorm statistics {with_target_bn:.1f} "
    f"({with_target_bn - as_trained:+.1f}). In the first BatchNorm layer, the mixed-image means differ from the "
    f"target's by {gap:.2f} standard deviations on average: "
    + ("the pasted source pixels move the statistics little, because half of each mixed image is target. "
       if abs(with_target_bn - as_trained) < 1 else
       "the pasted source pixels move the statistics enough to matter. ")))

# %%
# the same question over the seeds of the benchmark table (benchmarks/results/minicity_mean_teacher.csv)
if verdicts.MEAN_TEACHER_TABLE.is_file():
    bench = pd.read_csv(verdicts.MEAN_TEACHER_TABLE)
    rows = bench[(bench.method.isin(["dacs", "control_dacs"]) & (bench.steps == STEPS)) | (bench.method == "adabn")]
    display(rows.groupby("method")[["target_miou", "target_miou_target_bn"]].agg(["mean", "std", "count"]).round(1))
    change = (rows.set_index(["method", "seed"])["target_miou_target_bn"]
              - rows.set_index(["method", "seed"])["target_miou"]).dropna().groupby("method")
    said = [f"the score of `{m}` by {c.mean():+.1f} on average ({len(c)} seed{'s' if len(c) > 1 else ''})"
            for m, c in change if m != "adabn"]
    if said:
        display(Markdown(
            "Target statistics change " + " and ".join(said) + ". The λ=0 control trains on the same mixed batches, "
            "so it too ends with mixed-image statistics: the claims below score every row with target statistics "
            f"(`{zoo.MEAN_TEACHER_SCORE}`, as the benchmark compares them), and show DACS against AdaBN and its "
            "control as trained too."))
else:
    print(f"no benchmark table yet ({verdicts.MEAN_TEACHER_TABLE.name}); benchmarks/ writes it")

# %% [markdown]
# ## The papers' claims, on five seeds
#
# Each claim compares two rows of the five-seed table on the same seeds (the same source model): the paired
# difference, the seeds on which the claimed winner is ahead, and a verdict read from them (`udalib.verdicts`): it
# **holds on MiniCity** when the winner is ahead on the mean and on all seeds but one at most. A claim whose rows are
# not in the table is *not measured*. The rows are 60-step runs unless named, scored with BatchNorm statistics
# re-estimated on target train images (`udalib.zoo.MEAN_TEACHER_SCORE`: the same weights, the statistics AdaBN
# would give them; the rare-class claim reads the as-trained per-class IoU on both sides).

# %%
table = verdicts.verdicts()
display(Markdown(verdicts.markdown(table)))
counts = table["verdict"].value_counts()
display(Markdown(", ".join(f"{n} {v}" for v, n in counts.items()) + f", of {len(table)} claims."))

# %% [markdown]
# ## Where it works, where it breaks
#
# The claims above are read on the composite shift, every factor of MiniCity at once. The atlas (notebook 11) takes
# the factors one at a time: the source world with only one thing changed (the class colours, the texture, another
# camera's tone and haze, the sidewalk paved like the road, the exposure, a busier class mix, or a higher camera), the
# same streets image for image (`udalib.data.minicity.SHIFT_FACTORS`). Here are the mean teacher's rows on each, three
# seeds per cell, each against the better of its own AdaBN run and its own λ=0 control on the same seed, trained one
# thread per process as the atlas was, and scored with target statistics (`benchmarks/mean_teacher_atlas.py`,
# `benchmarks/results/minicity_atlas_mean_teacher.csv`). A cell reads margin ± std and the seeds on which the row is
# ahead of both controls.

# %%
if results.ATLAS_MEAN_TEACHER_TABLE.is_file():
    mt_mean, mt_std, mt_ahead = results.atlas_margins(mean_teacher=True)
    viz.plots.atlas_heatmap(mt_mean, mt_std, mt_ahead,
                            title=f"mean teacher: margin over max(AdaBN, λ=0 control), {zoo.MEAN_TEACHER_SCORE}")
    plt.show()
    single = mt_mean.drop(columns="composite", errors="ignore")
    all_seeds = mt_ahead.drop(columns="composite", errors="ignore").apply(
        lambda col: col.map(lambda a: a.split("/")[0] == a.split("/")[1] if isinstance(a, str) else False))
    lines = []
    for row in mt_mean.index:
        cases = results.works_and_breaks(row, mt_mean)
        (works, gain), (breaks, loss) = cases["works"], cases["breaks"]
        lines.append(f"* **{row}**: largest margin on *{works}* ({gain:+.1f}), smallest on *{breaks}* ({loss:+.1f}); "
                     f"ahead of both controls on every seed on {int(all_seeds.loc[row].sum())} of "
                     f"{int(single.loc[row].notna().sum())} single factors.")
    typical = single.median()  # the median row on each factor: one row's extreme (a discriminator's) moves it little
    hardest, easiest = typical.idxmin(), typical.idxmax()
    lines.append(f"\nOn the median row, the factor that leaves the least to the mean teacher is *{hardest}* (margin "
                 f"{typical[hardest]:+.1f}); the one where it gains most is *{easiest}* ({typical[easiest]:+.1f}); "
                 f"{int((typical > 0).sum())} of {typical.notna().sum()} single factors give it a positive margin.")
    display(Markdown("\n".join(lines)))
    if results.ATLAS_TABLE.is_file() and "dacs" in mt_mean.index:
        # beside the older methods of the atlas (notebook 11), from the same source models: the best of them on each
        # factor (its margin as trained; theirs end training with target statistics, zoo.BN_STATS)
        older = results.atlas_margins()[0]
        side = pd.DataFrame({"best older row": older.idxmax(), "its margin": older.max(),
                             "DACS": mt_mean.loc["dacs"]}).reindex(mt_mean.columns)
        ahead_of_older = (side["DACS"] > side["its margin"]).sum()
        display(side.round(1))
        text = (f"DACS's margin is larger than the best older method's on {ahead_of_older} of "
                f"{side['DACS'].notna().sum()} columns.")
        if "converge" in side.index and "cbst" in older.index:
            d, c = mt_mean.loc["dacs", "converge"], older.loc["cbst", "converge"]
            text += (f" Under *converge* (the sidewalk paved like the road), DACS's margin is {d:+.1f} and CBST's "
                     f"{c:+.1f}. ")
            if d < 0 < c:
                text += ("Both label the target with the model's own predictions, but CBST keeps only the pixels "
                         "above a class-wise confidence threshold, so the sidewalk pixels it is unsure of are left out; "
                         "DACS trains on every pseudo-label, weighted by one number for the whole batch (the share of "
                         "confident pixels), so the confusions it is sure of and those it is not are learned alike.")
        display(Markdown(text))
else:
    print(f"no mean-teacher atlas yet ({results.ATLAS_MEAN_TEACHER_TABLE.name}); "
          "python benchmarks/mean_teacher_atlas.py writes it")

# %% [markdown]
# ## Summary
#
# * The mean teacher is an average of the student's weights; with $\alpha_t = \min(1 - 1/(t+1), \alpha)$ it is the
#   *plain* average until $1/(1-\alpha)$ updates, so on a short run it is the mean of the student's iterates.
# * ClassMix pastes whole source classes onto target images: exact boundaries from the source label, pseudo-labels
#   for the rest, and mixed images for BatchNorm's statistics.
# * The confidence weight lets pseudo-labels count as much as the teacher is sure of them, batch by batch.
# * The claims above are read at run time: a claim that does not hold says why, in the numbers.

# %% [markdown] tags=["exercise"]
# ## Exercises
#
# 1. Implement ClassMix's mask (below, checked against `udalib.losses.dacs`).
# 2. The teacher's decay: two questions on $\alpha$, answered with numbers (below, checked).
# 3. Predict, then run: does the mean teacher beat the student as its own teacher (α = 0) at 60 steps (below)?
# 4. Train DACS with `THRESHOLD = 0.5` and `0.999`: how does $w_t$ change, and the score?

# %% [markdown] tags=["exercise"]
# ### Exercise 1: implement ClassMix's mask
#
# Write `my_class_mix_mask(label, generator)`: `label` is one source label `(H, W)` (int64 trainIds, 255 =
# ignored). Take the $n$ distinct values of `label` in increasing order (`torch.unique`, the ignore label counted as
# a class), draw `torch.randperm(n, generator=generator)` and keep the classes at its first $(n + n \bmod 2)/2$
# positions; return the bool mask `(H, W)` that is True where `label` is one of the kept classes.

# %% tags=["solution"] nbgrader={"grade": false, "grade_id": "09-ex1-solution", "locked": false, "schema_version": 3, "solution": true, "task": false}
import torch


def my_class_mix_mask(label: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    ### BEGIN SOLUTION
    classes = torch.unique(label)
    n = len(classes)
    kept = classes[torch.randperm(n, generator=generator)[: (n + n % 2) // 2]]
    return torch.isin(label, kept)
    ### END SOLUTION

# %% tags=["check"] nbgrader={"grade": true, "grade_id": "09-ex1-check", "locked": true, "points": 1, "schema_version": 3, "solution": false, "task": false}
import torch

from udalib.losses import dacs as dl

# by hand: a label with three classes (0, 5, 255) keeps two; with four (0, 1, 2, 7), two
small = torch.tensor([[0, 0, 5], [255, 5, 0]])
got = my_class_mix_mask(small, torch.Generator().manual_seed(0))
assert got.dtype == torch.bool and got.shape == small.shape, "a bool mask of the label's shape"
kept = torch.unique(small[got])
assert len(kept) == 2 and not torch.isin(small[~got], kept).any(), f"two whole classes, got {kept.tolist()}"
# against the library, on random labels: the same draw gives the same mask
for seed in range(20):
    label = torch.randint(0, 6, (8, 12), generator=torch.Generator().manual_seed(seed))
    label[label == 5] = 255
    drawn = dl.class_mix_classes(label, True, generator=torch.Generator().manual_seed(seed))
    expected = dl.class_mix_mask(label, drawn)
    mine = my_class_mix_mask(label, torch.Generator().manual_seed(seed))
    assert torch.equal(mine, expected), f"label {seed}: a different mask from dl.class_mix_classes' draw"
print("my_class_mix_mask pastes the classes udalib.losses.dacs pastes")

# %% tags=["answer-source"]
viz.show_source(dl.class_mix_classes)
viz.show_source(dl.class_mix_mask)

# %% [markdown] tags=["exercise"]
# ### Exercise 2: the teacher's decay
#
# (a) Which value of `alpha` makes the teacher equal to the student after every update? (b) With `alpha = 0.99`,
# what is the largest number of updates $T$ after which the teacher is still the plain average of the $T$ student
# iterates? Answer with numbers (`ALPHA_EQUAL`, `PLAIN_UPDATES`), reasoning from
# $\alpha_t = \min(1 - \frac{1}{t+1}, \alpha)$ with $t = 0, 1, \dots$

# %% tags=["solution"] nbgrader={"grade": false, "grade_id": "09-ex2-solution", "locked": false, "schema_version": 3, "solution": true, "task": false}
### BEGIN SOLUTION
ALPHA_EQUAL = 0.0  # alpha_t = min(..., 0) = 0: each update copies the student
PLAIN_UPDATES = 100  # 1 - 1/(t+1) <= 0.99 for t <= 99: updates 0 to 99 average plainly
### END SOLUTION

# %% tags=["check"] nbgrader={"grade": true, "grade_id": "09-ex2-check", "locked": true, "points": 1, "schema_version": 3, "solution": false, "task": false}
import torch

from udalib.methods.mean_teacher import MeanTeacher

student = torch.nn.Linear(1, 1, bias=False)
teacher = MeanTeacher(student, float(ALPHA_EQUAL))
for value in (3.0, -1.0, 7.0):
    student.weight.data.fill_(value)
    teacher.update(student)
    assert float(teacher.ema.weight) == value, f"alpha = {ALPHA_EQUAL}: the teacher is not the student"
teacher = MeanTeacher(student, 0.99)
plain = 0
while abs(teacher.decay() - (1 - 1 / (int(teacher.updates) + 1))) < 1e-12:  # still a plain average
    teacher.updates += 1
    plain += 1
assert int(PLAIN_UPDATES) == plain, f"{PLAIN_UPDATES} updates: count again from t = 0"
print("both answers agree with udalib's MeanTeacher")

# %% [markdown] tags=["exercise"]
# ### Exercise 3: predict, then run
#
# At 60 steps, the teacher is the plain average of the student's iterates (above). Before running the next cell,
# predict: does DACS with that teacher beat DACS with `alpha = 0`, where the student labels its own mixed images, on
# five seeds? By how much?

# %% [markdown]
# *Your prediction:* ...

# %%
row = table.loc["the mean teacher > the student as its own teacher (α = 0)"]
teacher_row = table.loc["the teacher > its student"]
text = (f"**Discussion.** The mean teacher against α = 0: {row['verdict']} ({row['reason']}). The teacher itself "
        f"against the student it averages, both scored with target BatchNorm statistics: {teacher_row['verdict']} "
        f"({teacher_row['reason']}). ")
if verdicts.HOLDS in (row["verdict"], teacher_row["verdict"]):
    text += ("Averaging the iterates smooths the noise of single SGD steps: "
             + ("it labels the mixed images better than the last iterate. " if row["verdict"] == verdicts.HOLDS else
                "the average scores better, but at this length it does not label the mixed images better. "))
elif verdicts.FAILS in (row["verdict"], teacher_row["verdict"]):
    found = [what for what, r in (("it scores no better than the last iterate", teacher_row),
                                  ("it labels the mixed images no better", row)) if r["verdict"] == verdicts.FAILS]
    text += (f"At {STEPS} steps the teacher is the plain average of all the student's iterates, the early, less "
             f"adapted ones included: {' and '.join(found)}. A teacher that averages only the recent iterates needs "
             "a run longer than 1/(1 − α) steps (the 300-step rows).")
display(Markdown(text))

# %%
print(f"this notebook ran in {time.perf_counter() - START:.0f} s")

# %% [markdown]
# ## Run at full scale
#
# The original trains DeepLab-v2 ResNet-101 on GTA5 → Cityscapes for 250k iterations at batch 2 (`vikolss/DACS`,
# `configs/configUDA.json`); the recipe `gta5_dacs` (`udalib/recipes/`) runs the same loop here with the original's
# settings, on the datasets that `data_scripts/` prepared. Reported by the DACS paper (Table 1): 52.1 mIoU on
# Cityscapes val.
#
# ```bash
# papermill notebooks/09_mean_teacher.ipynb runs/notebooks/09_gta5_dacs.ipynb \
#     -p RECIPE gta5_dacs -p DATA_ROOT /data/prepared -p DEVICE cuda
# python -m udalib run gta5_dacs --data-root /data/prepared --device cuda   # the same recipe from the shell
# ```
#
# ## References
#
# * W. Tranheden, V. Olsson, J. Pinto, L. Svensson. *DACS: Domain Adaptation via Cross-domain Mixed Sampling*.
#   WACV 2021 (arXiv 2007.08702). Code: `vikolss/DACS`.
# * A. Tarvainen, H. Valpola. *Mean teachers are better role models*. NeurIPS 2017 (arXiv 1703.01780).
# * V. Olsson, W. Tranheden, J. Pinto, L. Svensson. *ClassMix: Segmentation-Based Data Augmentation for
#   Semi-Supervised Learning*. WACV 2021 (arXiv 2007.07936).
# * L. Hoyer, D. Dai, L. Van Gool. *DAFormer* (rare-class sampling). CVPR 2022; *MIC: Masked Image Consistency for
#   Context-Enhanced Domain Adaptation*. CVPR 2023.
# * The reference implementation, `vikolss/DACS`, `trainUDA.py`: the EMA teacher (`create_ema_model`, lines 89-109;
#   `update_ema_variables`, lines 111-122, called after each step at lines 508-511), ClassMix's classes (lines
#   426-430, the ignore filter commented out at line 427), the confidence weight (`threshold_uniform`, lines
#   466-468), and `utils/loss.py` lines 35-44 (`CrossEntropyLoss2dPixelWiseWeighted`).
