"""Bring the outputs of ``benchmarks/gpu_suite.sh`` into ``benchmarks/results/`` and print RESULTS.md's section.

    bash benchmarks/gpu_suite.sh "$OUT"                  # on the GPU machine: one call, under 9 minutes
    python benchmarks/collect_gpu_suite.py "$OUT"        # here: results/*_cuda.csv/.md, and the text to paste

Copies each table of the suite folder (``train_throughput``, ``eval_throughput``, ``bf16_minicity``,
``method_families``, ``project_hours``: ``.csv`` and ``.md``) to ``<name>_cuda.*`` in ``--results`` (replacing an
older file of that name), with the suite's ``environment.json`` and ``suite_summary.txt`` as
``gpu_suite_environment_cuda.json`` and ``gpu_suite_summary_cuda.txt``. The section for ``benchmarks/RESULTS.md``
names the GPU (``torch.cuda.get_device_name`` as the suite recorded it), states each step's outcome and the two GPU
criteria, and holds every table; it is printed and written to ``gpu_suite_cuda.md``.

A CPU dry run (``gpu_suite.sh --dry-run``) is refused unless ``--allow-cpu`` is given; its files are then named
``*_cpu_dryrun``, never ``_cuda``.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
from pathlib import Path

import pandas as pd

RESULTS = Path(__file__).parent / "results"
TABLES = {  # suite output stem -> heading in the section
    "train_throughput": "Training throughput: fast path, torch.compile and the plain fp32 loop",
    "eval_throughput": "Evaluation throughput, 1024x512 with flip",
    "bf16_minicity": "bf16 against fp32 on MiniCity",
    "method_families": "Method families at their recipe sizes (synthetic images, random init)",
    "project_hours": "Hours per recipe, one GPU and four",
}
SPEEDUP, BF16_TOLERANCE = 2.0, 0.5  # the GPU criteria of RESULTS.md


def read_summary(path: Path) -> pd.DataFrame:
    summary = pd.read_csv(path, sep="\t")
    if list(summary.columns) != ["step", "status", "exit_code", "seconds", "limit_s"]:
        raise ValueError(f"{path} is not a gpu_suite.sh summary (columns {list(summary.columns)})")
    return summary


def criteria(folder: Path, device: str) -> list[str]:
    """The two GPU criteria, as far as the suite's tables allow."""
    lines = []
    train = folder / f"train_throughput_{device}.csv"
    if train.is_file():
        t = pd.read_csv(train).set_index("path")
        if {"plain", "fast"} <= set(t.index):
            speed = t.loc["fast", "images_per_second"] / t.loc["plain", "images_per_second"]
            memory = t.loc["fast", "peak_memory_mb"] / t.loc["plain", "peak_memory_mb"]
            verdict = "PASS" if speed >= SPEEDUP and memory <= 1 else "FAIL"
            lines.append(f"* fast path against the plain fp32 loop: {speed:.2f}x the images/s, {memory:.2f}x the peak "
                         f"memory -> {verdict} (criterion: at least {SPEEDUP:g}x, no more memory)")
    bf16 = folder / f"bf16_minicity_{device}.csv"
    if bf16.is_file():
        b = pd.read_csv(bf16).astype({"seed": str}).set_index("seed")
        if "mean" in b.index:
            gap = float(b.loc["mean", "bf16 - fp32 (adapted)"])
            verdict = "PASS" if abs(gap) <= BF16_TOLERANCE else "FAIL"
            seeds = ", ".join(s for s in b.index if s != "mean")
            lines.append(f"* bf16 - fp32 adapted mIoU on MiniCity, mean of seeds {seeds}: {gap:+.2f} points -> "
                         f"{verdict} (criterion: within {BF16_TOLERANCE:g})")
    return lines


