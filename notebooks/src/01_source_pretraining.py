# ---
# jupyter:
#   kernelspec:
#     display_name: Python 3
#     language: python
#     name: python3
# ---

# %% [markdown]
# # 01 · Source pre-training, the oracle, and the gap
#
# **What you will learn.** How a segmentation model is trained on the labelled source domain with udalib's one
# training loop, how it is scored (mIoU from a confusion matrix), and how large the **domain gap** is: the
# **source-only** model (trained on source labels alone, no adaptation) against a **target-supervised oracle** (the
# same recipe trained on labelled target images). You also meet the first **control** that every later table
# carries. A control is a run that shares everything with a method's run except what the method adds, so that the
# difference between the two is the method's own effect. The first one is **AdaBN**: the source model with its
# BatchNorm statistics re-estimated on target images and nothing else changed.
#
# Every later notebook starts from the source model trained here. They ask for it with the same `Experiment`, and
# `get_or_train` returns this run instead of training again (or trains it, if you open a later notebook first).
#
# **Runtime:** about a minute on a 2-core CPU (two models of `STEPS` steps); seconds when the runs already exist.
# The last cell prints this run's time.

# %% tags=["parameters"]
SEED: int = 0  # random seed of the model initialisation and the data order
STEPS: int = 300  # training iterations of the source model and of the oracle
BATCH_SIZE: int = 8  # images per step
RECIPE: str = ""  # full scale: "source_gta5", "source_synthia" or "source_cityscapes13" (udalib/recipes/)
ORACLE: str = "minicity:target/oracle"  # labelled target training set; full scale: "cityscapes/train@512x1024"
TARGET: str = "minicity:target"  # unlabelled target training images for AdaBN; full scale: "cityscapes/train@512x1024"
DATA_ROOT: str = ""  # folder written by data_scripts/ (full scale only)
DEVICE: str = "cpu"  # "cuda" at full scale

# %% [markdown]
# ## Setup
#
# An `Experiment` is a plain dataclass: every field that changes the result is in it, and its hash names the run
# folder under `runs/`. The folders of finished runs are the **results store**: `get_or_train` returns a run from it
# instead of training again, and the tables of notebook 11 and `benchmarks/` read it. `udalib.zoo` defines the
# standard MiniCity runs once, so every notebook and the benchmark table ask for the same ones. A method's
# hyper-parameters start from the paper's values (its config's defaults) and, on MiniCity, from its **preset**
# (`Experiment.preset = "minicity"`, `methods.PRESETS`): the values udalib uses for the small model and short runs.
# At full scale the same notebook loads a recipe with the original code bases' hyper-parameters instead.

# %%
import time
from dataclasses import replace

import pandas as pd
import torch
from IPython.display import Markdown, display

from udalib import methods, models, results, viz, zoo
from udalib.data import minicity
from udalib.experiment import get_or_train, open_data, per_class_iou
from udalib.train import loop

START = time.perf_counter()
if RECIPE:
    from udalib.recipes import load_recipe
    source_exp = load_recipe(RECIPE, data_root=DATA_ROOT, device=DEVICE)
else:
    source_exp = replace(zoo.source_experiment(SEED, STEPS, BATCH_SIZE), device=DEVICE)
oracle_exp = replace(source_exp, source=ORACLE, label="oracle")
adabn_exp = replace(zoo.adabn_experiment(source_exp), target=TARGET)
SOURCE_EVAL, TARGET_EVAL = source_exp.evaluate_on[0], source_exp.evaluate_on[-1]
CLASS_IDS = list(minicity.MINICITY_TRAINIDS) if not RECIPE else list(range(source_exp.num_classes))
source_exp

# %% [markdown]
# ## The model
#
# `minideeplab` is a CPU-sized model with DeepLab-v2's contract: a residual backbone with BatchNorm, output stride 8
# with dilated later stages, an auxiliary head on stage 3 and a main head on stage 4. Every udalib model, including
# the full-scale ResNet-101 DeepLab-v2, returns a dict of **named outputs** at input resolution: `out` (main logits),
# `aux` (auxiliary logits) and `feat` (backbone features). Methods index outputs by name.

# %%
model = models.build_model(source_exp.model, source_exp.num_classes, **source_exp.model_args)
outputs = model(torch.zeros(2, 3, 64, 128))
print(f"{sum(p.numel() for p in model.parameters()):,} parameters")
{name: tuple(t.shape) for name, t in outputs.items()}

# %% [markdown]
# ## The method: source-only training
#
# A method is a small class with one `step`. Source-only minimises the cross-entropy on source labels, on the main
# head plus `lambda_seg` times the auxiliary head (MaxSquare's `--multi True`):
#
# $$\mathcal{L} = \mathcal{L}_{seg}(out, y) + \lambda_{seg}\,\mathcal{L}_{seg}(aux, y)$$

# %%
viz.show_source(methods.SourceOnly.step)

