"""Loading checkpoints strictly, with error messages that say what to do.

The original code bases save checkpoints in three conventions: a raw state_dict (AdaptSegNet), a dict
with ``state_dict`` whose keys start with ``module.`` (MaxSquare, SNR, UDAclustering, saved from
``DataParallel``), and the DeepLab ImageNet init whose keys start with ``Scale.``. The functions
here accept all three, and never load part of a checkpoint silently: any missing, unexpected or
mis-shaped key is an error unless the caller asks for ``strict=False``.

Files are read with ``torch.load(weights_only=True)``: a checkpoint cannot run code when loaded.
"""

from __future__ import annotations

import contextlib
import pickle
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import Tensor, nn

_CONTAINER_KEYS = ("state_dict", "model")
_MAX_LISTED = 10
# Counters added in PyTorch 0.4.1; older checkpoints (e.g. AdaptSegNet's) lack them and they only
# matter for BatchNorm(momentum=None), so their absence is not an error.
_OPTIONAL_SUFFIX = "num_batches_tracked"
IMAGENET_INIT_SKIP = ("layer5.",)  # the init file's 21-class PASCAL head on layer4
IMAGENET_INIT_MIN_FRACTION = 0.9
HEAD_PREFIXES = ("layer5.", "layer6.", "classifier.")


class CheckpointError(ValueError):
    """A checkpoint file cannot be read, or does not fit the model it is loaded into."""


@dataclass
class LoadReport:
    """What a load left out. ``missing``: model keys that kept their current value; ``unexpected``:
    checkpoint keys that were not used; ``mismatched``: (key, checkpoint shape, model shape)."""

    missing: list[str] = field(default_factory=list)
    unexpected: list[str] = field(default_factory=list)
    mismatched: list[tuple[str, tuple, tuple]] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not (self.missing or self.unexpected or self.mismatched)


def _numpy_scalar_globals() -> list:
    # MaxSquare/UDAclustering checkpoints store ``best_MIou`` as a numpy float. Rebuilding a numpy
    # scalar runs no code, so allow it, under both its numpy-2 and its older ``numpy.core`` name.
    try:
        import numpy as np
    except ImportError:
        return []
    multiarray = getattr(getattr(np, "_core", None), "multiarray", None) or np.core.multiarray
    dtypes = [getattr(np.dtypes, n) for n in dir(np.dtypes) if n.endswith("DType")]
    return [multiarray.scalar, (multiarray.scalar, "numpy.core.multiarray.scalar"), np.dtype, *dtypes]


def _torch_load(path: Path) -> object:
    allow = getattr(torch.serialization, "safe_globals", None)  # torch >= 2.5
    context = allow(_numpy_scalar_globals()) if allow else contextlib.nullcontext()
    with context:
        return torch.load(path, map_location="cpu", weights_only=True)


def read_checkpoint(path: str | Path) -> object:
    """``torch.load(path, weights_only=True)`` on the CPU, with errors that say what to do.

    Raises:
        CheckpointError: the file does not exist, is truncated or corrupt, or holds Python objects
            that ``weights_only`` loading refuses.
    """
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint not found: looked for {path.resolve()}")
    try:
        obj = _torch_load(path)
    except pickle.UnpicklingError as e:
        if "weights only" not in str(e).lower():
            raise CheckpointError(f"{path}: file is truncated or corrupt ({e.__class__.__name__}); "
                                  "re-download or re-train it") from e
        raise CheckpointError(
            f"{path}: holds Python objects that weights_only loading refuses; if you trust the file, "
            "load it with torch.load(path, weights_only=False) and pass its state_dict to "
            "load_into") from e
    except Exception as e:  # a damaged file raises OSError, KeyError, EOFError or RuntimeError
        raise CheckpointError(f"{path}: file is truncated or corrupt ({e.__class__.__name__}: "
                              f"{str(e)[:80]}); re-download or re-train it") from e
    return obj


def load_state_dict_file(path: str | Path) -> dict[str, Tensor]:
    """Read a state_dict from ``path`` on the CPU.

    Accepts a raw state_dict or a dict holding one under ``state_dict`` or ``model`` (other entries,
    such as ``optimizer`` or ``epoch``, are ignored). A leading ``module.`` (from ``DataParallel``)
    is stripped from every key.

    Raises:
        CheckpointError: the file does not exist, is truncated or corrupt, holds Python objects that
            ``weights_only`` loading refuses, or contains no state_dict.
    """
    path = Path(path)
    obj = read_checkpoint(path)
    if isinstance(obj, Mapping):
        container = next((obj[k] for k in _CONTAINER_KEYS if isinstance(obj.get(k), Mapping)), None)
        obj = obj if container is None else container
    if not isinstance(obj, Mapping) or not obj or not all(isinstance(v, Tensor) for v in obj.values()):
        top = list(obj)[:10] if isinstance(obj, Mapping) else type(obj).__name__
        raise CheckpointError(f"{path}: no state_dict found (top level: {top})")
    return {k.removeprefix("module."): v for k, v in obj.items()}


def _compare(model_sd: Mapping[str, Tensor], ckpt: Mapping[str, Tensor],
             skip_prefixes: tuple[str, ...]) -> LoadReport:
    def kept(k: str) -> bool:
        return not k.startswith(skip_prefixes)

    missing = [k for k in model_sd
               if kept(k) and k not in ckpt and not k.endswith(_OPTIONAL_SUFFIX)]
    unexpected = [k for k in ckpt if kept(k) and k not in model_sd]
    mismatched = [(k, tuple(v.shape), tuple(model_sd[k].shape)) for k, v in ckpt.items()
                  if kept(k) and k in model_sd and v.shape != model_sd[k].shape]
    return LoadReport(missing, unexpected, mismatched)


