"""The one loop: poly LR, exact resume, atomic checkpoints, bad inputs, and DDP under torchrun."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch

from udalib.data import SegmentationList
from udalib.methods import Method, build_method, sgd
from udalib.models import build_model
from udalib.models.checkpoint import CheckpointError
from udalib.train import FitOptions, atomic_save, fit, poly_lr, set_lr
from udalib.train.loop import CHECKPOINT


def _data(root):
    src = SegmentationList(root, "lists/source_train.txt", hflip=True, cache=True)
    tgt = SegmentationList(root, "lists/target_train.txt", hflip=True, cache=True)
    return src, tgt


def _method(seed=0, name="source_only"):
    torch.manual_seed(seed)
    model = "minideeplab_snr" if name.startswith("snr") else "minideeplab"
    return build_method(name, build_model(model, 19, width=8), "minicity")


def test_poly_lr_matches_the_formula_and_respects_group_multipliers():
    assert poly_lr(0.01, 0, 100) == pytest.approx(0.01)
    assert poly_lr(0.01, 50, 100) == pytest.approx(0.01 * 0.5**0.9)
    assert poly_lr(0.01, 99, 100) == pytest.approx(0.01 * 0.01**0.9)
    # DeepLab-v2's heads train at 10x: the poly factor applies to each group's own initial lr
    model = build_model("deeplabv2_multi", 19, blocks=(1, 1, 1, 1))
    method = Method(model, None)
    method.optimizers["model"] = sgd(model, 2.5e-4)
    first = set_lr(method, 30, 100)
    lrs = [g["lr"] for g in method.optimizers["model"].param_groups]
    assert first == pytest.approx(2.5e-4 * 0.7**0.9)
    assert lrs == pytest.approx([2.5e-4 * 0.7**0.9, 2.5e-3 * 0.7**0.9])


def test_fit_logs_the_poly_lr_and_reduces_the_loss(tiny_minicity, tmp_path):
    src, _ = _data(tiny_minicity)
    rows = fit(_method(), src, options=FitOptions(steps=40, batch_size=4, run_dir=tmp_path, log_every=10,
                                                  progress=False))
    assert [r["step"] for r in rows] == [10, 20, 30, 40]
    assert rows[1]["lr"] == pytest.approx(poly_lr(0.05, 19, 40))
    assert rows[-1]["seg"] < rows[0]["seg"]
    assert (tmp_path / "metrics.csv").read_text().splitlines()[0].startswith("step,lr,seg")


@pytest.mark.parametrize("method_name", ["source_only", "adaptsegnet_multi", "snr_maxsquare",
                                         "clustered_embeddings", "cbst", "dacs", "minent_mic"])
def test_resume_gives_the_same_losses_and_weights_as_an_uninterrupted_run(tiny_minicity, tmp_path, method_name):
    src, tgt = _data(tiny_minicity)
    straight = _method(0, method_name)
    rows_a = fit(straight, src, tgt, options=FitOptions(steps=8, batch_size=4, log_every=1, run_dir=tmp_path / "a",
                                                        progress=False))

    interrupted = _method(0, method_name)
    fit(interrupted, src, tgt, options=FitOptions(steps=8, batch_size=4, log_every=1, run_dir=tmp_path / "b",
                                                  stop_after=3, progress=False))
    resumed = _method(123, method_name)  # fresh weights: everything must come from the checkpoint
    rows_b = fit(resumed, src, tgt, options=FitOptions(steps=8, batch_size=4, log_every=1, run_dir=tmp_path / "b",
                                                       progress=False))

    assert [r["step"] for r in rows_b] == list(range(1, 9))
    assert [r["seg"] for r in rows_b] == [r["seg"] for r in rows_a]  # bit-identical
    losses = lambda rows: [{k: v for k, v in r.items() if k != "seconds"} for r in rows]  # noqa: E731
    assert losses(rows_b) == losses(rows_a)  # every player's losses (AdaptSegNet: discriminators and Adam state;
    # SNR: the causality classifiers)
    for (k, a), b in zip(straight.state_dict().items(), resumed.state_dict().values()):
        assert torch.equal(a, b), k


def test_resume_refuses_a_checkpoint_of_another_length(tiny_minicity, tmp_path):
    src, _ = _data(tiny_minicity)
    fit(_method(), src, options=FitOptions(steps=4, batch_size=4, run_dir=tmp_path, stop_after=2, progress=False))
    with pytest.raises(ValueError, match="run of 4 steps, not 6"):
        fit(_method(), src, options=FitOptions(steps=6, batch_size=4, run_dir=tmp_path, progress=False))


def test_a_crash_while_saving_leaves_the_previous_checkpoint_intact(tmp_path, monkeypatch):
    path = tmp_path / CHECKPOINT
    atomic_save({"step": torch.tensor(1)}, path)
    before = path.read_bytes()

    def crash(obj, f, *a, **k):
        f.write(b"half a checkpoint")
        raise KeyboardInterrupt

    monkeypatch.setattr(torch, "save", crash)
    with pytest.raises(KeyboardInterrupt):
        atomic_save({"step": torch.tensor(2)}, path)
    assert path.read_bytes() == before
    assert list(tmp_path.iterdir()) == [path]  # no temporary file left behind


def test_a_truncated_training_checkpoint_is_a_clear_error(tiny_minicity, tmp_path):
    src, _ = _data(tiny_minicity)
    fit(_method(), src, options=FitOptions(steps=4, batch_size=4, run_dir=tmp_path, stop_after=2, progress=False))
    data = (tmp_path / CHECKPOINT).read_bytes()
    (tmp_path / CHECKPOINT).write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointError, match="truncated or corrupt"):
        fit(_method(), src, options=FitOptions(steps=4, batch_size=4, run_dir=tmp_path, progress=False))


def test_the_target_label_never_reaches_the_method(tiny_minicity):
    root = tiny_minicity
    src = SegmentationList(root, "lists/source_train.txt")
    labelled_target = SegmentationList(root, "lists/target_val.txt")  # has labels on disk
    seen = []

    class Spy(Method):
        def __init__(self):
            model = build_model("minideeplab", 19, width=4)
            super().__init__(model, None)
            self.optimizers["model"] = sgd(model, 0.0)

        def step(self, src_batch, tgt_batch):
            seen.append(tgt_batch)
            return {"seg": 0.0}

    fit(Spy(), src, labelled_target, options=FitOptions(steps=2, batch_size=4, progress=False))
    assert len(seen) == 2 and all(not hasattr(b, "label") for b in seen)
    assert all(b.image.shape == (4, 3, 32, 64) for b in seen)


DDP_SCRIPT = textwrap.dedent("""
    import sys, torch, torch.distributed as dist
    from udalib.data import SegmentationList
    from udalib.methods import build_method
    from udalib.models import build_model
    from udalib.train import FitOptions, fit

    def build(name):
        torch.manual_seed(0)  # the same initial weights on every rank
        model = build_model("minideeplab", 19, width=8)
        return build_method(name, model, "minicity")

    def flat(method):
        return torch.cat([t.detach().reshape(-1).float() for t in method.state_dict().values()])

    def gather(x):
        out = [torch.zeros_like(x) for _ in range(dist.get_world_size())]
        dist.all_gather(out, x)
        return out

    src = SegmentationList(sys.argv[1], "lists/source_train.txt", hflip=True)
    tgt = SegmentationList(sys.argv[1], "lists/target_train.txt", hflip=True)
    for name in sys.argv[2:]:
        method = build(name)
        rows = fit(method, src, tgt, options=FitOptions(steps=4, batch_size=2, log_every=1, progress=False))
        weights = gather(flat(method))
        losses = gather(torch.tensor([[v for k, v in r.items() if k not in ("step", "lr", "seconds")] for r in rows]))
        if dist.get_rank() == 0:
            print(name, "WORLD", dist.get_world_size())
            print(name, "IDENTICAL", all(torch.equal(weights[0], w) for w in weights[1:]))
            print(name, "DIFFERENT_DATA", not torch.equal(losses[0], losses[1]))
            print(name, "MOVED", not torch.equal(weights[0], flat(build(name))))
            print(name, "LOSSES", sorted(rows[0]))
    dist.destroy_process_group()
""")
DDP_METHODS = ("source_only", "maxsquare", "adaptsegnet_multi")  # source only; a target loss; two players (SGD + Adam)


def test_ddp_with_two_gloo_processes_keeps_the_replicas_identical(tiny_minicity, tmp_path):
    script = tmp_path / "ddp_run.py"
    script.write_text(DDP_SCRIPT)
    torchrun = Path(sys.executable).with_name("torchrun")
    proc = subprocess.run([str(torchrun), "--standalone", "--nproc_per_node=2", str(script), str(tiny_minicity),
                           *DDP_METHODS], capture_output=True, text=True, timeout=240,
                          env={**__import__("os").environ, "OMP_NUM_THREADS": "1"})
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = proc.stdout
    for name in DDP_METHODS:
        assert f"{name} WORLD 2" in out
        assert f"{name} DIFFERENT_DATA True" in out  # each rank drew its own slice of the source and target data ...
        assert f"{name} IDENTICAL True" in out  # ... yet averaged gradients and synced BN buffers keep them equal
        assert f"{name} MOVED True" in out
    assert "maxsquare LOSSES ['lr', 'seconds', 'seg', 'step', 'target']" in out  # the target loss was trained on
