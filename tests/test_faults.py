"""Faults: kill training, a checkpoint write and a MiniCity build at chosen points, race two processes on one
folder, and check that nothing is lost, mixed or mislabelled. Bounded: a few tiny subprocesses, seconds each."""

from __future__ import annotations

import json
import os
import random
import shutil
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import pandas as pd
import pytest

from udalib import locks
from udalib.data import minicity
from udalib.experiment import Experiment, load_run, run

REPO = Path(__file__).resolve().parent.parent
TINY = dict(steps=6, batch_size=4, model_args={"width": 8}, method_args={"lr": 0.02})
FAST_SPEC = dict(seed=2, height=16, width=32, splits={"source": {"train": 12, "val": 4}, "target": {"val": 4}})


@pytest.fixture()
def home(isolated_home, tiny_minicity):
    shutil.copytree(tiny_minicity, isolated_home / "data" / minicity.MiniCitySpec().name)
    return isolated_home


@pytest.fixture()
def one_thread():
    """The killed process runs on one thread (``_python``); bit-exact comparison needs this process on one too."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def _python(code: str, home: Path, *, wait: bool = True):
    env = {**os.environ, "UDALIB_HOME": str(home), "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}
    env.pop("UDALIB_DATA", None)
    env.pop("UDALIB_RUNS", None)
    args = [sys.executable, "-c", textwrap.dedent(code)]
    if not wait:
        return subprocess.Popen(args, env=env, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    return subprocess.run(args, env=env, cwd=REPO, capture_output=True, text=True, timeout=120)


def _losses(folder: Path) -> list[dict]:
    df = pd.read_csv(folder / "metrics.csv")
    return df.drop(columns=["seconds"]).to_dict("records")


KILL_AFTER_SAVE = """
    import os, signal
    from udalib.experiment import Experiment, run
    from udalib.train import loop
    saves, real = [0], loop.save_checkpoint
    def save_then_die(*args, **kwargs):
        real(*args, **kwargs)
        saves[0] += 1
        if saves[0] == {k}:
            os.kill(os.getpid(), signal.SIGKILL)
    loop.save_checkpoint = save_then_die
    run(Experiment(**{exp}), {folder!r}, progress=False, checkpoint_every=1)
