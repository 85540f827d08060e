#!/usr/bin/env bash
# Every GPU measurement of benchmarks/ in one call of at most 9 minutes on one GPU:
#
#   1. train_throughput.py --compile: images/s and peak memory of the fast path, torch.compile and the plain fp32 loop
#   2. eval_throughput.py: evaluation at 1024x512 with flip
#   3. bf16_minicity.py: 3 seeds, bf16 against fp32 (run folders under OUTDIR/runs, not the checkout's runs/)
#   4. method_families.py: s/step, peak memory and finite losses of eight method families at their recipe sizes
#   5. project_hours.py: hours per recipe on one GPU and on four, from step 4
#
#   bash benchmarks/gpu_suite.sh [OUTDIR]             # OUTDIR: default $OUT, else runs/gpu_suite
#   bash benchmarks/gpu_suite.sh --dry-run [OUTDIR]   # the same steps at tiny sizes on the CPU (without torch.compile
#                                                     # and the eval's bf16 path): about 75 s of CPU time
#   python benchmarks/collect_gpu_suite.py OUTDIR     # then: into benchmarks/results/*_cuda.*, and RESULTS.md's text
#
# Each step runs under its own `timeout` (the limits add up to under 9 minutes), prints its name when it starts,
# logs to OUTDIR/logs/<step>.log, and the suite goes on past a failing step. OUTDIR/suite_summary.txt has one
# tab-separated line per step: step, status (ok, failed, timed_out), exit code, seconds, limit. environment.json names
# the device (torch.cuda.get_device_name). The exit status is 1 when a step did not end ok. PYTHON picks the
# interpreter (default: python).
set -u

DRY_RUN=0
if [[ "${1:-}" == "--dry-run" ]]; then
  DRY_RUN=1
  shift
