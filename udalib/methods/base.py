"""What every method is: the networks it trains, its optimisers, and one ``step``."""

from __future__ import annotations

import contextlib
import enum
import functools
import typing
from collections.abc import Callable
from dataclasses import dataclass, field, fields
from typing import ClassVar

import torch
import torch.distributed as dist
from torch import Tensor, nn

from ..data.batch import SourceBatch, TargetBatch
from ..losses import seg_loss


class Choice(enum.StrEnum):
    """A string switch of a config (``gan``, ``normalization``, ``loss``, ``mode``, ``bn_stats``): its members are
    ``str`` and equal their values, so YAML recipes, ``--set`` values, stored ``config.json`` files and run keys hold
    the same strings; a config turns a string into its member once, when it is built."""

    @property
    def key_value(self) -> str:
        """The string :meth:`udalib.experiment.Experiment.key` hashes for this member: its value, unless a switch
        hashes another spelling, the one its stored run folders are named by (``EntropyNormalization``)."""
        return self.value

    def __repr__(self) -> str:  # a printed config shows gan='ls', as it was written, not <GAN.LS: 'ls'>
        return repr(self.value)

    @classmethod
    def choices(cls) -> str:
        return ", ".join(repr(m.value) for m in cls)

    @classmethod
    def parse(cls, value, what: str):
        """``value`` as a member; any other value is a one-line ``ValueError`` that lists the valid ones."""
        try:
            return cls(value)
        except ValueError:
            raise ValueError(f"{what}={value!r} is not valid: expected one of {cls.choices()}") from None


@functools.cache
def _choice_fields(config_cls: type) -> tuple[tuple[str, type[Choice]], ...]:
    hints = typing.get_type_hints(config_cls)
    return tuple((f.name, hints[f.name]) for f in fields(config_cls)
                 if isinstance(hints[f.name], type) and issubclass(hints[f.name], Choice))


def parse_choices(config) -> None:
    """Turn every :class:`Choice` field of the dataclass instance ``config`` from its string into its member."""
    for name, choice in _choice_fields(type(config)):
        setattr(config, name, choice.parse(getattr(config, name), name))


# How a dataclass field (of a method config or of udalib.experiment.Experiment) enters the run key
# (Experiment.key) and the run identity (udalib.experiment.identity): its metadata under RUN_KEY, written beside
# the field; a field without one enters both as its value.
RUN_KEY = "run_key"
OFF_DEFAULT = "off default"  # enters the key only off its default, so the runs named without the field keep their names
NEVER = "never"  # changes no result: out of the key and the identity (Experiment.device, .label)
AS_METHOD_CONFIG = "as the method config"  # enters as the resolved method config (Experiment.preset, .method_args)


def keyed_off_default(default):
    """A dataclass field with ``default`` that enters the run key only when its value differs from the default
    (:data:`OFF_DEFAULT`): a field added to a config or to ``Experiment`` leaves every stored run's name as it was."""
    return field(default=default, metadata={RUN_KEY: OFF_DEFAULT})


def run_key_rule(cls: type, name: str) -> str | None:
    """The :data:`RUN_KEY` rule of field ``name`` of the dataclass ``cls``, or None: that of the nearest class in its
    MRO that writes one, so a subclass that changes the field's default with a one-line field keeps its rule."""
    for klass in cls.__mro__:
        declared = vars(klass).get("__dataclass_fields__", {}).get(name)
        if declared is not None and RUN_KEY in declared.metadata:
            return declared.metadata[RUN_KEY]
    return None


class BNStats(Choice):
    """Which batches update the BatchNorm running statistics (:attr:`Method.bn_stats`)."""

    BOTH = "both"  # source and target batches alike, as in the original code bases
    TARGET = "target"  # target batches only: the adapted model ends with the target's statistics


@dataclass
class OptimConfig:
    """The segmenter's SGD, the same fields in every method's config (the originals' ``--lr`` or ``--learning-rate``,
    ``--momentum``, ``--weight-decay``); the backbone trains at ``lr``, the heads at ``10 * lr``."""

    # Named departures from the paper defaults (the dataclass defaults), by preset name: {"minicity": {...}}. A
    # class attribute, not a field; a config inherits its parent's presets unless it names its own. The registry
    # (udalib.methods.PRESETS) gathers them per method
    PRESETS: ClassVar[dict[str, dict]] = {}

    lr: float = 2.5e-4
    momentum: float = 0.9
    weight_decay: float = 5e-4
    # True: the backbone steps as in the DeepLab-v2 code bases, whose optimiser lists each backbone tensor 3-4 times
    # (:class:`ListingSGD`, exact; about 3x the nominal backbone step); False: each tensor once (the full-scale
    # recipes of those code bases set True); in the run key only when True
    legacy_param_multiplicity: bool = keyed_off_default(False)


