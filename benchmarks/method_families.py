"""Step time and memory of each method family at its full recipe sizes, on synthetic images.

One row per family, each the YAML recipe of ``udalib/recipes/`` (``udalib.recipes.load_recipe``) built the way
``python -m udalib run`` builds it (``udalib.experiment.build``: the recipe's model and method with its arguments;
``udalib.train.fit`` with its batch size and poly horizon), on random images and labels of the recipe's exact
source and target sizes (real datasets are not read):

* ``maxsquare_iw_multi``: MaxSquare+IW+Multi (``gta5_maxsquare_iw_multi``, target 1280x640);
* ``adaptsegnet_multi``: AdaptSegNet multi-level, two discriminators (``gta5_adaptsegnet_multi``);
* ``snr_ms``: SNR-MS, MaxSquare on the SNR model (``gta5_snr_maxsquare``);
* ``clustering``: orthogonal and clustered embeddings, ResNet-101 (``gta5_clustering_resnet101``);
* ``cbst``: CBST (``gta5_cbst``, batch 2): a pseudo-labelling pass over the target images, then steps;
* ``mlsl``: MLSL with 25 spatially independent 512x512 patches per target image (``gta5_mlsl``, batch 2);
* ``dacs``: DACS, the mean teacher and ClassMix on 512x512 crops (``gta5_dacs``, batch 2);
* ``dacs_mic``: DACS + MIC, one more pass on the masked target crops (``gta5_dacs_mic``, batch 2).

A recipe with a training ``crop`` trains on crops of that size, source and target alike: its images are made at
the crop's size.

Weights are randomly initialised: no pretrained or source checkpoint is read, which changes the values of the
losses but not the work of a step. On CUDA the step runs as ``fit`` runs it (bf16 autocast, channels_last,
cudnn.benchmark); on CPU in fp32. Self-training families run one round here (``rounds=1``: the step does not
depend on the round), so ``fit`` calls the pseudo-labelling pass once before the first step; the pass is then
timed again on its own (the second pass: cuDNN tuned, the spatial prior already computed) and reported per target
image. The pass runs as ``fit`` calls it, outside the step's autocast. ``--size`` scales every image (and MLSL's
patches, inference size and training crops) by the same factor.

Per family: seconds per step after ``--warmup`` untimed steps, images per second (source and target images of a
step), peak memory (``torch.cuda.max_memory_allocated`` on CUDA; on CPU the process's peak resident set size), and
whether every logged loss of every step was finite. Each family runs in a fresh process (its own peak memory);
its row is appended to the CSV as soon as it finishes, so an interrupted run keeps the rows it has (``--jobs``
runs several at a time, for a quick CPU check only: they share the processors, so their timings are not figures).

    python benchmarks/method_families.py --device cuda          # full sizes, 3 warm-up + 30 timed steps
    python benchmarks/method_families.py --size 0.05 --steps 1 --warmup 1   # a CPU check of the plumbing

Writes ``benchmarks/results/method_families_<device>.csv`` and ``.md`` (``--out`` for another folder);
``benchmarks/project_hours.py`` turns the CSV into hours per recipe.
"""

from __future__ import annotations

import argparse
import csv
import json
import math
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor, as_completed
from dataclasses import replace
from pathlib import Path

import torch
from torch.utils.data import Dataset
from train_throughput import RESULTS, device_name, peak_memory_mb, scaled, step_seconds, sync

from udalib.experiment import build, parse_spec
from udalib.recipes import load_recipe
from udalib.train import fit

FAMILIES = {  # name: (recipe, description)
    "maxsquare_iw_multi": ("gta5_maxsquare_iw_multi", "MaxSquare+IW+Multi"),
    "adaptsegnet_multi": ("gta5_adaptsegnet_multi", "AdaptSegNet multi-level"),
    "snr_ms": ("gta5_snr_maxsquare", "SNR-MS (MaxSquare on the SNR model)"),
    "clustering": ("gta5_clustering_resnet101", "Clustered embeddings (ResNet-101)"),
    "cbst": ("gta5_cbst", "CBST: pseudo-labelling pass + steps"),
    "mlsl": ("gta5_mlsl", "MLSL: 25 patches per target image, pass + steps"),
    "dacs": ("gta5_dacs", "DACS: mean teacher + ClassMix"),
    "dacs_mic": ("gta5_dacs_mic", "DACS + MIC: masked target images"),
}
SELF_TRAINING = ("cbst", "mlsl")
SOURCE_IMAGES = 4  # synthetic source images (at least one batch)
INIT = "random (no pretrained or source checkpoint read)"
COLUMNS = ("family", "description", "recipe", "method", "model", "device", "torch", "size_fraction", "source_size",
           "target_size", "batch", "warmup_steps", "timed_steps", "bf16_autocast", "init", "status",
           "seconds_per_step", "images_per_second", "peak_memory_mb", "memory_measure", "losses_finite",
           "loss_names", "pseudo_label_pass_s", "pass_target_images", "pass_s_per_target_image", "first_pass_s")


