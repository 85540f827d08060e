"""Figures (``viz.plots``) of the results tables (:mod:`udalib.results`), code display (``viz.source``) and,
imported on request (``from udalib.viz import widgets``, needs ipywidgets), the comparison widgets."""

from . import plots
from .source import show_source, source_text

__all__ = ["plots", "show_source", "source_text"]
