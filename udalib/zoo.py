"""The standard MiniCity runs: one place that defines them, so the notebooks, the benchmark table and the
comparison notebook ask for the *same* Experiments and share their run folders (checkpoint-or-train).
"""

from __future__ import annotations

from dataclasses import replace

from .data.labels import CITIES
from .experiment import Experiment, Run, get_or_train
from .methods import control_args

SOURCE_STEPS = 300  # source model and oracle, notebook 01's default
SNR_SOURCE_STEPS = 150  # SNR source model (notebook 06): half the plain model's steps
ADAPT_STEPS = 60  # adaptation runs from the source model (notebooks 03, 04 and 06)
BATCH_SIZE = 8
TARGET = "minicity:target"
# Adaptation runs keep BatchNorm running statistics of target batches only (source batches are normalised with
# their own batch statistics): the model "as trained" then carries the target's statistics, as AdaBN does, and the
# lambda = 0 control equals AdaBN, so a method's margin over both is its own loss's work. With the originals' policy
# ("both": the running statistics mix the two domains) every method scored below AdaBN, as trained
# (benchmarks/results/minicity_design_study.md, benchmarks/RESULTS.md).
BN_STATS = "target"


def source_experiment(seed: int = 0, steps: int = SOURCE_STEPS, batch_size: int = BATCH_SIZE) -> Experiment:
    """Source-only MiniDeepLab on MiniCity's labelled source domain (notebook 01)."""
    return Experiment(seed=seed, steps=steps, batch_size=batch_size)


def oracle_experiment(seed: int = 0, steps: int = SOURCE_STEPS, batch_size: int = BATCH_SIZE) -> Experiment:
    """The same recipe trained on labelled target images: the upper bound."""
    return replace(source_experiment(seed, steps, batch_size), source="minicity:target/oracle", label="oracle")


def adabn_experiment(source: Experiment, evaluate_on: tuple[str, ...] | None = None) -> Experiment:
    """The source model with BatchNorm statistics re-estimated on target images, no training."""
    label = "AdaBN" if source.method == "source_only" else f"AdaBN of {source.method}"  # one table row each
    return replace(source, init=source.name, steps=0, adabn=True, target=TARGET, label=label,
                   evaluate_on=evaluate_on or source.evaluate_on)


def adaptation_experiment(method: str, source: Experiment, *, steps: int = ADAPT_STEPS, label: str = "",
                          evaluate_on: tuple[str, ...] | None = None, **method_args) -> Experiment:
    """``method`` trained from the source model on source + unlabelled target batches (MiniCity preset);
    evaluated where the source model was, unless ``evaluate_on`` is given."""
    return replace(source, method=method, init=source.name, steps=steps, target=TARGET, method_args=method_args,
                   label=label or method, evaluate_on=evaluate_on or source.evaluate_on, bn_stats=BN_STATS)


def control_experiment(source: Experiment, *, steps: int = ADAPT_STEPS, method: str = "maxsquare",
                       evaluate_on: tuple[str, ...] | None = None) -> Experiment:
    """The lambda = 0 control: the same adaptation run with its target loss weights at 0 (:func:`control_args`).

    It trains on source labels while target batches pass through the network in train mode, which moves the
    BatchNorm statistics (to the target's: ``BN_STATS``) and nothing else. With the weight at 0, MinEnt, MaxSquare,
    +IW and +IW+multi compute exactly the same updates (same presets otherwise), so one control run serves the whole
    family.
    """
    return adaptation_experiment(method, source, steps=steps, label="target batches, lambda 0 (control)",
                                 evaluate_on=evaluate_on, **control_args(method))


CITY_EVAL = tuple(f"minicity:{city}/val" for city in CITIES)


def snr_ms_experiment(snr_source: Experiment, *, control: bool = False, steps: int = ADAPT_STEPS,
                      **method_args) -> Experiment:
    """SNR-MS (MaxSquare on the SNR model) from the SNR source model, or its lambda = 0 control; scored on source
    and target val only (the cities are notebook 06's generalization question, not the adaptation's)."""
    if control:
        method_args = {**method_args, **control_args("snr_maxsquare")}
    return adaptation_experiment("snr_maxsquare", snr_source, steps=steps, evaluate_on=Experiment().evaluate_on,
                                 label="SNR-MS, lambda 0 (control)" if control else "SNR-MS", **method_args)


def snr_source_experiment(seed: int = 0, steps: int = SNR_SOURCE_STEPS, batch_size: int = BATCH_SIZE) -> Experiment:
    """SNR trained on MiniCity's source alone (domain generalization), evaluated on the target and the 4 cities.

    150 steps, against the plain source model's 300, so that notebook 06 fits its 90 s: a handicap for SNR, not a
    help (its step costs about 15 % more)."""
    base = source_experiment(seed, steps, batch_size)
    return replace(base, method="snr", model="minideeplab_snr", evaluate_on=base.evaluate_on + CITY_EVAL)


