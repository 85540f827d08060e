"""Show library code inside a notebook, so the notebook teaches the code that actually runs."""

from __future__ import annotations

import inspect


def source_text(obj) -> str:
    """The source text of a function, class or method (what :func:`show_source` displays)."""
    return inspect.getsource(obj)


def show_source(obj) -> None:
    """Display the source of a function, class or method as syntax-highlighted code, and return None.

    It displays rather than returns, so a notebook cell with several calls shows every one of them (a returned
    object would show only the cell's last value). Outside an IPython kernel, ``display`` writes the object's text
    representation to standard output. :func:`source_text` returns the text itself.
    """
    from IPython.display import Code, display

    display(Code(source_text(obj), language="python"))