class RandomImages(Dataset):
    """``n`` random images with random labels in ``[0, num_classes)``, as a training SegmentationList returns them."""

    def __init__(self, n: int, size: tuple[int, int], num_classes: int, seed: int):
        g = torch.Generator().manual_seed(seed)
        self.images = torch.randn(n, 3, *size, generator=g)
        self.labels = torch.randint(0, num_classes, (n, *size), generator=g)

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, item: int | tuple):
        i = item[0] if isinstance(item, tuple) else item  # fit's sampler passes (index, augmentation seed)
        return self.images[i], self.labels[i], i, False  # image, label, index, flipped


def sizes(exp, factor: float) -> tuple[tuple[int, int], tuple[int, int] | None]:
    """The recipe's (H, W) of source and target images, scaled by ``factor`` (multiples of 8): its training crop's,
    where it has one."""
    if exp.crop is not None:
        crop = scaled(tuple(exp.crop), factor)
        return crop, crop if exp.target else None
    _, _, source = parse_spec(exp.source, "train")
    target = parse_spec(exp.target, "train")[2] if exp.target else None
    if source is None or (exp.target and target is None):
        raise ValueError(f"recipe {exp.source} / {exp.target} names no image size (@HxW): give it one")
    return scaled(source, factor), scaled(target, factor) if target else None


def measure(family: str, args) -> dict:
    """Build ``family``'s recipe on synthetic data, train warm-up + timed steps with ``fit``, return the row."""
    recipe, description = FAMILIES[family]
    device = torch.device(args.device)
    exp = load_recipe(recipe)
    source_size, target_size = sizes(exp, args.size)
    method_args = dict(exp.method_args)
    if exp.method in SELF_TRAINING:
        method_args["rounds"] = 1  # one pass before the first step; the steps are the same in every round
        if method_args.get("patches"):
            method_args["patch_size"] = scaled(tuple(method_args.get("patch_size", (512, 512))), args.size)
        for key in ("infer_size", "crop_size"):  # MLSL's inference at 2048 wide and crops of 500, scaled alike
            if method_args.get(key):
                method_args[key] = scaled((method_args[key], method_args[key]), args.size)[0]
    # the method as udalib.experiment.build builds the recipe's, from a random init: no checkpoint is read
    built = build(replace(exp, method_args=method_args, init=None, pretrained=None, seed=0), data=False)
    method = built.method
    source = RandomImages(max(SOURCE_IMAGES, exp.batch_size), source_size, exp.num_classes, seed=0)
    target = (RandomImages(max(args.target_images, exp.batch_size), target_size, exp.num_classes, seed=1)
              if target_size else None)

    passes: list[float] = []
    round_start = method.on_round_start

    def timed_round_start(*a, **k):  # fit calls it before the first step of each round
        sync(device)
        t0 = time.perf_counter()
        round_start(*a, **k)
        sync(device)
        passes.append(time.perf_counter() - t0)

    method.on_round_start = timed_round_start
    stamps, logs_seen = [], []

    def clock(_i, _method, logs):
        sync(device)
        stamps.append(time.perf_counter())
        logs_seen.append(dict(logs))

    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    status, finite = "ok", True
    try:
        fit(method, source, target, options=built.fit_options(  # the recipe's batch size and lr at its first steps
            steps=args.warmup + args.steps, poly_steps=exp.poly_steps or exp.steps, device=device,
            progress=False, log_every=10**9, workers=args.workers, callbacks=(clock,)))
    except FloatingPointError as exc:  # fit stops at the first non-finite loss
        status, finite = f"non-finite loss: {exc}".splitlines()[0][:200], False
    if exp.method in SELF_TRAINING and status == "ok":
        method.on_round_start(0, target, source)  # the steady pass: the timed wrapper records it
    finite = finite and all(math.isfinite(v) for logs in logs_seen for v in logs.values())
    seconds = step_seconds(stamps, args.warmup) if status == "ok" else float("nan")
    images = exp.batch_size * (2 if target is not None and method.uses_target else 1)
    peak, kind = peak_memory_mb(device)
    n_target = len(target) if target is not None else 0
    steady = passes[-1] if exp.method in SELF_TRAINING and len(passes) >= 2 else None
    return {
        "family": family, "description": description, "recipe": recipe, "method": exp.method, "model": exp.model,
        "device": device_name(device), "torch": torch.__version__, "size_fraction": args.size,
        "source_size": "x".join(map(str, source_size)),
        "target_size": "x".join(map(str, target_size)) if target_size else "",
        "batch": exp.batch_size, "warmup_steps": args.warmup, "timed_steps": args.steps,
        "bf16_autocast": device.type == "cuda", "init": INIT, "status": status,
        "seconds_per_step": round(seconds, 4), "images_per_second": round(images / seconds, 3),
        "peak_memory_mb": round(peak, 1), "memory_measure": kind, "losses_finite": finite,
        "loss_names": " ".join(logs_seen[-1]) if logs_seen else "",
        "pseudo_label_pass_s": round(steady, 4) if steady is not None else "",
        "pass_target_images": n_target if steady is not None else "",
        "pass_s_per_target_image": round(steady / n_target, 4) if steady is not None else "",
        "first_pass_s": round(passes[0], 4) if steady is not None else "",
    }