# MiniCity ("minicity" presets): MiniDeepLab is trained from scratch on a 2-core CPU in a few hundred steps and adapted
# in 60; every adaptation starts from the multi-level source run (auxiliary CE 0.1) and keeps its auxiliary CE, at
# one learning rate
MINICITY_LR = 0.01
MINICITY_ADAPT = {"lr": MINICITY_LR, "lambda_seg": 0.1}


@dataclass
class MethodConfig(OptimConfig):
    """What every method's config has: the segmenter's SGD and the weight of the source loss's auxiliary head
    (:meth:`Method.source_loss`).

    ``TARGET_WEIGHTS`` names the fields that weigh the loss terms reading target images (a class attribute, not a
    field: it is no parameter of a run). With all of them at 0 the segmenter gets the source-only update and the
    target batches only move BatchNorm statistics: the lambda = 0 control (:func:`udalib.methods.control_args`).
    """

    TARGET_WEIGHTS: ClassVar[tuple[str, ...]] = ()  # source-only methods: none
    # CE weight of the auxiliary head on source: MaxSquare's --lambda_seg (with --multi True), AdaptSegNet's
    # --lambda-seg; 0 = main head only, and a model without an auxiliary output uses its main head only
    lambda_seg: float = 0.0

    def __post_init__(self):
        parse_choices(self)


class Method(nn.Module):
    """One UDA algorithm: the networks it trains and one ``step`` on a source/target batch pair.

    An ``nn.Module``, so ``.to(device)``, ``.train()`` and ``state_dict()`` cover every network it owns
    (segmenter, discriminators, centroid buffers) and a checkpoint holds all of them. Optimisers live in
    ``self.optimizers`` (a dict, so they are saved by name); the loop sets their learning rates. With an
    :class:`OptimConfig`, the segmenter's SGD is built here as ``optimizers["model"]``, after
    :meth:`configure_model`; a method adds the optimisers of its other players.
    """

    uses_target: bool = True  # False: the loop never loads target images (source-only training)
    uses_source: bool = True  # False: source batches are never forwarded (test-time methods: TENT, BN-alpha)
    # Which batches update the BatchNorm running statistics (the ones the model evaluates with). "both": source and
    # target batches alike, as in the originals; "target": source batches are normalised with their own batch
    # statistics as before but leave the running statistics alone, so the adapted model ends with the target's
    # (MiniCity presets; the lambda = 0 control and AdaBN end with target statistics too). Set by Experiment.bn_stats.
    bn_stats: BNStats = BNStats.BOTH

    @property
    def draws_source_batches(self) -> bool:
        """Whether :meth:`step` reads the loop's source batch; False: the loop loads none and passes ``src=None``.
        (The test-time methods keep the loop's draws, which leave their stored runs as they were trained.)"""
        return True

    def __init__(self, model: nn.Module, cfg):
        super().__init__()
        self.model = model
        self.cfg = cfg
        self.optimizers: dict[str, torch.optim.Optimizer] = {}
        self.configure_model(model)
        if isinstance(cfg, OptimConfig):
            self.optimizers["model"] = sgd(model, cfg.lr, cfg.momentum, cfg.weight_decay,
                                           legacy_param_multiplicity=cfg.legacy_param_multiplicity)

    def configure_model(self, model: nn.Module) -> None:
        """Checks or settings of the model that must precede its optimiser (which parameters it trains)."""

    def source_forward(self, image: Tensor) -> dict[str, Tensor]:
        """The segmenter on a source batch; with ``bn_stats == "target"`` its running statistics stay untouched."""
        bn_stats = BNStats.parse(self.bn_stats, "bn_stats")
        with frozen_running_stats(self.model) if bn_stats == BNStats.TARGET else contextlib.nullcontext():
            return self.model(image)

    def source_loss(self, out: dict[str, Tensor], src: SourceBatch,
                    main_loss: Callable[[Tensor, Tensor], Tensor] = seg_loss) -> tuple[Tensor, dict[str, float]]:
        r"""The supervised loss on a source batch, :math:`\mathcal{L}(out, y_s) + \lambda_{seg}\,\mathcal{L}_{seg}
        (aux, y_s)`, and its log ``{"seg": value}``.

        ``main_loss`` is the main head's loss (CE; self-training's OHEM); the auxiliary head always gets CE, and
        only where ``lambda_seg`` > 0 and the model has one. A method that adds source terms (SNR's causality
        loss) extends this.
        """
        loss = main_loss(out["out"], src.label)
        if self.cfg.lambda_seg and "aux" in out:
            loss = loss + self.cfg.lambda_seg * seg_loss(out["aux"], src.label)
        return loss, {"seg": loss.item()}

    def step(self, src: SourceBatch, tgt: TargetBatch | None) -> dict[str, float]:
        """One iteration of the paper's algorithm; returns the losses by their paper names."""
        raise NotImplementedError

    def on_round_start(self, round_index: int, target_dataset, source_dataset=None) -> None:
        """Called before each self-training round (with the unlabelled target training set, and the labelled
        source set for statistics such as a spatial prior); a no-op for one-stage methods."""

    def update(self, optimizer: torch.optim.Optimizer, loss: Tensor) -> None:
        """zero_grad, backward, average gradients over DDP replicas, step."""
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        average_gradients(optimizer)
        optimizer.step()



