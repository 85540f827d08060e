"""Figures (``viz.plots``), the results tables (``viz.results``, :mod:`udalib.results` under a second name),
code display (``viz.source``) and, imported on request (``from udalib.viz import widgets``, needs ipywidgets), the
comparison widgets."""

from . import plots, results
from .source import show_source, source_text

__all__ = ["plots", "results", "show_source", "source_text"]
