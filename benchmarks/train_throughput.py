"""Training speed and memory: udalib's fast path against a plain fp32 eager loop, side by side in one run.

One MaxSquare step of DeepLab-v2 ResNet-101 multi-level (``deeplabv2_multi``, 19 classes) on one 1280x720 source
image and one 1024x512 target image, batch 1 (the originals' setting), two ways over the same model:

* ``fast``: what ``python -m udalib run gta5_maxsquare`` runs: ``udalib.train.fit`` with the library's MaxSquare
  step, which on CUDA means bf16 autocast, channels_last and cudnn.benchmark;
* ``plain``: the original way, written out below (MaxSquare's ``solve_gta5.py``): fp32 eager, contiguous tensors, the
  source loss and then the target loss backpropagated one after the other, one SGD step; cudnn.benchmark on, as
  MaxSquare's ``init_args`` sets it. PyTorch's default TF32 convolutions stay on, which only makes this baseline faster.
* ``compile`` (with ``--compile``): the fast path with ``torch.compile`` on the model's forward.

Both read the same synthetic images through a DataLoader with the same workers (and pinned memory on CUDA), so
the difference is the training step. Each path runs in a fresh process, so that peak memory and cuDNN's choices
are its own: ``torch.cuda.max_memory_allocated`` on CUDA; on CPU the process's peak resident set size
(``resource.getrusage``), which also counts the interpreter and libraries. images/s counts both images of a step.

    python benchmarks/train_throughput.py --device cuda      # full size, 5 warm-up + 20 timed steps (GPU)
    python benchmarks/train_throughput.py                    # CPU: 1/4 size, 1 + 2 steps, a minute or two
    python benchmarks/train_throughput.py --activations --size 0.125   # activation memory of both paths, no timing

Writes ``benchmarks/results/train_throughput_<device>.csv`` and ``.md``.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import platform
import resource
import subprocess
import sys
import time
from pathlib import Path

import torch
from torch.utils.data import DataLoader, Dataset, RandomSampler

from udalib.experiment import Experiment, build
from udalib.losses import maxsquare_loss, seg_loss
from udalib.methods import sgd
from udalib.models import build_model
from udalib.train import fit, poly_lr

NUM_CLASSES = 19
SOURCE_SIZE, TARGET_SIZE = (720, 1280), (512, 1024)  # (H, W): GTA5 and Cityscapes as the originals resize them
LR, LAMBDA_TARGET = 2.5e-4, 0.1  # the MaxSquare README's --lr and --lambda_target
RESULTS = Path(__file__).parent / "results"


class RandomImages(Dataset):
    """``n`` random images with random labels, as a training SegmentationList returns them."""

    def __init__(self, n: int, size: tuple[int, int], seed: int):
        g = torch.Generator().manual_seed(seed)
        self.images = torch.randn(n, 3, *size, generator=g)
        self.labels = torch.randint(0, NUM_CLASSES, (n, *size), generator=g)

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, item: int | tuple):
        i = item[0] if isinstance(item, tuple) else item  # fit's sampler passes (index, augmentation seed)
        return self.images[i], self.labels[i], i, False  # image, label, index, flipped


def write_results(rows: list[dict], header: str, table: str, stem: Path) -> None:
    """Print the table and write ``stem.csv`` (every row) and ``stem.md`` (header and table)."""
    print(header + "\n\n" + table)
    stem.parent.mkdir(parents=True, exist_ok=True)
    with open(stem.with_suffix(".csv"), "w", newline="") as f:
        writer = csv.DictWriter(f, list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    stem.with_suffix(".md").write_text(header + "\n\n" + table + "\n")
    print(f"\nwrote {stem}.csv and {stem}.md")


def scaled(size: tuple[int, int], factor: float) -> tuple[int, int]:
    """``size`` times ``factor``, rounded to a multiple of 8 (the network's output stride)."""
    return tuple(max(8, round(s * factor / 8) * 8) for s in size)


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def device_name(device: torch.device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    model = next((line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                  if line.startswith("model name")), platform.processor()) if Path("/proc/cpuinfo").exists() else ""
    return f"CPU {model}, {os.cpu_count()} cores, {torch.get_num_threads()} threads"


def peak_memory_mb(device: torch.device) -> tuple[float, str]:
    """Peak memory of this process: allocated GPU memory on CUDA, resident set size on CPU (kB on Linux)."""
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20, "torch.cuda.max_memory_allocated"
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, "peak RSS of the process (ru_maxrss)"


def step_seconds(stamps: list[float], warmup: int) -> float:
    """Mean seconds per step after ``warmup`` steps, from the time stamps taken after every step."""
    timed = stamps[warmup - 1:] if warmup else stamps
    return (timed[-1] - timed[0]) / (len(timed) - 1)


def data(args) -> tuple[Dataset, Dataset]:
    return (RandomImages(4, scaled(SOURCE_SIZE, args.size), seed=0),
            RandomImages(4, scaled(TARGET_SIZE, args.size), seed=1))


def run_fast(args, device: torch.device, compiled: bool = False) -> dict:
    """The library's path: ``fit`` with the MaxSquare method of ``udalib.experiment.build`` (the paper's
    hyper-parameters); ``compiled``: with ``torch.compile`` on the model's forward (``--compile-backend``, default
    inductor)."""
    exp = Experiment(method="maxsquare", model="deeplabv2_multi", num_classes=NUM_CLASSES, preset=None,
                     method_args={"lr": LR, "lambda_target": LAMBDA_TARGET}, batch_size=1, seed=0)
    built = build(exp, data=False)  # as udalib.experiment.run builds it, from a random init
    method, model = built.method, built.method.model
    if compiled:
        model.compile(backend=args.compile_backend)  # in place: state_dict keys unchanged, so checkpoints still load
    stamps = []

    def clock(i, _method, _logs):
        sync(device)
        stamps.append(time.perf_counter())

    source, target = data(args)
    rows = fit(method, source, target, options=built.fit_options(
        steps=args.warmup + args.steps, device=device, progress=False, log_every=10**9, workers=args.workers,
        callbacks=(clock,)))
    return {"seconds_per_step": step_seconds(stamps, args.warmup), "last_loss": rows[-1]["seg"]}


def run_plain(args, device: torch.device) -> dict:
    """The originals' loop over the same model: fp32, two backward passes, one SGD step, ``.item()`` logging."""
    torch.backends.cudnn.benchmark = True  # MaxSquare's init_args
    torch.manual_seed(0)
    model = build_model("deeplabv2_multi", NUM_CLASSES).to(device).train()
    optimizer = sgd(model, LR)
    total, stamps = args.warmup + args.steps, []
    source, target = (iter(DataLoader(ds, batch_size=1, num_workers=args.workers, pin_memory=device.type == "cuda",
                                      sampler=RandomSampler(ds, replacement=True, num_samples=total)))
                      for ds in data(args))
    for i in range(total):
        for group in optimizer.param_groups:
            group["lr"] = poly_lr(LR * group["lr_mult"], i, total)
        x, y, *_ = next(source)
        loss = seg_loss(model(x.to(device))["out"], y.to(device))  # (1) source CE, main head
        loss.backward()
        x_t, *_ = next(target)
        loss_t = LAMBDA_TARGET * maxsquare_loss(model(x_t.to(device))["out"])  # (2) target MaxSquare
        loss_t.backward()
        optimizer.step()
        optimizer.zero_grad()
        last = (loss.item(), loss_t.item())  # the seed logs both every step
        sync(device)
        stamps.append(time.perf_counter())
    return {"seconds_per_step": step_seconds(stamps, args.warmup), "last_loss": last[0]}


def saved_for_backward_mb(model: torch.nn.Module, *forwards) -> float:
    """MB of the tensors autograd saves while ``forwards`` run, all alive together (one backward after them):
    the activation memory of a step, counted by storage, so a tensor saved by several ops counts once. The
    model's own parameters are left out (they are in memory anyway); their bf16 copies under autocast count."""
    params = {p.untyped_storage().data_ptr() for p in model.parameters()}
    storages, outputs = {}, []

    def pack(tensor):
        if tensor.untyped_storage().data_ptr() not in params:
            storages[(tensor.untyped_storage().data_ptr(), tensor.dtype)] = tensor.untyped_storage().nbytes()
        return tensor

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda tensor: tensor):
        outputs = [forward() for forward in forwards]  # kept alive, as their graphs are until the backward
    del outputs
    return sum(storages.values()) / 2**20


def activation_estimate(args) -> str:
    """Saved-for-backward memory of both paths, without timing (any device; on CPU, CPU autocast stands in for
    CUDA's): the plain loop frees the source graph before the target forward, the fast path holds both."""
    device = torch.device(args.device)
    torch.manual_seed(0)
    model = build_model("deeplabv2_multi", NUM_CLASSES).to(device).train()
    (x, y, *_), (x_t, *_) = (ds[0] for ds in data(args))
    x, y, x_t = x[None].to(device), y[None].to(device), x_t[None].to(device)
    source = lambda: seg_loss(model(x)["out"], y)  # noqa: E731
    target = lambda: maxsquare_loss(model(x_t)["out"])  # noqa: E731
    plain = [saved_for_backward_mb(model, source), saved_for_backward_mb(model, target)]  # freed one by one
    with torch.autocast(device.type, dtype=torch.bfloat16):
        fast = saved_for_backward_mb(model, source, target)  # both graphs alive until the one backward
    state = 3 * sum(p.numel() for p in model.parameters()) * 4 / 2**20  # fp32 weights, gradients, SGD momentum
    return (f"memory of a step at {scaled(SOURCE_SIZE, args.size)} + {scaled(TARGET_SIZE, args.size)}, MB: weights, "
            f"gradients and momentum {state:.0f} + tensors saved for backward (cuDNN workspaces not counted)\n"
            f"  plain fp32, source then target: {state:.0f} + max(source {plain[0]:.0f}, target {plain[1]:.0f}) = "
            f"{state + max(plain):.0f}\n  fast bf16, one backward: {state:.0f} + source and target together "
            f"{fast:.0f} (bf16 weight copies included) = {state + fast:.0f} "
            f"({(state + fast) / (state + max(plain)):.2f}x plain)")


PATHS = {"fast": ("udalib fast path (fit + MaxSquare step)", lambda a, d: run_fast(a, d)),
         "plain": ("plain fp32 eager loop (the original way)", run_plain),
         "compile": ("udalib fast path + torch.compile", lambda a, d: run_fast(a, d, compiled=True))}


def child(args) -> None:
    """Run one path in this process and print its result as one JSON line."""
    device = torch.device(args.device)
    result = PATHS[args.only][1](args, device)
    peak, kind = peak_memory_mb(device)
    fast_cuda = device.type == "cuda" and args.only != "plain"
    print("RESULT " + json.dumps({
        "path": args.only, "description": PATHS[args.only][0], "device": device_name(device),
        "torch": torch.__version__, "source_size": "x".join(map(str, scaled(SOURCE_SIZE, args.size))),
        "target_size": "x".join(map(str, scaled(TARGET_SIZE, args.size))), "batch": 1,
        "warmup_steps": args.warmup, "timed_steps": args.steps, "workers": args.workers,
        "compile_backend": args.compile_backend if args.only == "compile" else "",
        "bf16_autocast": fast_cuda, "channels_last": fast_cuda, "cudnn_benchmark": device.type == "cuda",
        "seconds_per_step": round(result["seconds_per_step"], 4),
        "images_per_second": round(2 / result["seconds_per_step"], 3),
        "peak_memory_mb": round(peak, 1), "memory_measure": kind, "last_source_loss": round(result["last_loss"], 4),
    }))


def launch(args, path: str) -> dict:
    """Run ``path`` in a fresh interpreter (clean peak memory) and return its result."""
    cmd = [sys.executable, __file__, "--only", path, "--device", args.device, "--steps", str(args.steps),
           "--warmup", str(args.warmup), "--size", str(args.size), "--workers", str(args.workers),
           "--compile-backend", args.compile_backend]
    proc = subprocess.run(cmd, capture_output=True, text=True)
    lines = [line for line in proc.stdout.splitlines() if line.startswith("RESULT ")]
    if proc.returncode or not lines:
        raise RuntimeError(f"{path} failed (exit {proc.returncode}):\n{proc.stderr[-3000:]}")
    return json.loads(lines[-1][len("RESULT "):])


def markdown(rows: list[dict], baseline: str, columns: tuple[str, ...], formats: dict | None = None) -> str:
    """A markdown table of ``rows`` with speed and memory relative to the ``baseline`` path. ``formats``: column ->
    (heading, format spec), e.g. ``{"peak_memory_mb": ("peak RSS (MB)", ",.0f")}``; other columns as they are."""
    formats = formats or {}
    base = next(r for r in rows if r["path"] == baseline)
    head = ["path", *(formats.get(c, (c,))[0] for c in columns), "speed vs plain", "memory vs plain"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in rows:
        speed = r["images_per_second"] / base["images_per_second"]
        memory = r["peak_memory_mb"] / base["peak_memory_mb"]
        cells = [format(r[c], formats[c][1]) if c in formats else str(r[c]) for c in columns]
        lines.append("| " + " | ".join([r["description"], *cells, f"{speed:.2f}x", f"{memory:.2f}x"]) + " |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    cuda = torch.cuda.is_available()
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--device", default="cuda" if cuda else "cpu")
    p.add_argument("--steps", type=int, default=None, help="timed steps (default: 20 on CUDA, 2 on CPU)")
    p.add_argument("--warmup", type=int, default=None, help="untimed first steps (default: 5 on CUDA, 1 on CPU)")
    p.add_argument("--size", type=float, default=None,
                   help="fraction of the full 1280x720 + 1024x512 (default: 1 on CUDA, 0.25 on CPU)")
    p.add_argument("--workers", type=int, default=None, help="DataLoader workers (default: 4 on CUDA, 0 on CPU)")
    p.add_argument("--compile", action="store_true", help="also time the fast path with torch.compile")
    p.add_argument("--compile-backend", default="inductor",
                   help="torch.compile backend of --compile (default inductor; 'eager' traces without code "
                        "generation: a quick check of the compiled path, e.g. on a CPU, not a speed figure)")
    p.add_argument("--activations", action="store_true",
                   help="instead of timing: the saved-for-backward memory of both paths (bf16 under autocast)")
    p.add_argument("--out", type=Path, default=RESULTS)
    p.add_argument("--only", choices=sorted(PATHS), help=argparse.SUPPRESS)  # internal: one path, in a child
    args = p.parse_args(argv)
    on_cuda = args.device.startswith("cuda")
    if on_cuda and not cuda:
        p.error("--device cuda, but torch sees no GPU: run on a GPU machine, or leave --device out for the CPU size")
    args.steps = args.steps if args.steps is not None else (20 if on_cuda else 2)
    args.warmup = args.warmup if args.warmup is not None else (5 if on_cuda else 1)
    args.size = args.size if args.size is not None else (1.0 if on_cuda else 0.25)
    args.workers = args.workers if args.workers is not None else (4 if on_cuda else 0)
    if args.steps < 1 or args.warmup < 1 or not 0 < args.size <= 2:
        p.error("--steps and --warmup must be at least 1, --size in (0, 2]")
    if args.only:
        child(args)
        return 0
    if args.activations:
        print(activation_estimate(args))
        return 0

    rows, stem = [], args.out / f"train_throughput_{'cuda' if on_cuda else 'cpu'}"
    for path in ("plain", "fast", *(("compile",) if args.compile else ())):
        rows.append(launch(args, path))
        first = rows[0]
        header = (f"Training throughput, {first['device']}, torch {first['torch']}: DeepLab-v2 R101 multi-level, one "
                  f"MaxSquare step on {first['source_size']} (source) + {first['target_size']} (target), batch 1, "
                  f"{args.warmup} warm-up + {args.steps} timed steps; memory: {first['memory_measure']}")
        # the table so far after each path: a later path that fails or is killed leaves the earlier ones written
        write_results(rows, header, markdown(rows, "plain", ("images_per_second", "seconds_per_step",
                                                             "peak_memory_mb")), stem)
    return 0


if __name__ == "__main__":
    sys.exit(main())