def failed_row(args, family: str, status: str) -> dict:
    recipe, description = FAMILIES[family]
    row = dict.fromkeys(COLUMNS, "")
    row.update(family=family, description=description, recipe=recipe, status=status, seconds_per_step=float("nan"),
               images_per_second=float("nan"), peak_memory_mb=float("nan"), losses_finite=False,
               size_fraction=args.size, init=INIT)
    return row


def in_process(args, family: str) -> dict:
    """``measure`` in this process (``--in-process``); an exception gives a failed row."""
    try:
        row = measure(family, args)
    except Exception as exc:  # noqa: BLE001 -- reported in the row, as a crashed child would be
        print(f"{family} failed: {type(exc).__name__}: {exc}", file=sys.stderr)
        return failed_row(args, family, f"failed ({type(exc).__name__})")
    if not args.device.startswith("cuda"):  # CUDA's peak is reset for each family
        row["memory_measure"] += ", running maximum over the families so far (--in-process)"
    return row


def launch(args, family: str) -> dict:
    """Run ``family`` in a fresh interpreter (its own peak memory) and return its row; a crash gives a failed row."""
    if args.in_process:
        return in_process(args, family)
    cmd = [sys.executable, __file__, "--only", family, "--device", args.device, "--steps", str(args.steps),
           "--warmup", str(args.warmup), "--size", str(args.size), "--workers", str(args.workers),
           "--target-images", str(args.target_images)]
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True)
    lines = [line for line in proc.stdout.splitlines() if line.startswith("RESULT ")]
    if proc.returncode == 0 and lines:
        return json.loads(lines[-1][len("RESULT "):])
    print(f"{family} failed (exit {proc.returncode}) after {time.perf_counter() - t0:.0f} s:\n{proc.stderr[-3000:]}",
          file=sys.stderr)
    return failed_row(args, family, f"failed (exit {proc.returncode})")


