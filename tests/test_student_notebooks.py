"""The "implement it" exercises of the method notebooks 03-08 and their student copies
(notebooks/release_student_version.py, `make student-notebooks`).

An exercise is a code cell tagged ``solution`` (the solution between nbgrader's ``### BEGIN SOLUTION`` and
``### END SOLUTION``) followed by a cell tagged ``check`` that compares it with the library. Both cells are
self-contained (their own imports), so they run here alone, in a few milliseconds, without the notebook's runs.
"""

from __future__ import annotations

import ast
import importlib.util
import sys
from pathlib import Path

import nbformat
import pytest

ROOT = Path(__file__).resolve().parents[1]
METHOD_NOTEBOOKS = sorted(p for p in (ROOT / "notebooks").glob("0[3-8]_*.ipynb"))
spec = importlib.util.spec_from_file_location("release_student_version",
                                              ROOT / "notebooks" / "release_student_version.py")
release = importlib.util.module_from_spec(spec)
sys.modules[spec.name] = release
spec.loader.exec_module(release)


def tagged(nb, tag: str) -> list[int]:
    return [i for i, c in enumerate(nb.cells) if tag in c.metadata.get("tags", [])]


def exercise_code(nb) -> list[str]:
    """The code of the solution and check cells, in notebook order."""
    return [nb.cells[i].source for i in sorted(tagged(nb, "solution") + tagged(nb, "check"))]


def run_cells(sources: list[str]) -> None:
    namespace: dict = {"__name__": "__exercise__"}
    for source in sources:
        exec(compile(source, "<exercise cell>", "exec"), namespace)


def test_there_are_six_method_notebooks():
    assert [p.name[:2] for p in METHOD_NOTEBOOKS] == ["03", "04", "05", "06", "07", "08"]


@pytest.mark.parametrize("notebook", METHOD_NOTEBOOKS, ids=lambda p: p.stem)
def test_every_solution_has_markers_and_a_check_after_it(notebook):
    nb = nbformat.read(notebook, as_version=4)
    solutions, checks = tagged(nb, "solution"), tagged(nb, "check")
    assert solutions, f"{notebook.name}: no code cell tagged 'solution'"
    for i in solutions:
        source = nb.cells[i].source
        assert release.BEGIN in source and release.END in source, f"{notebook.name} cell {i}: no solution markers"
        assert any(j > i for j in checks), f"{notebook.name} cell {i}: no cell tagged 'check' after the solution"


@pytest.mark.parametrize("notebook", METHOD_NOTEBOOKS, ids=lambda p: p.stem)
def test_the_stored_solutions_pass_their_checks(notebook):
    run_cells(exercise_code(nbformat.read(notebook, as_version=4)))


@pytest.mark.parametrize("notebook", METHOD_NOTEBOOKS, ids=lambda p: p.stem)
def test_student_version_has_no_solution_left_and_its_check_fails(notebook):
    nb = nbformat.read(notebook, as_version=4)
    student = release.student_notebook(nb)
    assert len(student.cells) == len(nb.cells)
    for i, (cell, orig) in enumerate(zip(student.cells, nb.cells)):
        if cell.cell_type != "code":
            continue
        ast.parse(cell.source)  # still Python
        assert release.BEGIN not in cell.source and release.END not in cell.source
        if i in tagged(nb, "solution"):
            blocks = [b.split(release.END)[0] for b in orig.source.split(release.BEGIN)[1:]]
            kept = [line for b in blocks for line in b.splitlines()
                    if line.strip() and line in cell.source.splitlines()]
            assert not kept, f"{notebook.name} cell {i}: solution lines left in the student version: {kept}"
            assert release.STUB in cell.source
    with pytest.raises(NotImplementedError):
        run_cells(exercise_code(student))


def test_clear_solutions_keeps_indentation_and_rejects_unclosed_blocks():
    source = "def f(x):\n    ### BEGIN SOLUTION\n    return x + 1\n    ### END SOLUTION\n\nprint(f)"
    assert release.clear_solutions(source) == "def f(x):\n    raise NotImplementedError()\n\nprint(f)"
    with pytest.raises(ValueError, match="END SOLUTION"):
        release.clear_solutions("### BEGIN SOLUTION\nx = 1\n")


def test_release_writes_student_copies(tmp_path):
    assert release.main(["--out", str(tmp_path), str(METHOD_NOTEBOOKS[0])]) == 0
    written = nbformat.read(tmp_path / METHOD_NOTEBOOKS[0].name, as_version=4)
    assert "### BEGIN SOLUTION" not in "".join(c.source for c in written.cells)
