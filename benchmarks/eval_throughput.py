"""Evaluation speed and memory at Cityscapes size with flip: udalib's evaluate against the originals' plain loop.

DeepLab-v2 ResNet-101 multi-level (``deeplabv2_multi``, 19 classes) scores 1024x512 images (Cityscapes val as
MaxSquare resizes it, labels at the same size) with flip averaging of the main head, three ways:

* ``plain``: the originals' ``tools/evaluate.py``, written out below: batch 1, fp32, two forward passes per image,
  the argmax copied to the host and counted there (cudnn.benchmark on, as the originals set it);
* ``udalib``: ``udalib.eval.evaluate`` as ``python -m udalib run`` calls it: batches of ``--batch`` images, fp32,
  the confusion matrix kept on the device;
* ``fast`` (CUDA only, unless named in ``--paths``): the same call under bf16 autocast, with a channels_last model
  and cudnn.benchmark.

Each path runs in a fresh process (see ``train_throughput.py`` for the memory measures).

    python benchmarks/eval_throughput.py --device cuda     # 1024x512, 16 warm-up + 96 timed images (GPU)
    python benchmarks/eval_throughput.py                   # CPU: 1/4 size, 2 warm-up + 4 timed images

Writes ``benchmarks/results/eval_throughput_<device>.csv`` and ``.md``.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import subprocess
import sys
import time
from pathlib import Path

import torch
from torch.utils.data import DataLoader
from train_throughput import RESULTS, RandomImages, device_name, markdown, peak_memory_mb, scaled, sync, write_results

from udalib.data import eval_loader
from udalib.eval.evaluate import evaluate
from udalib.models import build_model

NUM_CLASSES = 19
SIZE = (512, 1024)  # (H, W): Cityscapes val as the MaxSquare family scores it


def plain_loop(model: torch.nn.Module, dataset, device: torch.device) -> torch.Tensor:
    """The originals' evaluation: one image at a time, flip-averaged softmax, argmax counted on the host."""
    hist = torch.zeros(NUM_CLASSES * NUM_CLASSES, dtype=torch.int64)
    model.eval()
    with torch.no_grad():
        for image, label, *_ in DataLoader(dataset, batch_size=1):
            image = image.to(device)
            prob = model(image)["out"].softmax(1) + model(image.flip(-1))["out"].softmax(1).flip(-1)
            pred, label = prob.argmax(1).cpu().flatten(), label.flatten()
            valid = label < NUM_CLASSES
            hist += torch.bincount(NUM_CLASSES * label[valid] + pred[valid], minlength=NUM_CLASSES**2)
    return hist


def run_path(args, path: str, device: torch.device) -> float:
    """Seconds per image of ``path`` on ``args.images`` images, after ``args.warmup`` untimed ones."""
    torch.manual_seed(0)
    model = build_model("deeplabv2_multi", NUM_CLASSES).to(device)
    size = scaled(SIZE, args.size)
    warm, timed = RandomImages(args.warmup, size, seed=0), RandomImages(args.images, size, seed=1)
    context = contextlib.nullcontext()
    torch.backends.cudnn.benchmark = True  # the originals set it; fit sets it before run() evaluates
    if path == "fast":
        model = model.to(memory_format=torch.channels_last)
        context = torch.autocast(device.type, dtype=torch.bfloat16)
    seconds = []
    for dataset in (warm, timed):
        sync(device)
        t0 = time.perf_counter()
        if path == "plain":
            plain_loop(model, dataset, device)
        else:
            with context:
                evaluate(model, eval_loader(dataset, batch_size=args.batch, workers=args.workers), NUM_CLASSES,
                         device=device, flip=True)
        sync(device)
        seconds.append(time.perf_counter() - t0)
    return seconds[-1] / args.images


DESCRIPTIONS = {"plain": "plain fp32 loop, batch 1 (the originals' evaluate.py)",
                "udalib": "udalib evaluate, fp32 (what run() scores with)",
                "fast": "udalib evaluate, bf16 autocast + channels_last"}


