"""bf16 against fp32 on MiniCity: does training under bf16 autocast change the adapted model's mIoU?

For each seed, the standard MiniCity runs of ``udalib.zoo`` twice, once in fp32 and once under bf16 autocast (the
``amp`` that ``udalib.train.fit`` switches on for CUDA), each precision from its own source model: the source model
(``zoo.source_experiment``, 300 steps), then the adaptation (``--method``, default MaxSquare, 60 steps, from it).
Every model is scored in fp32 on ``minicity:target/val``; the fp32 adapted model is also scored under bf16 autocast
(inference alone). The criterion: the mean bf16 mIoU over the seeds is within 0.5 points (``--tolerance``) of the
mean fp32 mIoU. The exit status is 1 when it is not.

    python benchmarks/bf16_minicity.py --device cuda          # 3 seeds, 2 precisions, source + adaptation
    python benchmarks/bf16_minicity.py --seeds 0 --source-steps 20 --adapt-steps 10   # a CPU smoke run

Run folders go to ``runs/bf16_check/<precision>/`` (``$UDALIB_RUNS/bf16_check/...`` when set; a finished run is
reused); the table to
``benchmarks/results/bf16_minicity_<device>.csv`` and ``.md``.
"""

from __future__ import annotations

import argparse
import sys
from dataclasses import replace
from pathlib import Path

import pandas as pd
import torch

from udalib import paths, zoo
from udalib.data import eval_loader
from udalib.eval.evaluate import evaluate
from udalib.experiment import get_or_train, open_data

RESULTS = Path(__file__).parent / "results"
TARGET_VAL = "minicity:target/val"
TOLERANCE = 0.5  # mIoU points


def adapted_runs(seed: int, args, precision: str):
    """The source run and the adaptation run of ``seed`` trained in ``precision`` ("fp32" or "bf16")."""
    folder = paths.runs_dir() / "bf16_check" / precision
    amp = precision == "bf16"
    source_exp = replace(zoo.source_experiment(seed, steps=args.source_steps), device=args.device,
                         label=f"source_only, {precision}")
    source = get_or_train(source_exp, folder / source_exp.name, amp=amp, progress=False, workers=args.workers)
    adapt_exp = replace(zoo.adaptation_experiment(args.method, source_exp, steps=args.adapt_steps),
                        init=str(source.dir), device=args.device, label=f"{args.method}, {precision}")
    return source, get_or_train(adapt_exp, folder / adapt_exp.name, amp=amp, progress=False, workers=args.workers)


def bf16_inference_miou(run, device: str) -> float:
    """mIoU of ``run``'s model on the target val set, scored under bf16 autocast."""
    dataset = open_data(TARGET_VAL, default_split="val", train=False, exp=run.config)
    with torch.autocast(torch.device(device).type, dtype=torch.bfloat16):
        return evaluate(run.model(device), eval_loader(dataset), run.config.num_classes, device=device).miou


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    p.add_argument("--method", default="maxsquare", help="adaptation method (MiniCity preset)")
    p.add_argument("--source-steps", type=int, default=zoo.SOURCE_STEPS)
    p.add_argument("--adapt-steps", type=int, default=zoo.ADAPT_STEPS)
    p.add_argument("--workers", type=int, default=0,
                   help="DataLoader workers of the training runs (default 0; on a GPU a few keep it fed)")
    p.add_argument("--tolerance", type=float, default=TOLERANCE,
                   help=f"mIoU points the bf16 mean may differ from the fp32 mean (default {TOLERANCE}; a smoke run "
                        "of a few steps, whose models are near chance, can pass a large value to check the plumbing)")
    p.add_argument("--out", type=Path, default=RESULTS)
    args = p.parse_args(argv)
    if not args.tolerance >= 0 or args.workers < 0:
        p.error(f"--tolerance ({args.tolerance}) and --workers ({args.workers}) must be at least 0")
    if args.device.startswith("cuda") and not torch.cuda.is_available():
        p.error("--device cuda, but torch sees no GPU: run on a GPU machine (on CPU, bf16 is emulated and slow)")

    rows = []
    for seed in args.seeds:
        (src32, ada32), (src16, ada16) = (adapted_runs(seed, args, prec) for prec in ("fp32", "bf16"))
        rows.append({"seed": seed, "source fp32": src32.miou(TARGET_VAL), "source bf16": src16.miou(TARGET_VAL),
                     "adapted fp32": ada32.miou(TARGET_VAL), "adapted bf16": ada16.miou(TARGET_VAL),
                     "adapted fp32, bf16 inference": bf16_inference_miou(ada32, args.device)})
    table = pd.DataFrame(rows).set_index("seed")
    table.loc["mean"] = table.mean()
    table["bf16 - fp32 (adapted)"] = table["adapted bf16"] - table["adapted fp32"]
    gap = float(table.loc["mean", "bf16 - fp32 (adapted)"])
    device = torch.cuda.get_device_name() if args.device.startswith("cuda") else "CPU"
    verdict = "PASS" if abs(gap) <= args.tolerance else "FAIL"
    header = (f"bf16 vs fp32 training on MiniCity ({device}, torch {torch.__version__}): {args.method} "
              f"({args.adapt_steps} steps) from the source model ({args.source_steps} steps), mIoU (%) on "
              f"{TARGET_VAL}, seeds {args.seeds}. Mean bf16 - fp32: {gap:+.2f} points -> {verdict} "
              f"(criterion: within {args.tolerance:g})")
    print(header + "\n\n" + table.round(2).to_string())
    args.out.mkdir(parents=True, exist_ok=True)
    stem = args.out / f"bf16_minicity_{'cuda' if args.device.startswith('cuda') else 'cpu'}"
    table.round(3).to_csv(stem.with_suffix(".csv"))
    stem.with_suffix(".md").write_text(f"{header}\n\n```\n{table.round(2).to_string()}\n```\n")
    print(f"\nwrote {stem}.csv and {stem}.md")
    return 0 if verdict == "PASS" else 1


if __name__ == "__main__":
    sys.exit(main())
