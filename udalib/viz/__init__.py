"""Figures (``viz.plots``), code display (``viz.source``) and, imported lazily, widgets."""

from . import plots
from .source import show_source

__all__ = ["plots", "show_source"]
