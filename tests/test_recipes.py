"""Every full-scale recipe loads into an Experiment whose method, parameters and model exist."""

from __future__ import annotations

import pytest
import torch

from udalib.methods import method_config
from udalib.models import MODELS, build_model
from udalib.recipes import available, load_recipe


@pytest.mark.parametrize("name", available())
def test_recipe_resolves_to_a_method_config_and_a_model(name):
    exp = load_recipe(name, data_root="/data/prepared")
    cfg = method_config(exp.method, exp.preset, **exp.method_args)  # unknown parameters raise
    assert exp.model in MODELS and exp.device == "cuda"
    for path in (exp.init, exp.pretrained):
        assert path is None or path.startswith("/data/prepared/")
    with torch.device("meta"):
        build_model(exp.model, exp.num_classes, **exp.model_args)
    assert cfg.lr == pytest.approx(2.5e-4)  # every seed trains DeepLab-v2 at 2.5e-4 (heads 10x)


def test_snr_recipes_match_the_seed_readme():
    ms = load_recipe("gta5_snr_maxsquare")
    assert (ms.method, ms.model, ms.method_args["lambda_target"]) == ("snr_maxsquare", "deeplabv2_multi_snr", 0.1)
    assert ms.steps == 5 * 2 * 2976  # --round_num 5, two epochs of the 2975 (+1) Cityscapes train images per round
    dg = load_recipe("gta5_snr")
    assert dg.target is None and dg.steps == 80000 and dg.poly_steps == 200000


def test_unknown_recipe_lists_the_available_ones():
    with pytest.raises(ValueError, match="available recipes: .*gta5_snr"):
        load_recipe("gta5_snrr")