"""

KILL_DURING_WRITE = """
    import os, signal
    import torch
    from udalib.experiment import Experiment, run
    saves, real = [0], torch.save
    def half_then_die(obj, f, *args, **kwargs):
        saves[0] += 1
        if saves[0] == {k}:  # half the bytes of this checkpoint reach its temporary file, then the process dies
            import io
            buf = io.BytesIO()
            real(obj, buf)
            f.write(buf.getvalue()[: len(buf.getvalue()) // 2])
            f.flush()
            os.kill(os.getpid(), signal.SIGKILL)
        return real(obj, f, *args, **kwargs)
    torch.save = half_then_die
    run(Experiment(**{exp}), {folder!r}, progress=False, checkpoint_every=1)
"""


@pytest.mark.parametrize("script", [KILL_AFTER_SAVE, KILL_DURING_WRITE], ids=["after-a-checkpoint", "mid-write"])
def test_a_killed_run_continues_to_exactly_the_uninterrupted_result(home, script, one_thread):
    exp = Experiment(**TINY)
    reference = run(exp, home / "runs" / "straight", progress=False, checkpoint_every=1)
    k = random.Random(script).randint(2, 5)  # the save (step) at which the process dies
    folder = home / "runs" / "killed"
    result = _python(script.format(k=k, exp=TINY, folder=str(folder)), home)
    assert result.returncode == -signal.SIGKILL, result.stderr
    assert not (folder / "scores.json").exists() and json.loads((folder / "config.json").read_text())["steps"] == 6
    import torch

    state = torch.load(folder / "checkpoint.pt", weights_only=False)  # the last complete checkpoint, never a torn one
    assert state["step"] == (k if script is KILL_AFTER_SAVE else k - 1)
    leftovers = [p.name for p in folder.iterdir() if p.name.endswith(".tmp")]
    assert leftovers == ([] if script is KILL_AFTER_SAVE else [leftovers[0]]) and all(
        n.startswith(".checkpoint.pt.") for n in leftovers)

    resumed = run(exp, folder, progress=False, checkpoint_every=1)  # the same command again
    assert _losses(folder) == _losses(reference.dir)
    assert {k: s.miou for k, s in resumed.scores.items()} == {k: s.miou for k, s in reference.scores.items()}
    assert not [p for p in folder.iterdir() if p.name.endswith(".tmp")]  # the killed writer's temp file is gone


def test_checkpoints_are_written_by_wall_time_by_default(home, monkeypatch):
    """With no step interval, a checkpoint every ``checkpoint_seconds``: here every step (a kill loses one)."""
    from udalib.train import loop

    steps = []
    real = loop.save_checkpoint
    monkeypatch.setattr(loop, "save_checkpoint", lambda *a, **kw: (steps.append(kw["step"]), real(*a, **kw)))
    run(Experiment(**TINY), home / "runs" / "timed", progress=False, checkpoint_seconds=1e-9)
    assert steps == [1, 2, 3, 4, 5, 6]
    steps.clear()
    run(Experiment(**{**TINY, "seed": 1}), home / "runs" / "default", progress=False)  # 300 s: only the end
    assert steps == [6]


def test_two_trainings_on_one_folder_never_mix(home):
    folder = home / "runs" / "raced"
    code = f"""
        from udalib.experiment import Experiment, run
        r = run(Experiment(**{{**{TINY!r}, "steps": 30}}), {str(folder)!r}, progress=False)
        print("finished", r.scores["minicity:target/val"].miou)
    """
    procs = [_python(code, home, wait=False) for _ in range(2)]
    outs = [p.communicate(timeout=120) + (p.returncode,) for p in procs]
    finished = [out for out in outs if out[2] == 0]
    assert finished, outs
    for _out, err, code_ in outs:
        if code_ != 0:  # the second one, while the first ran: told who holds the folder, nothing written
            assert "is in use by process" in err and "wait for it to finish, or use another run folder" in err, err
    done = load_run(folder)
    assert done.config == Experiment(**{**TINY, "steps": 30})
    assert len(_losses(folder)) == 3 and [row["step"] for row in _losses(folder)] == [10, 20, 30]
    mious = {out.split()[-1] for out, _, code_ in finished}
    assert mious == {f"{done.scores['minicity:target/val'].miou}"}  # whoever came second loaded the same run


def test_a_lock_of_a_killed_process_is_recovered(tmp_path):
    lock = tmp_path / ".lock"
    code = f"""
        import os, signal
        from udalib import locks
        with locks.hold({str(lock)!r}, what="test"):
            os.kill(os.getpid(), signal.SIGKILL)
    """
    assert _python(code, tmp_path).returncode == -signal.SIGKILL
    assert json.loads((tmp_path / ".lock.owner").read_text())["pid"] != os.getpid()  # the dead holder's record
    with locks.hold(lock, what="test"):  # the kernel dropped its flock: no wait, no error
        assert json.loads((tmp_path / ".lock.owner").read_text())["pid"] == os.getpid()


def test_a_killed_minicity_build_leaves_nothing_marked_complete(tmp_path):
    spec = minicity.MiniCitySpec(**FAST_SPEC)
    root = tmp_path / "mc"
    kill_at = random.Random(7).randint(3, 18)
    code = f"""
        import os, signal
        from udalib.data import minicity
        count, real = [0], minicity._write_one
        def write_then_die(job):
            count[0] += 1
            if count[0] == {kill_at}:
                os.kill(os.getpid(), signal.SIGKILL)
            real(job)
        minicity._write_one = write_then_die
        minicity.generate({str(root)!r}, minicity.MiniCitySpec(**{FAST_SPEC!r}), workers=1)
    """
    assert _python(code, tmp_path).returncode == -signal.SIGKILL
    assert not root.exists() and root.with_name("mc.partial").is_dir()  # the half build is only the temporary one
    assert minicity.generate(root, spec, workers=1) == root  # the rerun rebuilds it, checked file by file
    fresh = minicity.generate(tmp_path / "fresh", spec, workers=1)
    for lst in (root / "lists").glob("*.txt"):
        for rel in " ".join(lst.read_text().split("\n")).split():
            assert (root / rel).read_bytes() == (fresh / rel).read_bytes(), rel
    assert not root.with_name("mc.partial").exists()


def test_two_minicity_builds_into_one_folder_wait_for_each_other(tmp_path):
    root = tmp_path / "mc"
    code = f"""
        from udalib.data import minicity
        print(minicity.generate({str(root)!r}, minicity.MiniCitySpec(**{FAST_SPEC!r}), workers=1))
    """
    procs = [_python(code, tmp_path, wait=False) for _ in range(2)]
    outs = [p.communicate(timeout=120) + (p.returncode,) for p in procs]
    assert all(code_ == 0 for *_, code_ in outs), outs
    assert all(out.strip() == str(root) for out, *_ in outs)
    minicity.verify(root, minicity.MiniCitySpec(**FAST_SPEC))  # every file opens, with the right size and ids
    assert sorted(p.name for p in tmp_path.iterdir()) == [".mc.lock", "mc"]


def test_a_build_marked_complete_with_missing_files_is_refused(tmp_path):
    spec = minicity.MiniCitySpec(**FAST_SPEC)
    root = minicity.generate(tmp_path / "mc", spec, workers=1)
    (root / "source" / "images" / "train_00003.png").unlink()
    with pytest.raises(ValueError, match=r"marked complete but 1 listed files are missing \(first: "
                                         r"source/images/train_00003.png\): regenerate it with .*--overwrite"):
        minicity.generate(root, spec, workers=1)
    (root / "source" / "labels" / "train_00004.png").write_bytes(b"\x89PNG\r\n\x1a\n" + b"0" * 20)  # truncated
    with pytest.raises(ValueError, match="train_00003.png is missing or unreadable"):
        minicity.verify(root, spec)


KILL_DATA_SCRIPT = """
    import os, signal, sys
    sys.path.insert(0, {scripts!r})
    import _common
    import prepare_synthia
    calls, real = [0], _common.{target}
    def then_die(*args, **kwargs):
        calls[0] += 1
        if calls[0] == {k}:
            os.kill(os.getpid(), signal.SIGKILL)
        return real(*args, **kwargs)
    _common.{target} = then_die
    prepare_synthia.main(["--raw", {raw!r}, "--out", {out!r}, "--partial", "--size", "8x4", "--workers", "1"])
"""


@pytest.mark.parametrize("target, k, again", [
    ("write_text_atomic", 1, []),  # right after the output folder is made, before anything is recorded
    ("convert_item", 3, ["--resume"]),  # in the middle of the conversion
], ids=["after-mkdir", "mid-conversion"])
def test_a_killed_data_script_is_continued_by_a_rerun(tmp_path, monkeypatch, capsys, target, k, again):
    from test_data_scripts import SCRIPTS, make_synthia, read

    raw = make_synthia(tmp_path / "RAND_CITYSCAPES", numbers=(0, 1, 2, 3, 9000))
    out, reference = tmp_path / "prepared", tmp_path / "reference"
    code = KILL_DATA_SCRIPT.format(scripts=str(SCRIPTS), target=target, k=k, raw=str(raw), out=str(out))
    assert _python(code, tmp_path).returncode == -signal.SIGKILL
    assert not (out / "synthia" / "lists").exists()  # nothing is marked complete

    monkeypatch.syspath_prepend(str(SCRIPTS))
    import prepare_synthia

    args = ["--raw", str(raw), "--partial", "--size", "8x4", "--workers", "1"]
    assert prepare_synthia.main([*args, "--out", str(out), *again]) == 0
    assert prepare_synthia.main([*args, "--out", str(reference)]) == 0
    names = sorted(p.relative_to(reference).as_posix() for p in (reference / "synthia").rglob("*.png"))
    assert len(names) == 10 and names == sorted(p.relative_to(out).as_posix()
                                                 for p in (out / "synthia").rglob("*.png"))
    for rel in names:
        assert (read(out / rel) == read(reference / rel)).all(), rel
    assert json.loads((out / "synthia" / "prepare.json").read_text())["finished"] is True
    assert not (out / "synthia" / ".partial").exists()