def child(args) -> None:
    device = torch.device(args.device)
    per_image = run_path(args, args.only, device)
    peak, kind = peak_memory_mb(device)
    print("RESULT " + json.dumps({
        "path": args.only, "description": DESCRIPTIONS[args.only], "device": device_name(device),
        "torch": torch.__version__, "size": "x".join(map(str, scaled(SIZE, args.size))), "flip": True,
        "batch": 1 if args.only == "plain" else args.batch, "warmup_images": args.warmup, "timed_images": args.images,
        "images_per_second": round(1 / per_image, 3), "seconds_per_image": round(per_image, 4),
        "peak_memory_mb": round(peak, 1), "memory_measure": kind,
    }))


def launch(args, path: str) -> dict:
    cmd = [sys.executable, __file__, "--only", path, "--device", args.device, "--images", str(args.images),
           "--warmup", str(args.warmup), "--size", str(args.size), "--batch", str(args.batch),
           "--workers", str(args.workers)]
    proc = subprocess.run(cmd, capture_output=True, text=True)
    lines = [line for line in proc.stdout.splitlines() if line.startswith("RESULT ")]
    if proc.returncode or not lines:
        raise RuntimeError(f"{path} failed (exit {proc.returncode}):\n{proc.stderr[-3000:]}")
    return json.loads(lines[-1][len("RESULT "):])


def main(argv: list[str] | None = None) -> int:
    cuda = torch.cuda.is_available()
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--device", default="cuda" if cuda else "cpu")
    p.add_argument("--images", type=int, default=None, help="timed images (default: 96 on CUDA, 4 on CPU)")
    p.add_argument("--warmup", type=int, default=None,
                   help="untimed images first (default: one batch, so cuDNN has timed the batch shape)")
    p.add_argument("--size", type=float, default=None, help="fraction of 1024x512 (default: 1 on CUDA, 0.25 on CPU)")
    p.add_argument("--batch", type=int, default=None, help="udalib's eval batch (default: 16 on CUDA, 2 on CPU)")
    p.add_argument("--workers", type=int, default=None, help="DataLoader workers (default: 4 on CUDA, 0 on CPU)")
    p.add_argument("--paths", nargs="+", choices=sorted(DESCRIPTIONS), default=None,
                   help="default: plain udalib fast on CUDA, plain udalib on CPU (CPU bf16 is emulated and slow)")
    p.add_argument("--out", type=Path, default=RESULTS)
    p.add_argument("--only", choices=sorted(DESCRIPTIONS), help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    on_cuda = args.device.startswith("cuda")
    if on_cuda and not cuda:
        p.error("--device cuda, but torch sees no GPU: run on a GPU machine, or leave --device out for the CPU size")
    args.batch = args.batch if args.batch is not None else (16 if on_cuda else 2)
    args.images = args.images if args.images is not None else (96 if on_cuda else 4)
    args.warmup = args.warmup if args.warmup is not None else args.batch
    args.size = args.size if args.size is not None else (1.0 if on_cuda else 0.25)
    args.workers = args.workers if args.workers is not None else (4 if on_cuda else 0)
    if min(args.images, args.warmup, args.batch) < 1 or not 0 < args.size <= 2:
        p.error("--images, --warmup and --batch must be at least 1, --size in (0, 2]")
    if args.only:
        child(args)
        return 0

    paths = args.paths or (["plain", "udalib", "fast"] if on_cuda else ["plain", "udalib"])
    if "plain" not in paths:
        paths = ["plain", *paths]  # the baseline of the table
    rows = [launch(args, path) for path in paths]
    table = markdown(rows, "plain", ("images_per_second", "seconds_per_image", "batch", "peak_memory_mb"))
    first = rows[0]
    header = (f"Evaluation throughput, {first['device']}, torch {first['torch']}: DeepLab-v2 R101 multi-level, "
              f"{first['size']} images with flip, {args.warmup} warm-up + {args.images} timed images; memory: "
              f"{first['memory_measure']}")
    write_results(rows, header, table, args.out / f"eval_throughput_{'cuda' if on_cuda else 'cpu'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