def source_run(seed: int = 0, **kwargs) -> Run:
    """The trained source model of ``seed`` (trains it, about 30 s, if no run folder has it yet)."""
    return get_or_train(source_experiment(seed), **kwargs)


# Every standard MiniCity run: name -> function(seed) -> Experiment, the first rows of benchmarks/minicity_table.py
# (the mean teacher's, MEAN_TEACHER_ROWS, follow them) and notebook 11's leaderboard. A method comes with its
# lambda = 0 control.
MINICITY_ROWS = {
    "source_only": lambda seed: source_experiment(seed),
    "adabn": lambda seed: adabn_experiment(source_experiment(seed)),
    "oracle": lambda seed: oracle_experiment(seed),
    "control_lambda0": lambda seed: control_experiment(source_experiment(seed)),
    "minent": lambda seed: adaptation_experiment("minent", source_experiment(seed)),
    "maxsquare": lambda seed: adaptation_experiment("maxsquare", source_experiment(seed)),
    "maxsquare_iw": lambda seed: adaptation_experiment("maxsquare_iw", source_experiment(seed)),
    "maxsquare_iw_multi": lambda seed: adaptation_experiment("maxsquare_iw_multi", source_experiment(seed)),
    # AdaptSegNet at notebook 05's default of 60 steps (a step costs about twice MaxSquare's: two players). Its
    # control trains the discriminators but gives the segmenter adversarial weight 0; one run serves both levels
    # (same lr and auxiliary CE, so the same segmenter updates)
    "control_adaptsegnet": lambda seed: adaptation_experiment(
        "adaptsegnet_multi", source_experiment(seed), steps=ADAPT_STEPS,
        label="AdaptSegNet, lambda_adv 0 (control)", **control_args("adaptsegnet_multi")),
    "adaptsegnet": lambda seed: adaptation_experiment("adaptsegnet", source_experiment(seed),
                                                          steps=ADAPT_STEPS),
    "adaptsegnet_multi": lambda seed: adaptation_experiment("adaptsegnet_multi", source_experiment(seed),
                                                                steps=ADAPT_STEPS),
    # SNR (notebook 06): trained on source alone; then SNR-MS from it, its lambda = 0 control and AdaBN on the
    # SNR model (source_only / adabn above are the plain model's)
    "snr": lambda seed: snr_source_experiment(seed),
    "adabn_snr": lambda seed: adabn_experiment(snr_source_experiment(seed), evaluate_on=Experiment().evaluate_on),
    "control_snr_maxsquare": lambda seed: snr_ms_experiment(snr_source_experiment(seed), control=True),
    "snr_maxsquare": lambda seed: snr_ms_experiment(snr_source_experiment(seed)),
    # orthogonal and clustered embeddings (notebook 07): its controls are control_lambda0 (all target weights at 0
    # give the same segmenter updates) and maxsquare_iw (its output-space term alone)
    "clustered_embeddings": lambda seed: adaptation_experiment("clustered_embeddings", source_experiment(seed)),
    # self-training (notebook 08): the control is control_lambda0 (at lambda_target 0 both give the segmenter the
    # same updates: CE on source, the MiniCity presets use CE for MLSL too)
    "cbst": lambda seed: adaptation_experiment("cbst", source_experiment(seed)),
    "mlsl": lambda seed: adaptation_experiment("mlsl", source_experiment(seed)),
    # test-time baselines (notebook 12): no source batch, the source model adapted on target images alone. TENT
    # trains BatchNorm's affine parameters on the target's entropy; BN-alpha mixes source and target statistics.
    # Neither has a target weight to set to 0: their control is AdaBN itself
    "tent": lambda seed: adaptation_experiment("tent", source_experiment(seed)),
    "bn_alpha": lambda seed: adaptation_experiment("bn_alpha", source_experiment(seed)),
}
TEST_TIME_ROWS = ("tent", "bn_alpha")

# Each adaptation row of MINICITY_ROWS -> (its lambda = 0 control, its AdaBN row): the runs it must beat, trained
# with the same steps, batches, target images, BatchNorm policy and evaluation (tests/test_zoo_controls.py)
CONTROLS = {
    **{m: ("control_lambda0", "adabn") for m in ("minent", "maxsquare", "maxsquare_iw", "maxsquare_iw_multi",
                                                  "clustered_embeddings", "cbst", "mlsl")},
    "adaptsegnet": ("control_adaptsegnet", "adabn"),
    "adaptsegnet_multi": ("control_adaptsegnet", "adabn"),
    "snr_maxsquare": ("control_snr_maxsquare", "adabn_snr"),
    **{m: ("adabn", "adabn") for m in TEST_TIME_ROWS},  # no target weight: AdaBN is the control
}

