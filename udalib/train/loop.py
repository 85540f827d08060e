"""``fit``: the one training loop every method runs on, and :class:`FitOptions`, its settings."""

from __future__ import annotations

import contextlib
import csv
import json
import math
import os
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path

import torch
from torch.utils.data import Dataset

from ..data.batch import SourceBatch, TargetBatch
from ..data.dataset import stream
from ..locks import unique_tmp
from ..methods.base import Method
from . import distributed
from .checkpoint import load_checkpoint, save_checkpoint

CHECKPOINT = "checkpoint.pt"


def poly_lr(base: float, step: int, steps: int, power: float = 0.9) -> float:
    r"""DeepLab's poly decay: :math:`lr_i = lr_0 (1 - i / N)^{0.9}`, ``i`` counted from 0."""
    return base * (1 - step / steps) ** power


def set_lr(method: Method, step: int, steps: int, power: float = 0.9) -> float:
    """Set every group's lr to ``poly_lr(initial lr of the group)`` (or ``initial lr x method.lr_factor(step,
    steps)`` where the method has one that is not None); returns the first group's lr."""
    first = None
    factor = method.lr_factor(step, steps) if hasattr(method, "lr_factor") else None  # self-training's fixed lr
    for opt in method.optimizers.values():
        for group in opt.param_groups:
            group.setdefault("initial_lr", group["lr"])
            group["lr"] = poly_lr(group["initial_lr"], step, steps, power) if factor is None else (
                group["initial_lr"] * factor)
            first = group["lr"] if first is None else first
    return first


def _device_context(device: torch.device, amp: bool):
    """bf16 autocast around the step when ``amp`` (CUDA by default; on CPU only when asked, e.g. by a test)."""
    if amp:
        return torch.autocast(device.type, dtype=torch.bfloat16)
    return contextlib.nullcontext()


@dataclass(frozen=True)
class FitOptions:
    """Every setting of :func:`fit`, each with its default, in one place (a plain frozen dataclass:
    ``dataclasses.replace(options, stop_after=3)`` is a changed copy). What each one does: :func:`fit`; the
    defaults that depend on the device are made explicit by :meth:`resolved`."""

    steps: int  # iterations
    batch_size: int = 8  # images per batch (per process under torchrun)
    seed: int = 0  # of the data streams (the source's; the target's is seed + 1)
    device: str | torch.device = "cpu"
    run_dir: str | os.PathLike | None = None
    resume: bool = True
    log_every: int = 10
    checkpoint_every: int = 0
    checkpoint_seconds: float | None = None
    evaluate: Callable[[Method], dict] | None = None
    eval_every: int = 0
    amp: bool | None = None
    channels_last: bool | None = None
    workers: int = 0
    progress: bool = True
    stop_after: int | None = None
    poly_steps: int | None = None
    callbacks: tuple[Callable, ...] = ()

    def resolved(self) -> FitOptions:
        """The options with every default that depends on another setting made explicit: ``device`` a
        :class:`torch.device`, ``amp`` and ``channels_last`` True on CUDA (else False) where None, ``poly_steps``
        ``steps`` where unset, ``run_dir`` a :class:`~pathlib.Path`, ``callbacks`` a tuple."""
        device = torch.device(self.device)
        cuda = device.type == "cuda"
        return replace(self, device=device, amp=cuda if self.amp is None else self.amp,
                       channels_last=cuda if self.channels_last is None else self.channels_last,
                       poly_steps=self.poly_steps or self.steps, callbacks=tuple(self.callbacks),
                       run_dir=Path(self.run_dir) if self.run_dir is not None else None)