# %% [markdown]
# The one training loop, `udalib.train.fit`, calls `step` once per iteration after setting DeepLab's **poly**
# learning rate, $lr_i = lr_0 (1 - i/N)^{0.9}$. It writes losses to `metrics.csv`, checkpoints atomically, resumes
# exactly, and uses bf16 autocast and channels-last on a GPU. The MiniCity preset trains the small model from scratch
# with a larger learning rate than the paper's, which assumes an ImageNet-initialised ResNet-101 (both printed
# below).

# %%
viz.show_source(loop.poly_lr)
print(f"lr_0 of this run: {source_exp.method_config.lr:g}; the paper's (the config's default): "
      f"{methods.method_config('source_only').lr:g}")

# %% [markdown]
# ## Train (or load) the source model

# %%
source_run = get_or_train(source_exp)
print(source_run.dir)
for spec, scores in source_run.scores.items():
    print(f"{spec:24s} {scores}")

# %% [markdown]
# Every number carries its **protocol**: the label resolution it was scored at, the class set, whether flip
# test-time augmentation was used, how classes absent from both prediction and label are treated (skipped, as in
# MaxSquare's protocol), and how the model was selected (here: the last checkpoint; the original code bases often pick the best
# checkpoint *on the target validation set*, which uses target labels for model selection).

# %%
source_run.scores[TARGET_EVAL].protocol

# %% [markdown]
# ## The oracle: the same recipe trained on labelled target images
#
# The oracle is the upper bound a UDA method cannot exceed in principle: it sees target labels. MiniCity keeps
# its labelled target training images in a separate `oracle` split that no adaptation method reads.

# %%
oracle_run = get_or_train(oracle_exp)
for spec, scores in oracle_run.scores.items():
    print(f"{spec:24s} {scores}")

# %% [markdown]
# ## A first control: AdaBN
#
# AdaBN keeps every weight of the source model and only re-estimates the BatchNorm running statistics on target
# images. It costs one pass over the target images and no labels. Any method that trains on target batches moves
# these statistics too, so **an adaptation method's gain only counts if it beats AdaBN** and the same run with its
# target loss weight at 0 (its λ = 0 control); the method notebooks show both. A method's **margin** is its mIoU
# minus the better of the two (`zoo.margin_over_controls`). The same re-estimation applied to a trained model gives
# its score "with **target BN**", which the tables of later notebooks show beside the score as trained.

# %%
viz.show_source(methods.adapt_batchnorm)

# %%
adabn_run = get_or_train(adabn_exp)
print(adabn_run.scores[TARGET_EVAL])

# %% [markdown]
# ## The gap

# %%
runs = {"source-only": source_run, "AdaBN": adabn_run, "oracle (target labels)": oracle_run}
table = pd.DataFrame({name: {"source val mIoU": r.miou(SOURCE_EVAL), "target val mIoU": r.miou(TARGET_EVAL)}
                      for name, r in runs.items()}).T.round(1)
gap = oracle_run.miou(TARGET_EVAL) - source_run.miou(TARGET_EVAL)
ratio = source_run.miou(TARGET_EVAL) / oracle_run.miou(TARGET_EVAL)
closed = (adabn_run.miou(TARGET_EVAL) - source_run.miou(TARGET_EVAL)) / gap
display(Markdown(
    f"On this run the domain gap is **{gap:.1f} mIoU points**: source-only reaches {100 * ratio:.0f} % of the "
    f"oracle's target mIoU. AdaBN closes {100 * closed:.0f} % of the gap without any training"
    + (", and leaves the rest to adaptation." if 0 < closed < 1 else ".")))
table

# %%
# the teaching claims, checked on every seed of benchmarks/results/minicity_table.csv (the standard
# runs; no parameter of this notebook changes them): a large gap exists, AdaBN closes part of it, not all
five = pd.read_csv(results.BENCHMARK_TABLE).pivot_table(index="seed", columns="method", values="target_miou")
assert (five.oracle - five.source_only > 10).all(), "source-only should trail the oracle by more than 10 points"
assert ((five.source_only < five.adabn) & (five.adabn < five.oracle)).all(), "AdaBN: above source-only, below the oracle"
five[["source_only", "adabn", "oracle"]]

# %% [markdown]
# ## Per class
#
# Which classes suffer most from the shift? Read a class's loss against the oracle, not against 100: a class the
# oracle itself scores low on is hard on MiniCity at this model size and training length, whatever the domain, and
# only the part between source-only and the oracle is the domain gap. The lines under the table rank the classes by
# the share of the oracle's IoU that source-only keeps, and name the classes the oracle itself finds hard.

# %%
per_class = per_class_iou(runs, TARGET_EVAL)
oracle_iou, source_iou = per_class["oracle (target labels)"], per_class["source-only"]
kept = (100 * source_iou / oracle_iou).sort_values()
print("share of the oracle's IoU that source-only keeps (%), worst first:", kept.round(0).to_dict())
print("points lost to the shift (oracle - source-only), most first:",
      (oracle_iou - source_iou).sort_values(ascending=False).round(1).to_dict())
