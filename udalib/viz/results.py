"""The results tables under their older address: every name here is :mod:`udalib.results`'s, the results API (the
run store and the benchmark CSVs as tables, grouped over seeds by :func:`udalib.results.over_seeds`). The figures
of those tables are :mod:`udalib.viz.plots`'s."""

from ..results import *  # noqa: F403
from ..results import __all__  # noqa: F401
