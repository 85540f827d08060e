"""``benchmarks/gpu_suite.sh --dry-run``: the whole GPU suite at tiny sizes on the CPU, and its collector.

The dry run checks the plumbing the GPU call depends on (every script, its options, its output files and columns),
not any figure: about 75 s of CPU time (2 min 15 s of wall time measured on two cores shared with other work).
"""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

ROOT = Path(__file__).parents[1]
SUITE = ROOT / "benchmarks" / "gpu_suite.sh"
COLLECT = ROOT / "benchmarks" / "collect_gpu_suite.py"
STEPS = ["environment", "train_throughput", "eval_throughput", "bf16_minicity", "method_families", "project_hours"]
FAMILIES = ["maxsquare_iw_multi", "adaptsegnet_multi", "snr_ms", "clustering", "cbst", "mlsl", "dacs", "dacs_mic"]


def suite_env() -> dict:
    env = {k: v for k, v in os.environ.items() if k not in ("UDALIB_RUNS", "OUT")}
    return env | {"PYTHON": sys.executable, "OMP_NUM_THREADS": "1"}


@pytest.fixture(scope="module")
def dry_run(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("gpu_suite")
    proc = subprocess.run(["bash", str(SUITE), "--dry-run", str(out)], env=suite_env(), capture_output=True,
                          text=True, timeout=900)
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-2000:]
    for step in STEPS:  # each step is announced before it runs
        assert f"step {step} (limit" in proc.stdout
    return out


def finite(values) -> bool:
    return all(math.isfinite(float(v)) for v in values)


def test_summary_records_every_step_ok(dry_run):
    summary = pd.read_csv(dry_run / "suite_summary.txt", sep="\t")
    assert list(summary.columns) == ["step", "status", "exit_code", "seconds", "limit_s"]
    assert summary["step"].tolist() == STEPS
    assert (summary["status"] == "ok").all() and (summary["exit_code"] == 0).all()
    assert (summary["seconds"] <= summary["limit_s"]).all()
    env = json.loads((dry_run / "environment.json").read_text())
    assert env["device"] == "cpu" and env["dry_run"] is True and env["gpu_name"] == ""
    assert {"torch", "cuda", "cudnn", "python", "git_commit", "date_utc"} <= set(env)
    for step in STEPS:
        assert (dry_run / "logs" / f"{step}.log").is_file()


def test_throughput_tables(dry_run):
    train = pd.read_csv(dry_run / "train_throughput_cpu.csv")
    assert train["path"].tolist() == ["plain", "fast"]  # the dry run leaves torch.compile out (minutes on a CPU)
    assert {"images_per_second", "seconds_per_step", "peak_memory_mb", "compile_backend"} <= set(train.columns)
    assert finite(train[["images_per_second", "seconds_per_step", "peak_memory_mb"]].to_numpy().ravel())
    assert (train["images_per_second"] > 0).all() and (train["peak_memory_mb"] > 0).all()
    assert "speed vs plain" in (dry_run / "train_throughput_cpu.md").read_text()

    evaluation = pd.read_csv(dry_run / "eval_throughput_cpu.csv")
    assert evaluation["path"].tolist() == ["plain", "udalib"]  # the CPU default: bf16 is emulated there
    assert finite(evaluation[["images_per_second", "seconds_per_image", "peak_memory_mb"]].to_numpy().ravel())
    assert (evaluation["images_per_second"] > 0).all()


def test_bf16_table_and_run_folders_stay_in_the_suite_folder(dry_run):
    bf16 = pd.read_csv(dry_run / "bf16_minicity_cpu.csv").astype({"seed": str}).set_index("seed")
    assert bf16.index.tolist() == ["0", "mean"]
    assert list(bf16.columns) == ["source fp32", "source bf16", "adapted fp32", "adapted bf16",
                                  "adapted fp32, bf16 inference", "bf16 - fp32 (adapted)"]
    assert finite(bf16.to_numpy().ravel()) and ((bf16.iloc[:, :5] >= 0) & (bf16.iloc[:, :5] <= 100)).all().all()
    assert sorted(p.name for p in (dry_run / "runs" / "bf16_check").iterdir()) == ["bf16", "fp32"]


