"""The standard MiniCity runs: one place that defines them, so the notebooks, the benchmark table and the
comparison notebook ask for the *same* Experiments and share their run folders (checkpoint-or-train).
"""

from __future__ import annotations

from dataclasses import replace

from .experiment import Experiment, Run, get_or_train

SOURCE_STEPS = 300  # source model and oracle, notebook 01's default
ADAPT_STEPS = 100  # MinEnt / MaxSquare-family adaptation runs, from the source model (notebooks 02-03)
BATCH_SIZE = 8
TARGET = "minicity:target"


def source_experiment(seed: int = 0, steps: int = SOURCE_STEPS, batch_size: int = BATCH_SIZE) -> Experiment:
    """Source-only MiniDeepLab on MiniCity's labelled source domain (notebook 01)."""
    return Experiment(seed=seed, steps=steps, batch_size=batch_size)


def oracle_experiment(seed: int = 0, steps: int = SOURCE_STEPS, batch_size: int = BATCH_SIZE) -> Experiment:
    """The same recipe trained on labelled target images: the upper bound."""
    return replace(source_experiment(seed, steps, batch_size), source="minicity:target/oracle", label="oracle")


def adabn_experiment(source: Experiment) -> Experiment:
    """The source model with BatchNorm statistics re-estimated on target images, no training."""
    return replace(source, init=source.name, steps=0, adabn=True, target=TARGET, label="AdaBN")


def adaptation_experiment(method: str, source: Experiment, *, steps: int = ADAPT_STEPS, label: str = "",
                          **method_args) -> Experiment:
    """``method`` trained from the source model on source + unlabelled target batches (MiniCity preset)."""
    return replace(source, method=method, init=source.name, steps=steps, target=TARGET,
                   method_args=method_args, label=label or method)


def control_experiment(source: Experiment, *, steps: int = ADAPT_STEPS, method: str = "maxsquare") -> Experiment:
    """The lambda = 0 control: the same adaptation run with the target loss weight at 0.

    It trains on source labels while target batches pass through the network in train mode, which moves the
    BatchNorm statistics and nothing else. With the weight at 0, MinEnt, MaxSquare, +IW and +IW+multi compute
    exactly the same updates (same presets otherwise), so one control run serves the whole family.
    """
    return adaptation_experiment(method, source, steps=steps, label="target batches, lambda 0 (control)",
                                 lambda_target=0.0)


def source_run(seed: int = 0, **kwargs) -> Run:
    """The trained source model of ``seed`` (trains it, about 30 s, if no run folder has it yet)."""
    return get_or_train(source_experiment(seed), **kwargs)
