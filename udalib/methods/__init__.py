"""The method registry: a plain dict from name to (method class, config dataclass)."""

from __future__ import annotations

from dataclasses import fields

from torch import nn

from .adabn import adapt_batchnorm
from .adaptsegnet import AdaptSegNet, AdaptSegNetConfig, AdaptSegNetMultiConfig
from .base import Method, MethodConfig, OptimConfig, set_requires_grad, sgd
from .clustering import ClusteredEmbeddings, ClusteringConfig
from .dacs import DACS, DACSConfig
from .maxsquare import MaxSquare, MaxSquareConfig, MaxSquareIWConfig, MaxSquareIWMultiConfig
from .mean_teacher import MeanTeacher
from .mic import (
    DACSMIC,
    MIC,
    AdaptSegNetMIC,
    AdaptSegNetMultiMICConfig,
    DACSMICConfig,
    MinEntMIC,
    MinEntMICConfig,
)
from .minent import MinEnt, MinEntConfig
from .self_training import CBSTConfig, MLSLConfig, SelfTraining
from .snr import SNR, SNRConfig, SNRMaxSquare, SNRMaxSquareConfig
from .source_only import SourceOnly, SourceOnlyConfig
from .tent import BNAlpha, BNAlphaConfig, Tent, TentConfig

METHODS: dict[str, tuple[type[Method], type]] = {
    "source_only": (SourceOnly, SourceOnlyConfig),
    "minent": (MinEnt, MinEntConfig),
    "maxsquare": (MaxSquare, MaxSquareConfig),
    "maxsquare_iw": (MaxSquare, MaxSquareIWConfig),
    "maxsquare_iw_multi": (MaxSquare, MaxSquareIWMultiConfig),
    "adaptsegnet": (AdaptSegNet, AdaptSegNetConfig),
    "adaptsegnet_multi": (AdaptSegNet, AdaptSegNetMultiConfig),
    "snr": (SNR, SNRConfig),
    "snr_maxsquare": (SNRMaxSquare, SNRMaxSquareConfig),
    "clustered_embeddings": (ClusteredEmbeddings, ClusteringConfig),
    "cbst": (SelfTraining, CBSTConfig),
    "mlsl": (SelfTraining, MLSLConfig),
    "dacs": (DACS, DACSConfig),
    "minent_mic": (MinEntMIC, MinEntMICConfig),
    "adaptsegnet_multi_mic": (AdaptSegNetMIC, AdaptSegNetMultiMICConfig),
    "dacs_mic": (DACSMIC, DACSMICConfig),
    "tent": (Tent, TentConfig),
    "bn_alpha": (BNAlpha, BNAlphaConfig),
}

# Named departures from the paper defaults (the dataclass defaults), each written beside its config (its
# ``PRESETS`` class attribute, inherited by a config that names none): "minicity" is what the notebooks use on the
# 2-core CPU, where MiniDeepLab is trained from scratch in a few hundred steps.
PRESETS: dict[str, dict[str, dict]] = {name: dict(config.PRESETS) for name, (_, config) in METHODS.items()}

__all__ = ["METHODS", "PRESETS", "Method", "build_method", "method_config", "control_args", "target_weights",
           "adapt_batchnorm", "set_requires_grad", "sgd", "SourceOnly", "SourceOnlyConfig", "MinEnt", "MinEntConfig",
           "MaxSquare", "MaxSquareConfig", "MaxSquareIWConfig", "MaxSquareIWMultiConfig", "AdaptSegNet",
           "AdaptSegNetConfig", "AdaptSegNetMultiConfig", "SNR", "SNRConfig", "SNRMaxSquare", "SNRMaxSquareConfig",
           "ClusteredEmbeddings", "ClusteringConfig", "SelfTraining", "CBSTConfig", "MLSLConfig", "MethodConfig",
           "OptimConfig", "Tent", "TentConfig", "BNAlpha", "BNAlphaConfig", "DACS", "DACSConfig", "MeanTeacher", "MIC",
           "MinEntMIC", "MinEntMICConfig", "AdaptSegNetMIC", "AdaptSegNetMultiMICConfig", "DACSMIC", "DACSMICConfig"]


def method_config(name: str, preset: str | None = None, **overrides):
    """The config dataclass of ``name``: paper defaults, then ``preset``, then ``overrides``.

    Unknown method names, presets or parameter names, and string switches out of their choices (``gan="lsgan"``),
    are errors that list the valid ones. The config holds each switch as its :class:`~udalib.methods.base.Choice`
    member, which equals (and is stored as) its string.
    """
    if name not in METHODS:
        raise ValueError(f"unknown method {name!r}; registered methods: {', '.join(sorted(METHODS))}")
    if preset is not None:
        presets = PRESETS.get(name, {})
        if preset not in presets:
            raise ValueError(f"method {name!r} has no preset {preset!r}; presets: {', '.join(presets) or 'none'}")
        overrides = {**presets[preset], **overrides}
    config_cls = METHODS[name][1]
    valid = {f.name for f in fields(config_cls)}
    unknown = sorted(set(overrides) - valid)
    if unknown:
        raise TypeError(f"method {name!r} has no parameter {', '.join(map(repr, unknown))}; "
                        f"its parameters are: {', '.join(sorted(valid))}")
    try:
        return config_cls(**overrides)
    except ValueError as exc:  # a string switch out of its choices (base.Choice)
        raise ValueError(f"method {name!r} parameter {exc}") from None


def target_weights(name: str) -> tuple[str, ...]:
    """The config fields of ``name`` that weigh its target-image loss terms (its config's ``TARGET_WEIGHTS``)."""
    if name not in METHODS:
        raise ValueError(f"unknown method {name!r}; registered methods: {', '.join(sorted(METHODS))}")
    return METHODS[name][1].TARGET_WEIGHTS


def control_args(name: str) -> dict[str, float]:
    """The method arguments of ``name``'s lambda = 0 control: each target weight at 0 (``{}`` for a method that
    reads no target image), e.g. ``{"lambda_target": 0.0}`` for MaxSquare."""
    return {field: 0.0 for field in target_weights(name)}


def build_method(name: str, model: nn.Module, preset: str | None = None, **overrides) -> Method:
    """``build_method("source_only", model, preset="minicity", lr=1e-3)``; errors as :func:`method_config`."""
    cfg = method_config(name, preset, **overrides)
    return METHODS[name][0](model, cfg)
