"""The training progress bar is named after the run (its Experiment's label), not after the method's class."""

from __future__ import annotations

import torch

from udalib.data import SegmentationList
from udalib.methods import build_method
from udalib.models import build_model
from udalib.train import FitOptions, fit


def _bars(monkeypatch):
    import tqdm.std

    made = []

    class Recorder:
        def __init__(self, *args, **kwargs):
            made.append(kwargs.get("desc"))

        def update(self, *_):
            pass

        def set_postfix(self, *_, **__):
            pass

        def close(self):
            pass

    monkeypatch.setattr(tqdm.std, "tqdm", Recorder)
    return made


def test_the_progress_bar_carries_the_run_label_else_the_method_class(tiny_minicity, monkeypatch):
    made = _bars(monkeypatch)
    src = SegmentationList(tiny_minicity, "lists/source_train.txt")
    torch.manual_seed(0)
    method = build_method("source_only", build_model("minideeplab", 19, width=4), "minicity")
    fit(method, src, options=FitOptions(steps=1, batch_size=2))
    method.progress_label = "target batches, lambda 0 (control)"
    fit(method, src, options=FitOptions(steps=1, batch_size=2))
    assert made == [type(method).__name__, "target batches, lambda 0 (control)"]