hard = oracle_iou[oracle_iou < 0.6 * oracle_iou.max()]
print(f"classes the oracle itself scores below 60% of its best class ({oracle_iou.max():.1f}): "
      f"{hard.round(1).to_dict() or 'none'}")
per_class.round(1)

# %%
viz.plots.iou_bars({name: r.scores[TARGET_EVAL] for name, r in runs.items()}, title="target val, per-class IoU (%)");

# %% [markdown]
# ## Predictions on target images

# %%
target_val = open_data(TARGET_EVAL, default_split="val", train=False, exp=source_exp)
viz.plots.show_predictions({name: r.model() for name, r in runs.items()}, target_val, [0, 1, 2, 3],
                           class_ids=CLASS_IDS);

# %% [markdown]
# ## Training curves

# %%
viz.plots.training_curves({"source-only": source_run.history(), "oracle": oracle_run.history()}, keys=("seg", "lr"));

# %%
print(f"this notebook ran in {time.perf_counter() - START:.0f} s")

# %% [markdown]
# ## Summary
#
# * Source-only training is one method on the one loop; its run folder (config, metrics, per-class IoU, weights)
#   is what every later notebook starts from.
# * On MiniCity the source-only model reaches a fraction of the oracle's target mIoU (on every seed of the
#   benchmark table): that gap is what adaptation methods try to close.
# * AdaBN already closes part of it without any training. Keep it in mind as the baseline every method must beat.
#
# ## Exercises
#
# 1. Train with `STEPS = 600`. Does the gap shrink, or do both models improve?
# 2. Evaluate the source model with flip test-time augmentation:
#    `python -m udalib evaluate --run <source run folder> --dataset minicity:target/val --flip`.
# 3. Evaluate the source model on each city (`minicity:rome/val`, ...). Which city is hardest?
#
# ## Run at full scale
#
# The same notebook runs the original source pre-training (MaxSquare `tools/train_source.py`: DeepLab-v2 ResNet-101
# multi-level from the ImageNet init, batch 1, lr 2.5e-4 with poly decay over 200k iterations stopped at 80k) on data
# prepared by `data_scripts/`, with the DeepLab ImageNet init file in `$DATA_ROOT/pretrained/`. One GPU, several hours:
#
# ```bash
# # GTA5 -> Cityscapes, 19 classes
# papermill notebooks/01_source_pretraining.ipynb runs/notebooks/01_source_gta5.ipynb \
#     -p RECIPE source_gta5 -p DATA_ROOT /data/prepared -p DEVICE cuda \
#     -p ORACLE cityscapes/train@512x1024 -p TARGET cityscapes/train@512x1024
# # SYNTHIA -> Cityscapes, 16 classes (mIoU16 and mIoU13)
# papermill notebooks/01_source_pretraining.ipynb runs/notebooks/01_source_synthia.ipynb \
#     -p RECIPE source_synthia -p DATA_ROOT /data/prepared -p DEVICE cuda \
#     -p ORACLE cityscapes/train@512x1024 -p TARGET cityscapes/train@512x1024
# # Cityscapes, 13 classes: the source model of CrossCity (notebook 10)
# papermill notebooks/01_source_pretraining.ipynb runs/notebooks/01_source_cityscapes13.ipynb \
#     -p RECIPE source_cityscapes13 -p DATA_ROOT /data/prepared -p DEVICE cuda \
#     -p ORACLE cityscapes/train@512x1024 -p TARGET cityscapes/train@512x1024
# ```
#
# The same runs from the shell: `python -m udalib run source_gta5 --data-root /data/prepared --device cuda`.
# Reference: the original papers report 36.6–36.9 mIoU for the GTA5 source-only ResNet-101 on Cityscapes val (AdaptSegNet /
# MaxSquare).

# %% [markdown]
# ## References
#
# * L.-C. Chen, G. Papandreou, I. Kokkinos, K. Murphy, A. L. Yuille. *DeepLab: Semantic Image Segmentation with Deep
#   Convolutional Nets, Atrous Convolution, and Fully Connected CRFs.* TPAMI 2018 (arXiv 1606.00915): DeepLab-v2,
#   the model MiniDeepLab shrinks.
# * Y. Li, N. Wang, J. Shi, J. Liu, X. Hou. *Revisiting Batch Normalization For Practical Domain Adaptation.* ICLR
#   Workshop 2017 (arXiv 1603.04779): AdaBN.
# * The reference implementations: `ZJULearning/MaxSquareLoss` (commit 2fbc18f) `tools/train_source.py:49` (the
#   source trainer, its epoch at line 168, its validation at line 285) and `utils/eval.py:14` (the confusion matrix
#   at line 109, mIoU at line 45); `wasidennis/AdaptSegNet` (commit fca9ff0) `model/deeplab_multi.py:121`
#   (`ResNetMulti`, DeepLab-v2 with the auxiliary head).