def fit(method: Method, source: Dataset, target: Dataset | None = None, *, options: FitOptions) -> list[dict]:
    """Train ``method`` on ``source`` (and the unlabelled ``target``) as ``options`` say; return the logged rows.

    Per iteration: set the poly learning rate, draw a source batch (unless ``method.draws_source_batches`` is
    False: ``src`` is then None) and (if the method uses one) a target batch, whose labels are dropped here, once,
    and call ``method.step``. Self-training methods get ``on_round_start`` at the start of each round
    (``method.rounds`` of them, evenly spaced).

    ``options.run_dir`` receives ``metrics.csv`` (every ``log_every`` steps), ``eval.csv`` (every ``eval_every``
    steps, from the ``evaluate`` callable), and ``checkpoint.pt`` every ``checkpoint_every`` steps, every
    ``checkpoint_seconds`` of wall time (so a kill loses at most that much) and at the end, written atomically.
    With ``resume`` a run whose checkpoint exists continues from it and produces
    exactly the losses the uninterrupted run would have (data streams, RNG, optimiser and BatchNorm state are
    all restored). ``stop_after`` ends the call early (after that many total steps) with a checkpoint, as
    an interruption would. ``poly_steps`` is the horizon of the poly decay when it differs from ``steps``
    (the originals' source pre-training decays over 200k iterations and stops at 80k). ``amp`` (bf16 autocast) and
    ``channels_last`` default to on for CUDA only, where ``cudnn.benchmark`` is switched on too
    (``benchmarks/train_throughput.py`` measures this fast path against a plain fp32 loop). Under
    ``torchrun`` each process draws its own slice of the data, gradients are averaged and BatchNorm buffers
    are kept in sync; only rank 0 writes files. ``callbacks`` are called as ``cb(i, method, logs)`` after every
    step ``i`` (from 0), before that step's checkpoint; one with ``state_dict``/``load_state_dict`` (e.g.
    :class:`udalib.train.select.Selector`) has its state kept in the checkpoint and restored on resume.
    """
    o = options.resolved()
    device, steps, run_dir, callbacks, evaluate = o.device, o.steps, o.run_dir, o.callbacks, o.evaluate
    rank, world = distributed.setup(device)
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True  # fixed image sizes: cuDNN times its kernels once, then reuses the best
    memory_format = torch.channels_last if o.channels_last else torch.contiguous_format
    method.to(device, memory_format=memory_format) if o.channels_last else method.to(device)
    method.train()
    is_main = rank == 0

    start, rows, eval_rows, state = 0, [], [], None
    if run_dir is not None and o.resume and (run_dir / CHECKPOINT).exists():
        state = load_checkpoint(run_dir / CHECKPOINT, method)
        start, rows, eval_rows = state["step"], state["rows"], state["eval_rows"]
        if state.get("steps") != steps:
            raise ValueError(f"{run_dir / CHECKPOINT} is from a run of {state.get('steps')} steps, not {steps}: "
                             "pass resume=False (or another run_dir) to start afresh")
        _load_callback_states(callbacks, state.get("callbacks", {}), run_dir / CHECKPOINT)

    uses_target = method.uses_target and target is not None
    # a method whose step reads no loop source batch (self-training mixing its own source images) gets none
    streams = dict(start=start, workers=o.workers, rank=rank, world=world, pin_memory=device.type == "cuda")
    src_iter = (stream(source, o.batch_size, seed=o.seed, **streams)
                if getattr(method, "draws_source_batches", True) else None)
    tgt_iter = stream(target, o.batch_size, seed=o.seed + 1, **streams) if uses_target else None
    if state is not None:  # after the streams: creating a DataLoader iterator draws from torch's generator, and the
        # uninterrupted run made those draws before its first step, so they are inside the saved state
        torch.set_rng_state(state["rng"])
    rounds = getattr(method, "rounds", 1)
    round_starts = {r * steps // rounds: r for r in range(rounds)}
    end = steps if o.stop_after is None else min(o.stop_after, steps)

    saved = {"step": start, "time": time.monotonic()}

    def save(step: int) -> None:
        if run_dir is not None and is_main:
            save_checkpoint(run_dir / CHECKPOINT, method, step=step, steps=steps, rows=rows,
                            eval_rows=eval_rows, rng=torch.get_rng_state(),
                            callbacks={k: cb.state_dict() for k, cb in enumerate(callbacks)
                                       if hasattr(cb, "state_dict")})
            saved.update(step=step, time=time.monotonic())

    bar = None
    if o.progress and is_main and end > start:
        # a text bar, not tqdm.auto's widget: a notebook saved after running (papermill, nbval) keeps a widget's
        # first frame, "0/60", while a text bar ends cleared (leave=False) in the saved copy as on screen
        from tqdm.std import tqdm

        bar = tqdm(total=end - start, desc=getattr(method, "progress_label", "") or type(method).__name__, leave=False)
    t0 = time.perf_counter()
    for i in range(start, end):
        if uses_target and i in round_starts:
            method.on_round_start(round_starts[i], target, source)
        lr = set_lr(method, i, o.poly_steps)
        src = None
        if src_iter is not None:
            img_s, lbl_s, *_ = next(src_iter)
            src = SourceBatch(img_s.to(device, non_blocking=True, memory_format=memory_format),
                              lbl_s.to(device, non_blocking=True))
        tgt = None
        if tgt_iter is not None:
            img_t, _, idx_t, flip_t = next(tgt_iter)  # the target label is dropped here, once
            tgt = TargetBatch(img_t.to(device, non_blocking=True, memory_format=memory_format), idx_t, flip_t)
        with _device_context(device, o.amp):
            logs = method.step(src, tgt)
        distributed.sync_buffers(method)
        if not all(math.isfinite(v) for v in logs.values()):
            bad = ", ".join(f"{k}={v}" for k, v in logs.items() if not math.isfinite(v))
            kept = (f"the checkpoint of step {saved['step']} in {run_dir} is kept" if run_dir is not None
                    and (run_dir / CHECKPOINT).exists() else "no checkpoint was written")
            raise FloatingPointError(f"step {i + 1}: non-finite loss ({bad}); {kept}. Lower the learning rate "
                                     "or the target loss weight, and start afresh (--no-resume)")
        if (i + 1) % o.log_every == 0 or i + 1 == steps:
            rows.append({"step": i + 1, "lr": lr, **logs, "seconds": round(time.perf_counter() - t0, 3)})
            if bar is not None:
                bar.set_postfix({k: f"{v:.3g}" for k, v in logs.items()})
        if evaluate is not None and o.eval_every and (i + 1) % o.eval_every == 0 and i + 1 < steps and is_main:
            eval_rows.append({"step": i + 1, **evaluate(method)})
            method.train()
        for cb in callbacks:  # before the checkpoint of this step, so that it holds what they did at this step
            cb(i, method, logs)
        if (o.checkpoint_every and (i + 1) % o.checkpoint_every == 0) or (
                o.checkpoint_seconds and i + 1 < end and time.monotonic() - saved["time"] >= o.checkpoint_seconds):
            save(i + 1)
        if bar is not None:
            bar.update(1)
    if bar is not None:
        bar.close()
    if evaluate is not None and end == steps and is_main and steps > start:
        eval_rows.append({"step": steps, **evaluate(method)})
        method.train()
    save(end)
    if run_dir is not None and is_main:
        write_csv(run_dir / "metrics.csv", rows)
        write_csv(run_dir / "eval.csv", eval_rows)
    return rows


def _load_callback_states(callbacks, states: dict, path: Path) -> None:
    """Give each callback with a ``load_state_dict`` the state the checkpoint kept for it (by position)."""
    for k, cb in enumerate(callbacks):
        if hasattr(cb, "load_state_dict"):
            if k not in states:
                raise ValueError(f"{path} holds no state for callback {k} ({type(cb).__name__}): it was written by "
                                 "a run without it; pass resume=False (or another run_dir) to start afresh")
            cb.load_state_dict(states[k])


def write_csv(path: Path, rows: list[dict]) -> None:
    if not rows:
        return
    keys = list(dict.fromkeys(k for row in rows for k in row))
    tmp = unique_tmp(path)
    with open(tmp, "w", newline="") as f:
        writer = csv.DictWriter(f, keys)
        writer.writeheader()
        for row in rows:
            writer.writerow({k: json.dumps(v) if isinstance(v, (list, dict)) else v for k, v in row.items()})
    os.replace(tmp, path)