def test_method_families_table(dry_run):
    families = pd.read_csv(dry_run / "method_families_cpu.csv")
    assert sorted(families["family"]) == sorted(FAMILIES)  # in the order they finished (--jobs 2)
    families = families.set_index("family").loc[FAMILIES]
    assert families["recipe"].tolist() == ["gta5_maxsquare_iw_multi", "gta5_adaptsegnet_multi", "gta5_snr_maxsquare",
                                           "gta5_clustering_resnet101", "gta5_cbst", "gta5_mlsl", "gta5_dacs",
                                           "gta5_dacs_mic"]
    assert (families["status"] == "ok").all() and families["losses_finite"].all()
    assert finite(families[["seconds_per_step", "images_per_second", "peak_memory_mb"]].to_numpy().ravel())
    assert (families["seconds_per_step"] > 0).all() and (families["peak_memory_mb"] > 0).all()
    assert families["size_fraction"].eq(0.0625).all() and families["batch"].tolist() == [1, 1, 1, 1, 2, 2, 2, 2]
    # the recipes' sizes, scaled: GTA5 720x1280 -> 48x80; MaxSquare+IW+Multi's 640x1280 target crop, the others
    # 512x1024; DACS's 512x512 training crops -> 32x32, source and target
    assert families["source_size"].tolist() == ["48x80"] * 6 + ["32x32"] * 2
    assert families["target_size"].tolist() == ["40x80"] + ["32x64"] * 5 + ["32x32"] * 2
    assert families.loc["dacs_mic", "loss_names"].split()[-2:] == ["mic", "mic_weight"]
    assert families["init"].str.startswith("random").all() and not families["bf16_autocast"].any()
    assert families.loc["adaptsegnet_multi", "loss_names"].split()[:1] == ["seg"]
    passes = families.loc[["cbst", "mlsl"]]
    assert finite(passes[["pseudo_label_pass_s", "pass_s_per_target_image", "first_pass_s"]].to_numpy().ravel())
    assert (passes["pass_target_images"] == 2).all() and (passes["pass_s_per_target_image"] > 0).all()
    assert families.loc[FAMILIES[:4], "pseudo_label_pass_s"].isna().all()