@contextlib.contextmanager
def frozen_running_stats(model: nn.Module):
    """Inside the block, BatchNorm layers in train mode still normalise with the batch's statistics but do not
    update their running mean and variance (momentum 0: ``running = (1 - 0) * running + 0 * batch``)."""
    bns = [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    saved = [(m.momentum, m.num_batches_tracked.clone() if m.num_batches_tracked is not None else None)
             for m in bns]
    for m in bns:
        m.momentum = 0.0
    try:
        yield
    finally:
        for m, (momentum, tracked) in zip(bns, saved):
            m.momentum = momentum
            if tracked is not None:
                m.num_batches_tracked.copy_(tracked)


def average_gradients(optimizer: torch.optim.Optimizer) -> None:
    """Under ``torchrun``, average each gradient over the processes (a no-op otherwise).

    This is the arithmetic of ``DistributedDataParallel``, written out: UDA steps run the segmenter on
    source and target batches before one backward and train several networks per step, which the
    ``DistributedDataParallel`` wrapper (one forward per backward per module) does not express plainly.
    """
    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
        return
    grads = [p.grad for g in optimizer.param_groups for p in g["params"] if p.grad is not None]
    if not grads:
        return
    flat = torch.cat([g.reshape(-1) for g in grads])
    dist.all_reduce(flat)
    flat /= dist.get_world_size()
    offset = 0
    for g in grads:
        g.copy_(flat[offset:offset + g.numel()].view_as(g))
        offset += g.numel()


def sgd(model: nn.Module, lr: float, momentum: float = 0.9, weight_decay: float = 5e-4, *,
        legacy_param_multiplicity: bool = False) -> torch.optim.Optimizer:
    """SGD over the model's parameter groups (backbone at ``lr``, heads at ``10 * lr`` where defined).

    ``legacy_param_multiplicity``: the reference's step for a model whose ``optim_groups`` records how many times
    the reference lists each tensor (DeepLab-v2 ResNet and VGG-16), through :class:`ListingSGD`.
    """
    if legacy_param_multiplicity:
        try:
            groups = model.optim_groups(lr, legacy_param_multiplicity=True)
        except (AttributeError, TypeError):
            raise ValueError(f"legacy_param_multiplicity reproduces the DeepLab-v2 code bases' optimiser groups; "
                             f"{type(model).__name__} has none: use a deeplabv2* model or set it False") from None
        return ListingSGD(groups, lr=lr, momentum=momentum, weight_decay=weight_decay)
    if hasattr(model, "optim_groups"):
        groups = model.optim_groups(lr)
    else:
        groups = [{"params": [p for p in model.parameters() if p.requires_grad], "lr": lr, "lr_mult": 1.0}]
    return torch.optim.SGD(groups, lr=lr, momentum=momentum, weight_decay=weight_decay)


class ListingSGD(torch.optim.Optimizer):
    r"""SGD as PyTorch 1.0 (MaxSquare, SNR, UDAclustering; AdaptSegNet's 0.3/0.4 has the same loop) applies
    it to a group that lists a tensor :math:`k` times, each tensor here listed once with its ``multiplicity``
    :math:`k` (the group key; 1 where absent).

    The reference's ``get_1x_lr_params_NOscale`` lists a backbone tensor once per ancestor module, and its SGD
    (``torch/optim/sgd.py`` of 1.0) runs its per-parameter update once per listing, with the gradient :math:`g` and
    the momentum buffer :math:`b` shared by all listings of a tensor (one ``state[p]``) and the weight decay
    added to the gradient in place. Listing :math:`j = 1..k` of one step:

    .. math:: d \leftarrow d + \lambda\, w, \qquad b \leftarrow \mu\, b + d \ (b = d \text{ at the very first
              listing}), \qquad w \leftarrow w - \eta\, b, \qquad d_0 = g

    so within one step the momentum already compounds (a first step with :math:`k = 3` moves
    :math:`\approx (1 + (1 + \mu) + (1 + \mu + \mu^2))\,\eta g = 5.6\,\eta g`), the buffer is multiplied by
    :math:`\mu` :math:`k` times per step (steady state :math:`k\,\eta g / (1 - \mu)`: 3x plain SGD) and the weight
    decay grows with each listing (on average 2x for :math:`k = 3`). This is exact, not a rescaled lr. PyTorch from
    1.5 on no longer adds the decay in place, and its multi-tensor path applies the :math:`k` listings with one
    shared pre-step value: a duplicated list under today's ``torch.optim.SGD`` gives neither the reference's nor a
    consistent step, hence this class. ``dampening`` 0 and no Nesterov, as in every reference.
    """

    def __init__(self, params, lr: float, momentum: float = 0.9, weight_decay: float = 0.0):
        if lr < 0 or momentum < 0 or weight_decay < 0:
            raise ValueError(f"lr, momentum and weight_decay must be >= 0, got {lr}, {momentum}, {weight_decay}")
        super().__init__(params, {"lr": lr, "momentum": momentum, "weight_decay": weight_decay})
        for group in self.param_groups:
            k = group.get("multiplicity")
            if k is not None and (len(k) != len(group["params"]) or any(int(v) != v or v < 1 for v in k)):
                raise ValueError("multiplicity must hold one integer >= 1 per parameter of its group")

    @torch.no_grad()
    def step(self, closure=None):
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        for group in self.param_groups:
            lr, momentum, decay = group["lr"], group["momentum"], group["weight_decay"]
            multiplicity = group.get("multiplicity") or [1] * len(group["params"])
            live = [(p, int(k)) for p, k in zip(group["params"], multiplicity) if p.grad is not None]
            # the gradient plus the decay of each listing so far (the reference adds it to p.grad itself; a copy
            # leaves the gradient as it is); listings run in rounds, each over the tensors listed that often, with
            # multi-tensor kernels (the same elementwise arithmetic as one tensor at a time)
            d = {id(p): p.grad.clone() for p, _ in live}
            for j in range(1, max((k for _, k in live), default=0) + 1):
                params = [p for p, k in live if k >= j]
                grads = [d[id(p)] for p in params]
                if decay:
                    torch._foreach_add_(grads, params, alpha=decay)
                if not momentum:
                    torch._foreach_add_(params, grads, alpha=-lr)
                    continue
                going = [p for p in params if "momentum_buffer" in self.state[p]]
                if going:
                    bufs = [self.state[p]["momentum_buffer"] for p in going]
                    torch._foreach_mul_(bufs, momentum)
                    torch._foreach_add_(bufs, [d[id(p)] for p in going])
                for p in params:  # the very first listing of a tensor starts its buffer at d
                    if "momentum_buffer" not in self.state[p]:
                        self.state[p]["momentum_buffer"] = d[id(p)].clone()
                torch._foreach_add_(params, [self.state[p]["momentum_buffer"] for p in params], alpha=-lr)
        return loss


def require_attributes(model: nn.Module, method: str, *names: str) -> None:
    """A clear error when a model lacks what a method reads (e.g. ``feat_channels`` for feature-space losses)."""
    missing = [n for n in names if not hasattr(model, n)]
    if missing:
        raise ValueError(f"method {method!r} needs a model with {', '.join(missing)} (as udalib's models have: "
                         f"minideeplab, deeplabv2*, deeplabv2_vgg16); {type(model).__name__} has none")


def set_requires_grad(module: nn.Module, flag: bool) -> None:
    for p in module.parameters():
        p.requires_grad_(flag)
