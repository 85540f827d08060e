"""``Run.method()`` rebuilds a finished run's Method (its segmenter, discriminators, buffers and optimisers) from
the run folder's config.json and its last training checkpoint."""

from __future__ import annotations

import shutil

import pytest
import torch

from udalib.data.minicity import MiniCitySpec
from udalib.experiment import CHECKPOINT, Experiment, run
from udalib.methods import AdaptSegNet
from udalib.models.checkpoint import read_checkpoint

TINY = dict(steps=2, batch_size=4, model_args={"width": 8}, target="minicity:target",
            evaluate_on=("minicity:target/val",))


@pytest.fixture()
def home(isolated_home, tiny_minicity):
    shutil.copytree(tiny_minicity, isolated_home / "data" / MiniCitySpec().name)
    return isolated_home


def _equal(a: dict, b: dict) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_run_method_is_the_trained_adaptsegnet_with_its_discriminator(home):
    exp = Experiment(**TINY, method="adaptsegnet", bn_stats="target", method_args={"lr_d": 0.05})
    done = run(exp, home / "runs" / "asn", progress=False)
    saved = read_checkpoint(done.dir / CHECKPOINT)

    method = done.method()
    assert isinstance(method, AdaptSegNet) and not method.training
    assert method.cfg == exp.method_config and method.cfg.lr_d == 0.05 and method.bn_stats == "target"
    assert set(method.discriminators) == {"out"}
    assert _equal(method.state_dict(), saved["method"])
    model = {k[len("model."):]: v for k, v in saved["method"].items() if k.startswith("model.")}
    disc = {k[len("discriminators.out."):]: v for k, v in saved["method"].items()
            if k.startswith("discriminators.out.")}
    assert model and disc
    assert _equal(method.model.state_dict(), model)
    assert _equal(method.discriminators["out"].state_dict(), disc)
    # the discriminator trained: it is not the one a fresh build of the same config starts from
    torch.manual_seed(exp.seed)
    fresh = exp.build_method(done.model())
    assert not _equal(fresh.discriminators["out"].state_dict(), disc)
    for name, opt in method.optimizers.items():  # optimiser states too (Adam's moments of the discriminator)
        assert opt.state_dict()["state"].keys() == saved["optimizers"][name]["state"].keys()
        for k, s in opt.state_dict()["state"].items():
            assert all(torch.equal(v, saved["optimizers"][name]["state"][k][n]) for n, v in s.items())


def test_run_method_without_a_checkpoint_is_one_line(home):
    done = run(Experiment(**TINY, method="minent"), home / "runs" / "minent", progress=False)
    (done.dir / CHECKPOINT).unlink()
    with pytest.raises(FileNotFoundError, match=f"^run minent has no {CHECKPOINT} .*Run.model\\(\\) loads its final"):
        done.method()
