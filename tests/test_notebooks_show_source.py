"""Each method notebook displays the library code that implements the terms of its equations.

The names below are dotted paths from the ``udalib`` package; a notebook passes when the argument of a
``viz.show_source(...)`` call in one of its code cells, evaluated with the notebook's imports, is that object.
"""

from __future__ import annotations

import ast
import importlib
import json
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

REQUIRED = {
    "02_when_can_adaptation_work": [
        "udalib.eval.domain_distance.pad_from_error", "udalib.eval.domain_distance.domain_classifier_error",
        "udalib.eval.domain_distance.domain_terms"],
    "03_entropy_minimization": [
        "udalib.losses.seg_loss", "udalib.losses.entropy_loss", "udalib.methods.MinEnt.step"],
    "04_maximum_squares": [
        "udalib.losses.maxsquare_loss", "udalib.losses.image_wise_class_weights", "udalib.losses.iw_maxsquare_loss",
        "udalib.losses.self_produced_guidance", "udalib.methods.MaxSquare.step"],
    "05_adversarial_output_space": [
        "udalib.models.discriminator.FCDiscriminator", "udalib.losses.gan_loss", "udalib.losses.discriminator_loss",
        "udalib.losses.adversarial_loss", "udalib.methods.AdaptSegNet.step",
        "udalib.methods.AdaptSegNet.update_segmenter", "udalib.methods.AdaptSegNet.update_discriminators"],
    "06_style_normalization_restitution": [
        "udalib.models.snr.ChannelGate", "udalib.models.snr.restitution", "udalib.losses.dual_causality_loss"],
    "07_clustered_orthogonal_embeddings": [
        "udalib.losses.clustering.class_centroids", "udalib.losses.clustering.clustering_loss",
        "udalib.losses.clustering.orthogonality_loss", "udalib.losses.clustering.sparsity_loss",
        "udalib.methods.clustering.ClusteredEmbeddings.embedding_losses",
        "udalib.methods.clustering.ClusteredEmbeddings.step"],
    "08_self_training": [
        "udalib.losses.self_training.class_balanced_thresholds", "udalib.losses.self_training.global_threshold",
        "udalib.losses.self_training.select_pseudo_labels", "udalib.methods.self_training.SelfTraining.portion",
        "udalib.losses.self_training.fuse_patch_predictions",
        "udalib.methods.self_training.SelfTraining.target_posterior",
        "udalib.methods.self_training.SelfTraining.on_round_start", "udalib.methods.self_training.SelfTraining.step"],
}


def resolve(dotted: str):
    """The object at a dotted path: the longest importable module prefix, then attributes."""
    parts = dotted.split(".")
    for i in range(len(parts), 0, -1):
        try:
            obj = importlib.import_module(".".join(parts[:i]))
        except ImportError:
            continue
        for name in parts[i:]:
            obj = getattr(obj, name)
        return obj
    raise ImportError(dotted)


def shown_objects(path: Path) -> list:
    """The objects passed to ``viz.show_source(...)`` in the notebook's code cells, evaluated in a namespace that
    holds the notebook's own import statements (so aliases such as ``self_training as st`` resolve)."""
    nb = json.loads(path.read_text())
    trees = [ast.parse("".join(cell["source"])) for cell in nb["cells"] if cell["cell_type"] == "code"]
    namespace: dict = {}
    for tree in trees:
        for node in tree.body:
            if isinstance(node, (ast.Import, ast.ImportFrom)):
                exec(compile(ast.Module([node], []), path.name, "exec"), namespace)
    shown = []
    for tree in trees:
        for node in ast.walk(tree):
            if (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute)
                    and node.func.attr == "show_source" and node.args):
                shown.append(eval(compile(ast.Expression(node.args[0]), path.name, "eval"), namespace))
    return shown


@pytest.mark.parametrize("name", sorted(REQUIRED))
def test_notebook_shows_the_source_of_its_equation_terms(name):
    path = ROOT / "notebooks" / f"{name}.ipynb"
    shown = shown_objects(path)
    for dotted in REQUIRED[name]:
        obj = resolve(dotted)
        assert callable(obj), f"{dotted} is not a function, method or class"
        assert any(o is obj for o in shown), f"{path.name} has no viz.show_source call of {dotted}"


def test_every_notebook_source_is_checked():
    sources = {p.stem[:2] for p in (ROOT / "notebooks" / "src").glob("0[2-8]_*.py")}
    assert {name[:2] for name in REQUIRED} == sources