# The mean teacher (DACS, udalib.methods.dacs): its own rows, kept out of MINICITY_ROWS so that notebooks 10-12
# do not train them; benchmarks/minicity_table.py trains them after the standard rows (ALL_ROWS), and
# benchmarks/mean_teacher_table.py adds their 300-step runs and the teacher's scores. They keep the MiniCity policy,
# target-only BatchNorm statistics (BN_STATS), like every control.
# How they are scored: the design study on seeds 100-102 (benchmarks/results/mean_teacher_design.csv, 60 steps).
# Running statistics never enter training (every training forward normalises with its own batch), so the policy
# leaves the weights as they are: "target" and the original's "both" train identical weights, and only the
# statistics they are scored with differ. As trained, DACS carries the statistics of mixed images ("target") or of
# source and mixed images ("both") and scores several points below the same weights with target statistics; its
# lambda = 0 control, which forwards the same mixed images, falls far below AdaBN. The intent of the MiniCity policy
# -- the adapted model carries the target's statistics, as AdaBN does -- is what re-estimating them on target train
# images gives, so the mean-teacher rows are compared with their controls in MEAN_TEACHER_SCORE (the same weights, the
# statistics re-estimated on target train images, for the method and its controls alike); the as-trained scores
# stay in the table beside it.
MEAN_TEACHER_SCORE = "target_miou_target_bn"
RCS_TEMPERATURE = 0.01  # DAFormer's rare-class sampling temperature


def _dacs(seed: int, label: str = "", **method_args) -> Experiment:
    return adaptation_experiment("dacs", source_experiment(seed), label=label, **method_args)


MEAN_TEACHER_ROWS = {
    "dacs": lambda seed: _dacs(seed),
    # lambda_target 0: the same source CE, ClassMix and mixed forward (its BatchNorm statistics), no mixed loss. The
    # teacher's decay alpha only moves the pseudo-labels, which weight 0 ignores: the control of dacs_alpha0 too
    "control_dacs": lambda seed: _dacs(seed, "DACS, lambda 0 (control)", **control_args("dacs")),
    # ablations: no ClassMix (the mean teacher's labels on the augmented target image), and alpha 0 (teacher =
    # student: the segmenter labels its own images, DACS without the mean teacher)
    "dacs_nomix": lambda seed: _dacs(seed, "DACS without mixing", mix=False),
    # its control: no mixing, weight 0 -- the forward of augmented plain target images sets the BatchNorm statistics
    "control_dacs_nomix": lambda seed: _dacs(seed, "DACS without mixing, lambda 0 (control)", mix=False,
                                             **control_args("dacs")),
    "dacs_alpha0": lambda seed: _dacs(seed, "DACS, alpha 0 (teacher = student)", alpha=0.0),
    # rare-class sampling of the source images (DAFormer, T = 0.01) under DACS; its control samples the same way
    # (the source CE and the pasted classes follow the sampling)
    "dacs_rcs": lambda seed: replace(_dacs(seed, "DACS + RCS"), rcs_temperature=RCS_TEMPERATURE),
    "control_dacs_rcs": lambda seed: replace(_dacs(seed, "DACS + RCS, lambda 0 (control)", **control_args("dacs")),
                                             rcs_temperature=RCS_TEMPERATURE),
    # MIC (udalib.methods.mic) on its three hosts. Each has its own lambda = 0 control (host weight and lambda_mic
    # at 0): at weight 0 the masked images still pass through the segmenter in train mode and move its running
    # statistics under BN_STATS (and draw random numbers), so no existing control ends with the same model
    "dacs_mic": lambda seed: adaptation_experiment("dacs_mic", source_experiment(seed), label="DACS + MIC"),
    "control_dacs_mic": lambda seed: adaptation_experiment(
        "dacs_mic", source_experiment(seed), label="DACS + MIC, lambda 0 (control)", **control_args("dacs_mic")),
    # the "w/o masking" ablation: the consistency term on the whole (augmented) target image; its control is
    # control_dacs_mic with the same ratio (the unmasked images set the running statistics)
    "dacs_mic_ratio0": lambda seed: adaptation_experiment("dacs_mic", source_experiment(seed),
                                                          label="DACS + MIC, mask ratio 0", mask_ratio=0.0),
    "control_dacs_mic_ratio0": lambda seed: adaptation_experiment(
        "dacs_mic", source_experiment(seed), label="DACS + MIC, mask ratio 0, lambda 0 (control)", mask_ratio=0.0,
        **control_args("dacs_mic")),
    "minent_mic": lambda seed: adaptation_experiment("minent_mic", source_experiment(seed), label="MinEnt + MIC"),
    "control_minent_mic": lambda seed: adaptation_experiment(
        "minent_mic", source_experiment(seed), label="MinEnt + MIC, lambda 0 (control)",
        **control_args("minent_mic")),
    "adaptsegnet_multi_mic": lambda seed: adaptation_experiment("adaptsegnet_multi_mic", source_experiment(seed),
                                                                label="AdaptSegNet multi + MIC"),
    "control_adaptsegnet_multi_mic": lambda seed: adaptation_experiment(
        "adaptsegnet_multi_mic", source_experiment(seed), label="AdaptSegNet multi + MIC, lambda 0 (control)",
        **control_args("adaptsegnet_multi_mic")),
}
MEAN_TEACHER_CONTROLS = {
    "dacs": ("control_dacs", "adabn"),
    "dacs_nomix": ("control_dacs_nomix", "adabn"),
    "dacs_alpha0": ("control_dacs", "adabn"),
    "dacs_rcs": ("control_dacs_rcs", "adabn"),
    "dacs_mic": ("control_dacs_mic", "adabn"),
    "dacs_mic_ratio0": ("control_dacs_mic_ratio0", "adabn"),
    "minent_mic": ("control_minent_mic", "adabn"),
    "adaptsegnet_multi_mic": ("control_adaptsegnet_multi_mic", "adabn"),
}
# the standard rows and the mean teacher's, and all their controls: what benchmarks/mean_teacher_table.py and the
# atlas variants look rows up in
ALL_ROWS = {**MINICITY_ROWS, **MEAN_TEACHER_ROWS}
ALL_CONTROLS = {**CONTROLS, **MEAN_TEACHER_CONTROLS}


