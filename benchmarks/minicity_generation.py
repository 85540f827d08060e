"""How fast MiniCity is generated: 1,000 images at the notebook resolution (64x128), with 2 workers and with 1.

Every notebook starts by generating MiniCity (about 3,400 images) if it is absent, so generation must stay a
matter of seconds on the 2-core CPU. The split sizes below keep the full build's mix of labelled and unlabelled
splits and of looks. Exits with status 1 if 2 workers take longer than the limit.

    python benchmarks/minicity_generation.py                 # 1,000 images, limit 30 s with 2 workers
    python benchmarks/minicity_generation.py --limit 60
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

from udalib.data.minicity import MiniCitySpec, generate

SPLITS = {
    "source": {"train": 400, "val": 50},
    "target": {"train": 250, "val": 100, "oracle": 100},
    "rome": {"val": 25}, "rio": {"val": 25}, "tokyo": {"val": 25}, "taipei": {"val": 25},
}


def time_generation(spec: MiniCitySpec, workers: int) -> float:
    """Seconds to write ``spec`` into a fresh temporary folder (pool start-up included)."""
    with tempfile.TemporaryDirectory() as tmp:
        t0 = time.perf_counter()
        root = generate(Path(tmp) / "minicity", spec, workers=workers)
        seconds = time.perf_counter() - t0
        written = sum(1 for _ in root.glob("*/images/*.png"))
    total = sum(sum(s.values()) for s in spec.splits.values())
    if written != total:
        raise RuntimeError(f"expected {total} images, found {written}")
    return seconds


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--limit", type=float, default=30.0, help="maximum seconds with 2 workers")
    args = p.parse_args(argv)

    spec = MiniCitySpec(seed=0, splits=SPLITS)
    n = sum(sum(s.values()) for s in spec.splits.values())
    assert n == 1000
    results = {}
    for workers in (2, 1):
        seconds = time_generation(spec, workers)
        results[workers] = seconds
        print(f"{n} images at {spec.height}x{spec.width}, {workers} worker{'s' if workers > 1 else ' '}: "
              f"{seconds:6.2f} s  {n / seconds:7.1f} images/s")
    print(f"speed-up with 2 workers: {results[1] / results[2]:.2f}x")
    if results[2] > args.limit:
        print(f"FAIL: generating {n} images took {results[2]:.1f} s with 2 workers (limit {args.limit:.0f} s)",
              file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
