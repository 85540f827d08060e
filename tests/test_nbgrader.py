"""The exercises of the notebooks as nbgrader sees them (`make student-notebooks`).

An exercise is a code cell tagged ``solution`` (the solution between ``### BEGIN SOLUTION`` and ``### END
SOLUTION``) followed by a cell tagged ``check`` that tests it. Both carry nbgrader's cell metadata (a solution cell:
``solution: true``; a check cell: ``grade: true``, ``locked: true`` and its points), written in the percent-format
source's cell header (`notebooks/jupytext.toml` keeps it). Both cells are self-contained (their own imports), so
they run here alone, in milliseconds, without the notebook's runs; nbgrader's own ``generate_assignment`` and
``autograde`` run once, on notebook 03's first exercise.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import nbformat
import pytest

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOKS = sorted((ROOT / "notebooks").glob("[0-9][0-9]_*.ipynb"))
BEGIN, END = "### BEGIN SOLUTION", "### END SOLUTION"
STUB = "raise NotImplementedError()"


def tagged(nb, tag: str) -> list[int]:
    return [i for i, c in enumerate(nb.cells) if tag in c.metadata.get("tags", [])]


def grading(cell) -> dict:
    return cell.metadata.get("nbgrader", {})


def exercise_code(nb) -> list[str]:
    """The code of the solution and check cells, in notebook order."""
    return [nb.cells[i].source for i in sorted(tagged(nb, "solution") + tagged(nb, "check"))]


def run_cells(sources: list[str]) -> None:
    namespace: dict = {"__name__": "__exercise__"}
    for source in sources:
        exec(compile(source, "<exercise cell>", "exec"), namespace)


def read(path: Path):
    return nbformat.read(path, as_version=4)


def with_exercises() -> list[Path]:
    return [p for p in NOTEBOOKS if tagged(read(p), "solution")]


def test_the_method_notebooks_have_exercises():
    assert {p.name[:2] for p in with_exercises()} >= {"03", "04", "05", "06", "07", "08", "09"}


@pytest.mark.parametrize("notebook", NOTEBOOKS, ids=lambda p: p.stem)
def test_every_exercise_cell_carries_nbgrader_metadata(notebook):
    nb, number = read(notebook), notebook.name[:2]
    ids = []
    for i, cell in enumerate(nb.cells):
        meta, tags = grading(cell), cell.metadata.get("tags", [])
        where = f"{notebook.name} cell {i}"
        if BEGIN in cell.source or "solution" in tags:
            assert "solution" in tags and cell.cell_type == "code", f"{where}: a solution block outside a solution cell"
            assert meta.get("solution") is True and meta.get("grade") is False and meta.get("locked") is False, (
                f"{where}: a solution cell needs nbgrader metadata solution true, grade false, locked false")
            assert BEGIN in cell.source and END in cell.source, f"{where}: no ### BEGIN / END SOLUTION markers"
            assert any(j > i for j in tagged(nb, "check")), f"{where}: no cell tagged 'check' after the solution"
        if "check" in tags:
            assert meta.get("grade") is True and meta.get("locked") is True and meta.get("solution") is False, (
                f"{where}: a check cell needs nbgrader metadata grade true, locked true, solution false")
            assert meta.get("points", 0) > 0, f"{where}: a check cell needs points"
        if meta:
            assert meta.get("schema_version") == 3, f"{where}: nbgrader schema_version 3"
            assert str(meta.get("grade_id", "")).startswith(f"{number}-ex"), (
                f"{where}: grade_id {meta.get('grade_id')!r} should read {number}-exK-solution or {number}-exK-check")
            ids.append(meta["grade_id"])
        elif cell.cell_type == "code":
            assert "solution" not in tags and "check" not in tags, f"{where}: tagged but without nbgrader metadata"
    assert len(ids) == len(set(ids)), f"{notebook.name}: grade_ids repeat: {sorted(ids)}"


def test_grade_ids_are_unique_across_the_course():
    ids = [grading(c)["grade_id"] for p in NOTEBOOKS for c in read(p).cells if grading(c)]
    assert len(ids) == len(set(ids)), sorted(i for i in ids if ids.count(i) > 1)


@pytest.mark.parametrize("notebook", with_exercises(), ids=lambda p: p.stem)
def test_the_stored_solutions_pass_their_checks(notebook):
    run_cells(exercise_code(read(notebook)))


@pytest.mark.parametrize("notebook", with_exercises(), ids=lambda p: p.stem)
def test_the_student_version_has_no_solution_left_and_its_checks_fail(notebook):
    """nbgrader's own ClearSolutions, the step of generate_assignment that writes the student's cells."""
    from nbgrader.preprocessors import ClearSolutions

    nb = read(notebook)
    student, _ = ClearSolutions().preprocess(nbformat.from_dict(nb), {"language": "python"})
    for i in tagged(nb, "solution"):
        orig, cell = nb.cells[i].source, student.cells[i].source
        assert BEGIN not in cell and END not in cell and STUB in cell, f"{notebook.name} cell {i}"
        blocks = [b.split(END)[0] for b in orig.split(BEGIN)[1:]]
        kept = [line for b in blocks for line in b.splitlines() if line.strip() and line in cell.splitlines()]
        assert not kept, f"{notebook.name} cell {i}: solution lines left in the student version: {kept}"
    with pytest.raises(NotImplementedError):
        run_cells(exercise_code(student))


# ------------------------------------------------------------------- nbgrader itself, on one exercise
def nbgrader(course: Path, *args: str) -> None:
    bin_dir = Path(sys.executable).parent  # nbgrader calls `alembic`, which lives beside it
    exe = shutil.which("nbgrader", path=str(bin_dir)) or shutil.which("nbgrader")
    env = os.environ | {"PATH": f"{bin_dir}{os.pathsep}{os.environ.get('PATH', '')}"}
    done = subprocess.run([exe, *args, f"--CourseDirectory.root={course}", "--log-level=ERROR"], cwd=course, env=env,
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, f"nbgrader {' '.join(args)}:\n{done.stdout}\n{done.stderr}"


def exercise_notebook(path: Path, number: int):
    """The cells of one exercise of a notebook (its statement, solution and check) as a notebook of their own."""
    nb = read(path)
    prefix = f"{path.name[:2]}-ex{number}-"
    cells = [i for i, c in enumerate(nb.cells) if str(grading(c).get("grade_id", "")).startswith(prefix)]
    statement = [i for i in tagged(nb, "exercise") if i < cells[0]][-1:]
    out = nbformat.v4.new_notebook(metadata=nb.metadata)
    out.cells = [nb.cells[i] for i in statement + cells]
    return out


def test_nbgrader_gives_full_points_to_a_right_answer_and_none_to_a_wrong_one(tmp_path):
    pytest.importorskip("nbgrader")
    from nbgrader.api import Gradebook

    course, name = tmp_path / "course", "entropy"
    source = exercise_notebook(ROOT / "notebooks" / "03_entropy_minimization.ipynb", 1)
    solution = [c for c in source.cells if grading(c).get("solution")]
    assert len(solution) == 1 and any(grading(c).get("grade") for c in source.cells)
    (course / "source" / name).mkdir(parents=True)
    nbformat.write(source, course / "source" / name / f"{name}.ipynb")
    nbgrader(course, "generate_assignment", name, "--create")

    released = read(course / "release" / name / f"{name}.ipynb")
    i = next(k for k, c in enumerate(released.cells) if grading(c).get("solution"))
    assert STUB in released.cells[i].source and BEGIN not in released.cells[i].source
    answers = {"right": solution[0].source,  # the solution as stored
               "wrong": released.cells[i].source.replace(STUB, "return torch.zeros(())")}
    for student, answer in answers.items():
        submitted = nbformat.from_dict(released)
        submitted.cells[i].source = answer
        folder = course / "submitted" / student / name
        folder.mkdir(parents=True)
        nbformat.write(submitted, folder / f"{name}.ipynb")
    nbgrader(course, "autograde", name, "--create")

    with Gradebook(f"sqlite:///{course / 'gradebook.db'}") as gradebook:
        scores = {s: (gradebook.find_submission(name, s).score, gradebook.find_submission(name, s).max_score)
                  for s in answers}
    assert scores["right"][1] > 0 and scores["right"][0] == scores["right"][1], scores
    assert scores["wrong"][0] == 0, scores
