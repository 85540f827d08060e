"""Write student copies of the notebooks: every solution block replaced by ``raise NotImplementedError()``.

A solution block is the lines between ``### BEGIN SOLUTION`` and ``### END SOLUTION`` in a code cell (nbgrader's
markers; its ``ClearSolutions`` preprocessor does the same). The markers go too, the replacement keeps the block's
indentation, outputs are cleared. Usage (``make student-notebooks``)::

    python notebooks/release_student_version.py [--out runs/student_notebooks] [notebooks/03_*.ipynb ...]
"""

from __future__ import annotations

import argparse
import re
import sys
from pathlib import Path

import nbformat

BEGIN, END = "### BEGIN SOLUTION", "### END SOLUTION"
STUB = "raise NotImplementedError()"
HERE = Path(__file__).resolve().parent


def clear_solutions(source: str) -> str:
    """``source`` with each solution block (markers included) replaced by ``raise NotImplementedError()``, indented."""
    out, inside = [], False
    for line in source.split("\n"):
        if line.strip() == BEGIN:
            if inside:
                raise ValueError(f"{BEGIN!r} inside a solution block: close the previous block with {END!r}")
            inside = True
            out.append(re.match(r"\s*", line).group() + STUB)
        elif line.strip() == END:
            if not inside:
                raise ValueError(f"{END!r} without a {BEGIN!r} before it")
            inside = False
        elif not inside:
            out.append(line)
    if inside:
        raise ValueError(f"a solution block has no {END!r}: add it after the solution")
    return "\n".join(out)


def student_notebook(nb: nbformat.NotebookNode) -> nbformat.NotebookNode:
    """A copy of ``nb`` with its solutions cleared and its outputs removed."""
    nb = nbformat.from_dict(nb)
    for cell in nb.cells:
        if cell.cell_type == "code":
            cell.source = clear_solutions(cell.source)
            cell.outputs, cell.execution_count = [], None
    return nb


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("notebooks", nargs="*", type=Path, help="default: notebooks/NN_*.ipynb")
    parser.add_argument("--out", type=Path, default=HERE.parent / "runs" / "student_notebooks",
                        help="folder for the student copies (default: runs/student_notebooks)")
    args = parser.parse_args(argv)
    paths = args.notebooks or sorted(HERE.glob("[0-9][0-9]_*.ipynb"))
    args.out.mkdir(parents=True, exist_ok=True)
    for path in paths:
        target = args.out / path.name
        if target.resolve() == path.resolve():
            parser.error(f"--out {args.out} holds the notebooks themselves: choose another folder")
        nbformat.write(student_notebook(nbformat.read(path, as_version=4)), target)
        print(target)
    return 0


if __name__ == "__main__":
    sys.exit(main())
