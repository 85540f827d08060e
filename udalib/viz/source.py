"""Show library code inside a notebook, so the notebook teaches the code that actually runs."""

from __future__ import annotations

import inspect


def show_source(obj):
    """The source of a function, class or method as a syntax-highlighted IPython ``Code`` object."""
    from IPython.display import Code

    return Code(inspect.getsource(obj), language="python")