def markdown(rows: list[dict]) -> str:
    head = ["family", "recipe", "source + target (batch)", "s/step", "images/s", "peak memory (MB)",
            "losses finite", "pseudo-label pass (s/target image)", "status"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in rows:
        sizes_ = f"{r['source_size']} + {r['target_size'] or '-'} ({r['batch']})"
        lines.append("| " + " | ".join(str(v) for v in (
            r["description"], r["recipe"], sizes_, r["seconds_per_step"], r["images_per_second"], r["peak_memory_mb"],
            r["losses_finite"], r["pass_s_per_target_image"] or "-", r["status"])) + " |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    cuda = torch.cuda.is_available()
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--device", default="cuda" if cuda else "cpu")
    p.add_argument("--steps", type=int, default=None, help="timed steps (default: 30 on CUDA, 2 on CPU)")
    p.add_argument("--warmup", type=int, default=None, help="untimed first steps (default: 3 on CUDA, 1 on CPU)")
    p.add_argument("--size", type=float, default=None,
                   help="fraction of the recipes' image sizes (default: 1 on CUDA, 0.125 on CPU)")
    p.add_argument("--workers", type=int, default=None, help="DataLoader workers (default: 4 on CUDA, 0 on CPU)")
    p.add_argument("--target-images", type=int, default=4,
                   help="synthetic target images, all pseudo-labelled by a self-training pass (default 4)")
    p.add_argument("--families", nargs="+", default=list(FAMILIES), metavar="FAMILY",
                   help=f"which families, in this order (default: all of {', '.join(FAMILIES)})")
    p.add_argument("--jobs", type=int, default=1,
                   help="families run at a time (default 1: a timing run on one GPU must not share it; more only to "
                        "check the plumbing quickly on a CPU)")
    p.add_argument("--in-process", action="store_true",
                   help="every family in this process, one after the other (no interpreter start per family, for a "
                        "quick CPU check; on CPU the peak RSS is then the running maximum)")
    p.add_argument("--out", type=Path, default=RESULTS)
    p.add_argument("--only", help=argparse.SUPPRESS)  # internal: one family, in a child process
    args = p.parse_args(argv)
    on_cuda = args.device.startswith("cuda")
    if on_cuda and not cuda:
        p.error("--device cuda, but torch sees no GPU: run on a GPU machine, or leave --device out for the CPU size")
    unknown = [f for f in args.families + ([args.only] if args.only else []) if f not in FAMILIES]
    if unknown:
        p.error(f"unknown family {', '.join(unknown)}: choose from {', '.join(FAMILIES)}")
    args.steps = args.steps if args.steps is not None else (30 if on_cuda else 2)
    args.warmup = args.warmup if args.warmup is not None else (3 if on_cuda else 1)
    args.size = args.size if args.size is not None else (1.0 if on_cuda else 0.125)
    args.workers = args.workers if args.workers is not None else (4 if on_cuda else 0)
    if min(args.steps, args.warmup, args.target_images, args.jobs) < 1 or not 0 < args.size <= 2 or args.workers < 0:
        p.error("--steps, --warmup, --target-images and --jobs must be at least 1, --size in (0, 2], "
                "--workers at least 0")
    if args.only:
        print("RESULT " + json.dumps(measure(args.only, args)))
        return 0

    stem = args.out / f"method_families_{'cuda' if on_cuda else 'cpu'}"
    stem.parent.mkdir(parents=True, exist_ok=True)
    with open(stem.with_suffix(".csv"), "w", newline="") as f:
        csv.DictWriter(f, COLUMNS).writeheader()
    rows = []
    header = (f"Method families at {args.size:g} x their recipe sizes, torch {torch.__version__}: synthetic images, "
              f"{INIT}; {args.warmup} warm-up + {args.steps} timed steps{', bf16 autocast' if on_cuda else ', fp32'}")
    # one child process per family, --jobs of them at a time (--in-process: one family at a time, here)
    with ThreadPoolExecutor(1 if args.in_process else args.jobs) as pool:
        futures = {}
        for family in args.families:
            print(f"-- {family} ({FAMILIES[family][0]})", flush=True)
            futures[pool.submit(launch, args, family)] = family
        for future in as_completed(futures):
            row = future.result()
            rows.append(row)
            with open(stem.with_suffix(".csv"), "a", newline="") as f:  # each row as soon as its family finishes
                csv.DictWriter(f, COLUMNS).writerow(row)
            rows.sort(key=lambda r: args.families.index(r["family"]))
            device = next((r["device"] for r in rows if r["device"]), args.device)
            memory = next((r["memory_measure"] for r in rows if r["memory_measure"]), "-")
            stem.with_suffix(".md").write_text(f"{header}; {device}; memory: {memory}\n\n{markdown(rows)}\n")
            print(f"   {row['family']} {row['status']}: {row['seconds_per_step']} s/step, {row['peak_memory_mb']} MB, "
                  f"losses finite: {row['losses_finite']}", flush=True)
    print("\n" + stem.with_suffix(".md").read_text())
    print(f"wrote {stem}.csv and {stem}.md")
    return 0 if all(r["status"] == "ok" and r["losses_finite"] is True for r in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