def _class_count_hint(model: nn.Module, mismatched: list[tuple[str, tuple, tuple]]) -> str | None:
    # A head trained for K classes differs from the model's only in dim 0 (its C out channels).
    if not mismatched or any(len(c) != len(m) or not c or c[1:] != m[1:] for _, c, m in mismatched):
        return None
    counts = {(c[0], m[0]) for _, c, m in mismatched}
    if len(counts) != 1:
        return None
    k, c = counts.pop()
    if c != getattr(model, "num_classes", c):
        return None
    return f"checkpoint was trained for {k} classes, model has {c} classes: pass num_classes={k}"


def _listing(title: str, items: list) -> str:
    shown = ", ".join(str(i) for i in items[:_MAX_LISTED])
    more = f", ... ({len(items) - _MAX_LISTED} more)" if len(items) > _MAX_LISTED else ""
    return f"  {title} ({len(items)}): {shown}{more}"


def load_into(model: nn.Module, state_dict: Mapping[str, Tensor], *, strict: bool = True,
              skip_prefixes: Iterable[str] = (), source: str = "checkpoint") -> LoadReport:
    """Copy ``state_dict`` into ``model`` after checking every key and shape.

    Keys starting with one of ``skip_prefixes`` are ignored on both sides (the model keeps its
    values there). Missing ``num_batches_tracked`` buffers are tolerated (pre-0.4.1 checkpoints).

    With ``strict=True`` (the default) any missing, unexpected or mis-shaped key raises
    CheckpointError listing up to 10 of each, and nothing is loaded. With ``strict=False`` the keys
    that fit are loaded and the rest are returned in the report: ask for it only on purpose.

    Returns:
        LoadReport of what was not loaded (empty after a strict load).
    """
    skip = tuple(skip_prefixes)
    report = _compare(model.state_dict(), state_dict, skip)
    if strict and not report.ok:
        lines = [f"{source} does not fit {type(model).__name__}: {len(report.missing)} missing, "
                 f"{len(report.unexpected)} unexpected, {len(report.mismatched)} shape-mismatched keys"]
        hint = _class_count_hint(model, report.mismatched)
        if hint:
            lines.append("  " + hint)
        lines += [_listing("missing", report.missing), _listing("unexpected", report.unexpected),
                  _listing("shape mismatch", [f"{k}: checkpoint {c}, model {m}"
                                              for k, c, m in report.mismatched])]
        raise CheckpointError("\n".join(lines))
    bad = {k for k, _, _ in report.mismatched} | set(report.unexpected)
    usable = {k: v for k, v in state_dict.items() if not k.startswith(skip) and k not in bad}
    model.load_state_dict(usable, strict=False)
    return report


def load_checkpoint(model: nn.Module, path: str | Path, *, strict: bool = True,
                    skip_prefixes: Iterable[str] = ()) -> LoadReport:
    """``load_into(model, load_state_dict_file(path))``, with the file named in any error."""
    return load_into(model, load_state_dict_file(path), strict=strict,
                     skip_prefixes=skip_prefixes, source=str(path))


def load_imagenet_init(model: nn.Module, path: str | Path) -> LoadReport:
    """Initialise a DeepLab-v2 ResNet backbone from ``DeepLab_resnet_pretrained_init-f81d91e8.pth``.

    The file's keys carry a leading component (``Scale.layer1.0.conv1.weight``) that is dropped (a
    file without it is read as is), and its 21-class ``layer5`` (a PASCAL VOC ASPP on layer4) is
    skipped whatever ``num_classes`` is (the reference skipped it only for 19 classes and crashed
    otherwise). Every other key whose name
    exists in the model is copied; heads and buffers absent from the file (``num_batches_tracked``)
    keep the model's own values, because the load starts from ``model.state_dict()``.

    Raises:
        CheckpointError: a copied key has the wrong shape, or fewer than 90 % of the backbone's
            parameters and statistics (everything outside the heads and the model's ``optional_init_prefixes``,
            the SNR blocks) were found in the file.

    Returns:
        LoadReport: ``missing`` = model keys that kept their init, ``unexpected`` = unused file keys.
    """
    target = model.state_dict()
    children = {k.split(".", 1)[0] for k in target}
    # Drop the wrapper name (``Scale.``) unless the file is already un-prefixed.
    source = {k if k.split(".", 1)[0] in children else k.split(".", 1)[-1]: v
              for k, v in load_state_dict_file(path).items()}
    used = {k: v for k, v in source.items() if k in target and not k.startswith(IMAGENET_INIT_SKIP)}
    mismatched = [(k, tuple(v.shape), tuple(target[k].shape)) for k, v in used.items()
                  if v.shape != target[k].shape]
    if mismatched:
        raise CheckpointError(f"{path}: backbone shapes differ from the model's: {mismatched[:10]}")
    extra = tuple(getattr(model, "optional_init_prefixes", ()))  # SNR blocks: not in the ImageNet file, keep their init
    backbone = [k for k in target if not k.startswith(HEAD_PREFIXES) and not k.endswith(_OPTIONAL_SUFFIX)
                and not k.startswith(extra)]
    found = sum(k in used for k in backbone)
    if found < IMAGENET_INIT_MIN_FRACTION * len(backbone):
        absent = [k for k in backbone if k not in used]
        raise CheckpointError(f"{path}: only {found} of {len(backbone)} backbone tensors found; "
                              f"is this the DeepLab ResNet init? first absent: {absent[:10]}")
    target.update(used)
    model.load_state_dict(target)
    return LoadReport(missing=[k for k in target if k not in used],
                      unexpected=[k for k in source if k not in used], mismatched=[])
