"""The results tables under a second name: ``udalib.viz.results`` *is* :mod:`udalib.results`, the results API
(the run store and the benchmark CSVs as tables, grouped over seeds by :func:`udalib.results.over_seeds`). The
figures of those tables are :mod:`udalib.viz.plots`'s."""

import sys

from .. import results

sys.modules[__name__] = results  # one module under both names: what is set on one is seen through the other
