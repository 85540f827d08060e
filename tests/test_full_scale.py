"""The full-scale options of the loop, at tiny size on CPU: bf16 autocast, channels_last, continue-training.

What needs a GPU (cudnn.benchmark, bf16 speed and memory, the MiniCity mIoU under bf16) is measured by the scripts
in ``benchmarks/`` (see ``benchmarks/RESULTS.md``), not here.
"""

from __future__ import annotations

import shutil
from dataclasses import replace

import pytest
import torch

from udalib.data import SegmentationList
from udalib.data.minicity import MiniCitySpec
from udalib.experiment import Experiment, run
from udalib.methods import Method, build_method, sgd
from udalib.models import build_model
from udalib.models.checkpoint import load_state_dict_file
from udalib.train import FitOptions, fit


def _data(root):
    return (SegmentationList(root, "lists/source_train.txt", hflip=True, cache=True),
            SegmentationList(root, "lists/target_train.txt", hflip=True, cache=True))


class Spy(Method):
    """Records what the loop hands to ``step``: autocast state, output dtype, memory format of images and weights."""

    def __init__(self):
        model = build_model("minideeplab", 19, width=4)
        super().__init__(model, None)
        self.optimizers["model"] = sgd(model, 0.0)
        self.seen = []

    def step(self, src, tgt):
        out = self.model(src.image)["out"]
        conv = next(m for m in self.model.modules() if isinstance(m, torch.nn.Conv2d))
        self.seen.append({"autocast": torch.is_autocast_enabled("cpu"), "dtype": out.dtype,
                          "image_cl": src.image.is_contiguous(memory_format=torch.channels_last),
                          "target_cl": tgt.image.is_contiguous(memory_format=torch.channels_last),
                          "weight_cl": conv.weight.is_contiguous(memory_format=torch.channels_last)})
        return {"seg": 0.0}


@pytest.mark.parametrize("amp", [False, True])
def test_amp_runs_the_step_under_bf16_autocast_and_only_when_asked(tiny_minicity, amp):
    spy = Spy()
    fit(spy, *_data(tiny_minicity), options=FitOptions(steps=1, batch_size=2, progress=False, amp=amp))
    assert spy.seen[0]["autocast"] is amp
    assert spy.seen[0]["dtype"] == (torch.bfloat16 if amp else torch.float32)
    assert not torch.is_autocast_enabled("cpu")  # the context ends with the step


def test_default_on_cpu_is_plain_fp32_contiguous(tiny_minicity):
    spy = Spy()
    fit(spy, *_data(tiny_minicity), options=FitOptions(steps=1, batch_size=2, progress=False))
    assert spy.seen[0] == {"autocast": False, "dtype": torch.float32, "image_cl": False, "target_cl": False,
                           "weight_cl": False}


def test_channels_last_reaches_the_weights_and_both_batches(tiny_minicity):
    spy = Spy()
    fit(spy, *_data(tiny_minicity), options=FitOptions(steps=1, batch_size=2, progress=False, channels_last=True))
    assert spy.seen[0]["image_cl"] and spy.seen[0]["target_cl"] and spy.seen[0]["weight_cl"]


def _maxsquare_losses(root, **options) -> list[dict]:
    torch.manual_seed(0)
    method = build_method("maxsquare", build_model("minideeplab", 19, width=8), "minicity")
    rows = fit(method, *_data(root), options=FitOptions(steps=3, batch_size=4, log_every=1, progress=False, **options))
    return [{k: v for k, v in r.items() if k in ("seg", "target")} for r in rows]


def test_a_bf16_maxsquare_step_gives_the_fp32_losses_to_bf16_precision(tiny_minicity):
    fp32 = _maxsquare_losses(tiny_minicity)
    bf16 = _maxsquare_losses(tiny_minicity, amp=True)
    for a, b in zip(fp32, bf16):
        for key in ("seg", "target"):
            assert b[key] == pytest.approx(a[key], rel=1e-2), (key, a, b)  # bf16: 8 bits of mantissa
    assert bf16 != fp32  # bf16 really ran (fp32 would give the same numbers bit for bit)


def test_channels_last_gives_the_contiguous_losses(tiny_minicity):
    contiguous = _maxsquare_losses(tiny_minicity)
    cl = _maxsquare_losses(tiny_minicity, channels_last=True)
    for a, b in zip(contiguous, cl):
        assert b == pytest.approx(a, rel=1e-4)


@pytest.fixture()
def home(isolated_home, tiny_minicity):
    """UDALIB_HOME whose default MiniCity folder is the tiny fixture."""
    shutil.copytree(tiny_minicity, isolated_home / "data" / MiniCitySpec().name)
    return isolated_home


def test_continue_training_starts_from_the_given_weights(home):
    first = run(Experiment(steps=3, batch_size=4, model_args={"width": 8}, method_args={"lr": 0.02}),
                progress=False)
    trained = load_state_dict_file(first.dir / "model.pt")

    # init = a run folder, no training step: the new run's weights are the first run's, bit for bit
    again = run(replace(first.config, init=str(first.dir), steps=0), progress=False)
    for key, value in load_state_dict_file(again.dir / "model.pt").items():
        assert torch.equal(value, trained[key]), key
    assert again.miou("minicity:target/val") == first.miou("minicity:target/val")

    # init = a weights file, then training goes on from there (the seeds' --continue_training, at a lower lr)
    cont = run(replace(first.config, init=str(first.dir / "model.pt"), steps=2, method_args={"lr": 1e-3}),
               progress=False)
    fresh = run(replace(first.config, steps=2, method_args={"lr": 1e-3}), progress=False)
    seg = lambda r: float(r.history()["seg"].iloc[-1])  # noqa: E731
    assert seg(cont) < seg(fresh) - 0.1  # it goes on from where the first run ended, not from scratch


def test_an_init_that_does_not_exist_says_what_to_do(home):
    with pytest.raises(FileNotFoundError, match="train the source model first"):
        run(Experiment(steps=1, batch_size=4, init="no_such_run"), progress=False)
    with pytest.raises(FileNotFoundError, match="put the authors' released weights there"):
        run(Experiment(steps=1, batch_size=4, init="/data/checkpoints/GTA5_source.pth"), progress=False)


def test_run_help_states_the_torchrun_command_with_its_effective_batch_and_lr(capsys):
    from udalib.cli import main

    with pytest.raises(SystemExit) as info:
        main(["run", "--help"])
    assert info.value.code == 0
    text = capsys.readouterr().out
    command = "torchrun --standalone --nproc_per_node=N -m udalib run RECIPE --data-root /data/prepared --device cuda"
    assert command in text
    assert "effective batch is N x batch_size" in text and "learning rate, not rescaled" in text


def test_run_with_a_misspelt_recipe_field_is_one_error_line(isolated_home, capsys):
    from udalib.cli import main

    assert main(["run", "gta5_maxsquare", "--set", "stepz=10", "--quiet"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: --set stepz=...: method 'maxsquare' has no parameter 'stepz' and Experiment has "
                          "no field 'stepz'; parameters: ")
    assert "lambda_target" in err and "steps" in err
    assert err.count("\n") == 1 and not (isolated_home / "runs").exists()