def test_project_hours_table(dry_run):
    families = pd.read_csv(dry_run / "method_families_cpu.csv").set_index("family")
    hours = pd.read_csv(dry_run / "project_hours_cpu.csv").set_index("recipe")
    measured = hours[hours["basis"] == "measured (this recipe)"]
    assert sorted(measured.index) == sorted(families["recipe"])
    for recipe in measured.index:
        row, fam = hours.loc[recipe], families[families["recipe"] == recipe].iloc[0]
        assert row["seconds_per_step"] == pytest.approx(fam["seconds_per_step"])
        passes = 0.0 if pd.isna(row["pass_hours"]) else row["rounds"] * 2975 * fam["pass_s_per_target_image"] / 3600
        assert row["hours_1gpu"] == pytest.approx(row["steps"] * fam["seconds_per_step"] / 3600 + passes, abs=0.006)
        assert row["hours_4gpu_recipe_steps"] == row["hours_1gpu"]  # per-GPU batch kept: 4x the images, same time
        assert row["hours_4gpu_same_images"] == pytest.approx(
            (row["steps"] // 4) * fam["seconds_per_step"] / 3600 + passes, abs=0.006)
    assert hours.loc["gta5_cbst", "rounds"] == 6 and hours.loc["gta5_mlsl", "pass_hours"] > 0
    assert hours.loc["gta5_minent", "basis"].startswith("proxy: method minent")
    assert hours.loc["source_gta5", "basis"].startswith("not measured") and pd.isna(hours.loc["source_gta5",
                                                                                               "hours_1gpu"])
    assert "not the recipes' hours" in (dry_run / "project_hours_cpu.md").read_text()  # measured at 1/16 size


def test_collector_refuses_a_dry_run_then_collects_it_as_such(dry_run, tmp_path):
    run = [sys.executable, str(COLLECT), str(dry_run), "--results", str(tmp_path)]
    refused = subprocess.run(run, capture_output=True, text=True, env=suite_env())
    assert refused.returncode == 2 and "CPU dry run" in refused.stderr and "--allow-cpu" in refused.stderr
    assert not any(tmp_path.iterdir())
    proc = subprocess.run([*run, "--allow-cpu"], capture_output=True, text=True, env=suite_env())
    assert proc.returncode == 0, proc.stderr
    names = sorted(p.name for p in tmp_path.iterdir())
    tables = ["bf16_minicity", "eval_throughput", "method_families", "project_hours", "train_throughput"]
    assert names == sorted([f"{t}_cpu_dryrun.{e}" for t in tables for e in ("csv", "md")]
                           + ["gpu_suite_cpu_dryrun.md", "gpu_suite_environment_cpu_dryrun.json",
                              "gpu_suite_summary_cpu_dryrun.txt"])
    assert not any("_cuda" in n for n in names)
    section = (tmp_path / "gpu_suite_cpu_dryrun.md").read_text()
    assert section.startswith("## GPU: CPU (dry run") and section in proc.stdout
    assert "gpu_suite.sh --dry-run" in section and "fast path against the plain fp32 loop" in section
    for heading in ("### Training throughput", "### Evaluation throughput", "### bf16 against fp32",
                    "### Method families", "### Hours per recipe"):
        assert heading in section
    pd.testing.assert_frame_equal(pd.read_csv(tmp_path / "method_families_cpu_dryrun.csv"),
                                  pd.read_csv(dry_run / "method_families_cpu.csv"))


def test_collector_names_the_gpu_of_a_cuda_suite(dry_run, tmp_path):
    """A suite folder whose environment.json says cuda: the files end in _cuda and the section names the GPU."""
    folder = tmp_path / "suite"
    folder.mkdir()
    for f in dry_run.glob("*_cpu.*"):
        (folder / f.name.replace("_cpu.", "_cuda.")).write_bytes(f.read_bytes())
    env = json.loads((dry_run / "environment.json").read_text()) | {
        "device": "cuda", "dry_run": False, "gpu_name": "NVIDIA H100 80GB HBM3", "gpu_memory_gib": 79.2}
    (folder / "environment.json").write_text(json.dumps(env))
    (folder / "suite_summary.txt").write_text((dry_run / "suite_summary.txt").read_text())
    results = tmp_path / "results"
    proc = subprocess.run([sys.executable, str(COLLECT), str(folder), "--results", str(results)],
                          capture_output=True, text=True, env=suite_env())
    assert proc.returncode == 0, proc.stderr
    assert (results / "train_throughput_cuda.csv").is_file() and (results / "project_hours_cuda.md").is_file()
    section = (results / "gpu_suite_cuda.md").read_text()
    assert section.splitlines()[0] == "## GPU: NVIDIA H100 80GB HBM3, 79.2 GiB"
    assert '`bash benchmarks/gpu_suite.sh "$OUT"`' in section


def test_suite_goes_on_past_failing_steps_and_records_their_exit_codes(tmp_path):
    out = tmp_path / "suite"
    proc = subprocess.run(["bash", str(SUITE), "--dry-run", str(out)], capture_output=True, text=True, timeout=60,
                          env=suite_env() | {"PYTHON": "false"})  # every step exits 1 at once
    assert proc.returncode == 1
    summary = pd.read_csv(out / "suite_summary.txt", sep="\t")
    assert summary["step"].tolist() == STEPS
    assert (summary["status"] == "failed").all() and (summary["exit_code"] == 1).all()
    assert "!! step method_families: failed (exit 1)" in proc.stdout


def test_suite_rejects_unknown_arguments(tmp_path):
    proc = subprocess.run(["bash", str(SUITE), "--gpu", str(tmp_path)], capture_output=True, text=True, timeout=30)
    assert proc.returncode == 2 and proc.stderr.count("\n") == 1
    assert "usage: bash benchmarks/gpu_suite.sh [--dry-run] [OUTDIR]" in proc.stderr