def collect(folder: Path, results: Path, allow_cpu: bool = False) -> tuple[str, list[str]]:
    """Copy the suite's tables into ``results``; return the RESULTS.md section and the names of the copies."""
    env_path, summary_path = folder / "environment.json", folder / "suite_summary.txt"
    if not env_path.is_file() or not summary_path.is_file():
        raise FileNotFoundError(f"{folder} has no environment.json or suite_summary.txt: give the folder that "
                                "`bash benchmarks/gpu_suite.sh FOLDER` wrote")
    env = json.loads(env_path.read_text())
    device = env.get("device")
    if device not in ("cuda", "cpu"):
        raise ValueError(f"{env_path}: device {device!r} is neither cuda nor cpu: rerun benchmarks/gpu_suite.sh")
    if device == "cpu" and not allow_cpu:
        raise ValueError(f"{folder} is a CPU dry run, not GPU figures: run `bash benchmarks/gpu_suite.sh` on a GPU, "
                         "or pass --allow-cpu to collect it as *_cpu_dryrun files")
    suffix = "cuda" if device == "cuda" else "cpu_dryrun"
    summary = read_summary(summary_path)
    results.mkdir(parents=True, exist_ok=True)
    copied, missing = [], []
    for stem in TABLES:
        for ext in (".csv", ".md"):
            src = folder / f"{stem}_{device}{ext}"
            if src.is_file():
                shutil.copyfile(src, results / f"{stem}_{suffix}{ext}")
                copied.append(f"{stem}_{suffix}{ext}")
            else:
                missing.append(src.name)
    shutil.copyfile(env_path, results / f"gpu_suite_environment_{suffix}.json")
    shutil.copyfile(summary_path, results / f"gpu_suite_summary_{suffix}.txt")

    name = env.get("gpu_name") or "CPU (dry run: plumbing only, no GPU figure)"
    memory = f", {env['gpu_memory_gib']} GiB" if env.get("gpu_memory_gib") else ""
    steps = "; ".join(f"{r.step} {r.status}" + (f" (exit {r.exit_code})" if r.status != "ok" else "")
                      + f" {r.seconds} s" for r in summary.itertuples())
    parts = [f"## GPU: {name}{memory}",
             "",
             f"Measured {env.get('date_utc', '?')} UTC with `bash benchmarks/gpu_suite.sh "
             f"{'--dry-run ' if env.get('dry_run') else ''}\"$OUT\"` (commit "
             f"{str(env.get('git_commit') or '?')[:10]}, torch {env.get('torch')}, CUDA {env.get('cuda')}, cuDNN "
             f"{env.get('cudnn')}), collected with `python benchmarks/collect_gpu_suite.py <folder>` into "
             f"`benchmarks/results/*_{suffix}.*`. Steps: {steps}.",
             ""]
    parts += criteria(folder, device) or ["* no criterion could be read: a table is missing (see the steps above)"]
    for stem, heading in TABLES.items():
        md = folder / f"{stem}_{device}.md"
        parts += ["", f"### {heading}", "", md.read_text().strip() if md.is_file() else f"(no {md.name}: the step "
                  "did not write it; see the steps above)"]
    if missing:
        parts += ["", f"Not written by the suite: {', '.join(missing)}."]
    section = "\n".join(parts) + "\n"
    (results / f"gpu_suite_{suffix}.md").write_text(section)
    return section, [*copied, f"gpu_suite_{suffix}.md"]


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("folder", type=Path, help="the output folder of benchmarks/gpu_suite.sh")
    p.add_argument("--results", type=Path, default=RESULTS, help="where the tables go (default benchmarks/results)")
    p.add_argument("--allow-cpu", action="store_true", help="collect a CPU dry run (as *_cpu_dryrun files)")
    args = p.parse_args(argv)
    try:
        section, written = collect(args.folder, args.results, args.allow_cpu)
    except (FileNotFoundError, ValueError) as exc:
        p.error(str(exc))
    print(section)
    print(f"wrote {', '.join(written)} to {args.results}; paste the section above into benchmarks/RESULTS.md")
    return 0


if __name__ == "__main__":
    sys.exit(main())