fi
if [[ "${1:-}" == -* || $# -gt 1 ]]; then
  echo "gpu_suite.sh: unexpected arguments '$*'; usage: bash benchmarks/gpu_suite.sh [--dry-run] [OUTDIR]" >&2
  exit 2
fi
OUTDIR="${1:-${OUT:-runs/gpu_suite}}"
PY="${PYTHON:-python}"
BENCH="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
mkdir -p "$OUTDIR/logs" || { echo "gpu_suite.sh: cannot create $OUTDIR: give a writable folder" >&2; exit 2; }
OUTDIR="$(cd "$OUTDIR" && pwd)"
SUMMARY="$OUTDIR/suite_summary.txt"
export PYTHONPATH="$(dirname "$BENCH")${PYTHONPATH:+:$PYTHONPATH}"  # this checkout's udalib
export UDALIB_RUNS="$OUTDIR/runs"  # bf16_minicity's run folders (udalib.paths.runs_dir)
export PYTHONUNBUFFERED=1

if [[ $DRY_RUN == 1 ]]; then
  DEVICE=cpu
  export OMP_NUM_THREADS="${OMP_NUM_THREADS:-1}"
  TRAIN=(--size 0.05 --steps 1 --warmup 1 --workers 0)  # no --compile: tracing R101 alone doubles this step
  EVAL=(--size 0.05 --images 2 --warmup 1 --batch 1 --workers 0)  # plain and udalib (CPU bf16 is emulated)
  BF16=(--seeds 0 --source-steps 2 --adapt-steps 2 --tolerance 100)  # near-chance models: the plumbing only
  FAMILIES=(--size 0.0625 --steps 1 --warmup 1 --workers 0 --target-images 2 --in-process)
  LIMITS=(60 180 120 180 240 60)  # environment, train, eval, bf16, families, hours (s): room for a CPU shared
                                  # with other work (2 cores at load 5: about 2 min 15 s in all)
else
  DEVICE=cuda
  TRAIN=(--compile)                 # full size, 5 warm-up + 20 timed steps, plain + fast + compile (inductor)
  EVAL=()                           # 1024x512 with flip, 16 warm-up + 96 timed images, plain + udalib + fast
  BF16=(--seeds 0 1 2 --workers 4)  # MiniCity source 300 + MaxSquare 60 steps, two precisions
  FAMILIES=(--steps 30 --warmup 3)  # full recipe sizes, one family at a time
  LIMITS=(20 155 45 130 145 15)     # 510 s, + at most 5 s per step to kill one that ignores SIGTERM: 9 min
fi

printf 'step\tstatus\texit_code\tseconds\tlimit_s\n' > "$SUMMARY"
FAILED=0

# run_step NAME LIMIT COMMAND...: run under `timeout`, log, and record the outcome in the summary
run_step() {
  local name=$1 limit=$2
  shift 2
  echo "== [$(date +%H:%M:%S)] step $name (limit ${limit} s): $*"
  local start=$SECONDS
  timeout --kill-after=5 "$limit" "$@" > "$OUTDIR/logs/$name.log" 2>&1
  local rc=$?
  local took=$((SECONDS - start)) status=ok
  if [[ $rc == 124 || $rc == 137 ]]; then
    status=timed_out
  elif [[ $rc != 0 ]]; then
    status=failed
  fi
  printf '%s\t%s\t%s\t%s\t%s\n' "$name" "$status" "$rc" "$took" "$limit" >> "$SUMMARY"
  if [[ $status == ok ]]; then
    tail -n 25 "$OUTDIR/logs/$name.log"
  else
    FAILED=1
    echo "!! step $name: $status (exit $rc) after $took s; the end of $OUTDIR/logs/$name.log:"
    tail -n 40 "$OUTDIR/logs/$name.log"
  fi
}

run_step environment "${LIMITS[0]}" "$PY" - "$OUTDIR/environment.json" "$DEVICE" "$DRY_RUN" <<'EOF'
import json, os, platform, subprocess, sys, time
import torch
path, device, dry_run = sys.argv[1], sys.argv[2], sys.argv[3] == "1"
if device == "cuda" and not torch.cuda.is_available():
    sys.exit("gpu_suite.sh: torch sees no GPU: run on a GPU machine, or pass --dry-run for the CPU check")
try:
    commit = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True).stdout.strip()
except OSError:
    commit = ""
env = {"device": device, "dry_run": dry_run, "torch": torch.__version__, "python": platform.python_version(),
       "cuda": torch.version.cuda, "cudnn": torch.backends.cudnn.version(), "git_commit": commit,
       "date_utc": time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime()), "cpu_count": os.cpu_count(),
       "gpu_name": torch.cuda.get_device_name() if device == "cuda" else "",
       "gpu_memory_gib": round(torch.cuda.get_device_properties(0).total_memory / 2**30, 1) if device == "cuda" else 0}
open(path, "w").write(json.dumps(env, indent=1) + "\n")
print(json.dumps(env))
EOF
run_step train_throughput "${LIMITS[1]}" "$PY" "$BENCH/train_throughput.py" --device "$DEVICE" "${TRAIN[@]}" --out "$OUTDIR"
run_step eval_throughput "${LIMITS[2]}" "$PY" "$BENCH/eval_throughput.py" --device "$DEVICE" "${EVAL[@]}" --out "$OUTDIR"
run_step bf16_minicity "${LIMITS[3]}" "$PY" "$BENCH/bf16_minicity.py" --device "$DEVICE" "${BF16[@]}" --out "$OUTDIR"
run_step method_families "${LIMITS[4]}" "$PY" "$BENCH/method_families.py" --device "$DEVICE" "${FAMILIES[@]}" \
  --out "$OUTDIR"
run_step project_hours "${LIMITS[5]}" "$PY" "$BENCH/project_hours.py" "$OUTDIR/method_families_$DEVICE.csv" \
  --out "$OUTDIR"

echo "== summary ($SUMMARY)"
column -t -s $'\t' "$SUMMARY" 2>/dev/null || cat "$SUMMARY"
exit $FAILED