def margin_over_controls(method, adabn, control):
    """A method's margin over the better of its AdaBN run and its lambda = 0 control, ``method - max(adabn,
    control)``: the gain only its own loss can claim. Element-wise on numbers, arrays or pandas objects (aligned on
    their labels); where one of the two is missing (NaN), the margin is over the other one (``numpy.fmax``).

    The one definition of the margin of the MiniCity table, the atlas, its case tables, CrossCity and the
    benchmarks' summaries.
    """
    import numpy as np

    return method - np.fmax(adabn, control)


# The atlas (benchmarks/minicity_atlas.py, notebook 11 and the "where it works, where it breaks" runs of notebooks
# 02-07): the standard rows on each single shift factor of MiniCity (the source world with only that factor,
# minicity:target-<factor>, the same streets as the target) and on the composite. `graded` only grades the palette
# and texture shifts, and `exposure_mild` is a milder `exposure`: neither is a factor of its own here.
ATLAS_FACTORS = ("palette", "texture", "photometry", "converge", "exposure", "prior", "camera")
SOURCE_TRAINED_ROWS = ("source_only", "snr")  # rows trained on source alone: scored on a factor, never retrained


def factor_domain_name(factor: str) -> str:
    """``"composite"`` -> ``"minicity:target"``; a factor -> ``"minicity:target-<factor>"``."""
    return TARGET if factor == "composite" else f"{TARGET}-{factor}"


def factor_experiment(row: str, factor: str, seed: int = 0) -> Experiment:
    """The standard row ``row`` of :data:`ALL_ROWS` for ``seed``, adapting to (and scored on) the domain of one
    shift factor; ``factor="composite"`` gives the standard row itself. A row trained on source alone
    (:data:`SOURCE_TRAINED_ROWS`) becomes its trained model scored on the factor's val split (zero steps)."""
    exp = ALL_ROWS[row](seed)
    if factor == "composite":
        return exp
    domain = factor_domain_name(factor)
    evaluate_on = ("minicity:source/val", f"{domain}/val")
    if row in SOURCE_TRAINED_ROWS:
        return replace(exp, init=exp.name, steps=0, evaluate_on=evaluate_on, label=f"{exp.label or row} on {factor}")
    if exp.target != TARGET:
        raise ValueError(f"row {row!r} does not adapt to {TARGET}; it has no factor variant")
    return replace(exp, target=domain, evaluate_on=evaluate_on)


def case_runs(row: str, factor: str, seed: int = 0, **train_kwargs) -> dict[str, Run]:
    """Source-only, AdaBN, the lambda = 0 control and the method ``row`` on one factor (checkpoint-or-train):
    the four runs a "where it works, where it breaks" case compares, keyed by their table names."""
    control, adabn = ALL_CONTROLS[row]
    source = "snr" if row == "snr_maxsquare" else "source_only"
    train_kwargs.setdefault("progress", False)
    return {name: get_or_train(factor_experiment(r, factor, seed), **train_kwargs)
            for name, r in (("source-only", source), ("AdaBN", adabn), ("control", control), (row, row))}
