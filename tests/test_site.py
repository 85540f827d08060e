"""The course site's staging (book/stage.py, ``make site``) on small hand-built notebooks: exercises become
``{exercise}`` boxes, each solution cell sits between the gated ``solution-start`` / ``solution-end`` directives
and only there, the student edition holds no solution code, widget outputs are removed. The last test builds a
two-page book with Jupyter Book and reads the HTML.
"""

from __future__ import annotations

import importlib.util
import re
import sys
from pathlib import Path

import nbformat
import pytest

ROOT = Path(__file__).resolve().parents[1]
spec = importlib.util.spec_from_file_location("book_stage", ROOT / "book" / "stage.py")
stage = importlib.util.module_from_spec(spec)
sys.modules[spec.name] = stage
spec.loader.exec_module(stage)

SOLUTION_CODE = "def my_square(x):\n    ### BEGIN SOLUTION\n    return x * x  # SOLUTION-LINE\n    ### END SOLUTION"
ANSWER_CODE = "show_source(square)  # ANSWER-SOURCE"
WIDGET = "application/vnd.jupyter.widget-view+json"


def _cell(kind: str, source: str, tags=(), nbgrader=None, outputs=()):
    cell = nbformat.v4.new_code_cell(source) if kind == "code" else nbformat.v4.new_markdown_cell(source)
    if tags:
        cell.metadata["tags"] = list(tags)
    if nbgrader is not None:
        cell.metadata["nbgrader"] = nbgrader
    if kind == "code":
        cell.outputs = [nbformat.from_dict(o) for o in outputs]
    return cell


def _solution_meta(k: int) -> dict:
    return {"grade": False, "grade_id": f"99-ex{k}-solution", "locked": False, "schema_version": 3,
            "solution": True, "task": False}


def course_notebook() -> nbformat.NotebookNode:
    """A method notebook in miniature: prose with a formula, an exercise with a two-cell solution (one tagged,
    one with nbgrader metadata only), its check, an answer-source cell, a widget, a second exercise."""
    stream = {"output_type": "stream", "name": "stdout", "text": "checked\n"}
    widget = {"output_type": "display_data", "metadata": {},
              "data": {WIDGET: {"model_id": "abc", "version_major": 2, "version_minor": 0},
                       "text/plain": "Comparer(children=(...))"}}
    figure = {"output_type": "display_data", "metadata": {}, "data": {"text/plain": "<Figure>"}}
    markdown = {"output_type": "display_data", "metadata": {},
                "data": {"text/markdown": "The gain is $\\Delta = 2$.", "text/plain": "<Markdown>"}}
    nb = nbformat.v4.new_notebook()
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    nb.metadata["language_info"] = {"name": "python", "pygments_lexer": "ipython3"}
    nb.metadata["widgets"] = {"application/vnd.jupyter.widget-state+json": {"state": {}}}
    nb.cells = [
        _cell("markdown", "# 99 A method\n\nThe loss is $\\ell(x) = x^2$."),
        _cell("code", "display(Markdown(gain))", outputs=[markdown]),
        _cell("markdown", "## Exercise 1: implement the square\n\nWrite `my_square(x)`:\n\n```python\n"
                          "my_square(3) == 9\n```", tags=["exercise"]),
        _cell("code", "import math", tags=["solution"], nbgrader=_solution_meta(1)),
        _cell("code", SOLUTION_CODE, nbgrader=_solution_meta(1)),
        _cell("code", "assert my_square(3) == 9\nprint('checked')", tags=["check"],
              nbgrader={"grade": True, "grade_id": "99-ex1-check", "locked": True, "points": 1,
                        "schema_version": 3, "solution": False, "task": False}, outputs=[stream]),
        _cell("code", ANSWER_CODE, tags=["answer-source"]),
        _cell("code", "compare()", outputs=[widget, figure]),
        _cell("markdown", "Predict, then run: does the square grow?", tags=["exercise"]),
        _cell("code", "print(my_square(4))", outputs=[{**stream, "text": "16\n"}]),
    ]
    return nb


def _sources(nb) -> list[str]:
    return [c.source for c in nb.cells]


def test_each_solution_cell_sits_between_the_solution_markers_and_only_there():
    nb = stage.transform(course_notebook(), "99_a_method.ipynb")
    sources = _sources(nb)
    starts = [i for i, s in enumerate(sources) if "{solution-start}" in s]
    ends = [i for i, s in enumerate(sources) if "{solution-end}" in s]
    assert len(starts) == len(ends) == 1
    start, end = starts[0], ends[0]
    assert sources[start] == "```{solution-start} 99-a-method-exercise-1\n:class: dropdown\n```"
    inside = sources[start + 1:end]
    assert inside == ["import math", SOLUTION_CODE]  # both solution cells, in order, nothing else
    assert sum(SOLUTION_CODE in s for s in sources) == 1
    assert all(stage.is_solution(nb.cells[i]) == (start < i < end) for i in range(len(nb.cells)))
    assert "{exercise}" in sources[start - 1] and ":label: 99-a-method-exercise-1" in sources[start - 1]
    # the check cell follows the solution, outside it, with its output
    assert sources[end + 1].startswith("assert my_square(3)") and nb.cells[end + 1].outputs[0].text == "checked\n"
    assert ANSWER_CODE in sources


def test_exercise_box_keeps_the_heading_above_it():
    nb = stage.transform(course_notebook(), "99_a_method.ipynb")
    sources = _sources(nb)
    i = sources.index("## Exercise 1: implement the square")
    box = sources[i + 1]
    # the body holds a ``` fence, so the directive's fence is longer
    assert box.startswith("````{exercise}\n:label: 99-a-method-exercise-1\n:nonumber:\n\nWrite `my_square(x)`:")
    assert box.endswith("my_square(3) == 9\n```\n````")
    second = next(s for s in sources if "Predict, then run" in s)
    assert second.startswith("```{exercise}\n:label: 99-a-method-exercise-2\n")
    assert len({c.id for c in nb.cells}) == len(nb.cells)  # cell ids stay unique
    nbformat.validate(nb)


def test_student_edition_has_no_solution_code():
    nb = stage.transform(course_notebook(), "99_a_method.ipynb", student=True)
    text = nbformat.writes(nb)
    for forbidden in ("SOLUTION-LINE", "BEGIN SOLUTION", "import math", "solution-start", "solution-end",
                      "ANSWER-SOURCE"):
        assert forbidden not in text, forbidden
    assert not any(stage.is_solution(c) for c in nb.cells)
    sources = _sources(nb)
    assert any(s.startswith("assert my_square(3)") for s in sources)  # the check stays
    assert sum("{exercise}" in s for s in sources) == 2


def test_widget_outputs_and_state_are_removed():
    nb = stage.transform(course_notebook(), "99_a_method.ipynb")
    assert "widgets" not in nb.metadata
    cell = next(c for c in nb.cells if c.source == "compare()")
    assert [o.data for o in cell.outputs] == [{"text/plain": "<Figure>"}]  # the widget's text fallback goes too
    assert WIDGET not in nbformat.writes(nb)


def test_a_solution_without_an_exercise_is_an_error():
    nb = course_notebook()
    nb.cells[2].metadata["tags"] = []
    with pytest.raises(ValueError, match="follows no markdown cell tagged 'exercise'"):
        stage.transform(nb, "99_a_method.ipynb")


def test_student_edition_refuses_solution_markers_in_an_unmarked_cell():
    nb = course_notebook()
    nb.cells[4].metadata.pop("nbgrader")
    stage.transform(nb, "99_a_method.ipynb")  # the instructor edition shows it as it is
    with pytest.raises(ValueError, match="no nbgrader metadata"):
        stage.transform(nb, "99_a_method.ipynb", student=True)


def test_toc_lists_the_notebooks_in_order_then_the_glossary():
    toc = stage.toc(["00_a.ipynb", "03_b.ipynb"], glossary=True)
    assert toc["root"] == "README"
    assert [c["file"] for c in toc["parts"][0]["chapters"]] == ["00_a", "03_b"]
    assert toc["parts"][1]["chapters"] == [{"file": "glossary"}]


def _executed(nb: nbformat.NotebookNode) -> nbformat.NotebookNode:
    nb.metadata["papermill"] = {"exception": None}
    return nb


def test_stage_refuses_a_notebook_without_its_executed_copy(tmp_path):
    sources, executed = tmp_path / "notebooks", tmp_path / "executed"
    sources.mkdir(), executed.mkdir()
    (sources / "README.md").write_text("# Front\n")
    for name in ("00_a.ipynb", "01_b.ipynb"):
        nbformat.write(nbformat.v4.new_notebook(), sources / name)
    nbformat.write(_executed(nbformat.v4.new_notebook()), executed / "00_a.ipynb")
    with pytest.raises(SystemExit, match="no executed copy .* of 01_b.ipynb: run `make tutorial`"):
        stage.stage(executed, tmp_path / "src", sources=sources)
    nbformat.write(nbformat.v4.new_notebook(), executed / "01_b.ipynb")
    with pytest.raises(SystemExit, match="01_b.ipynb was not executed by papermill"):
        stage.stage(executed, tmp_path / "src", sources=sources)


@pytest.mark.parametrize("student", [False, True], ids=["instructor", "student"])
def test_built_pages(tmp_path, student):
    """Stage and build a front page and the miniature notebook: the exercise box, the solution dropdown around
    the solution code (none in the student edition), the formula left for the local MathJax, no CDN."""
    pytest.importorskip("jupyter_book", reason="pip install -e '.[site]' (make env installs it)")
    sources, executed = tmp_path / "notebooks", tmp_path / "executed"
    sources.mkdir(), executed.mkdir()
    (sources / "README.md").write_text("# The course\n\nStart with [the method](99_a_method.ipynb).\n")
    nbformat.write(_executed(course_notebook()), executed / "99_a_method.ipynb")
    stage.stage(executed, tmp_path / "src", student=student, sources=sources)
    stage.build(tmp_path / "src", tmp_path / "html")

    assert 'url=README.html' in (tmp_path / "html" / "index.html").read_text()
    page = (tmp_path / "html" / "99_a_method.html").read_text()
    assert page.count('class="exercise admonition"') == 2
    solutions = re.findall(r'<div class="solution dropdown admonition"', page)
    if student:
        assert not solutions and "SOLUTION-LINE" not in page and "ANSWER-SOURCE" not in page
    else:
        assert len(solutions) == 1
        dropdown = page[page.index('class="solution dropdown admonition"'):]
        assert dropdown.index("SOLUTION-LINE") < dropdown.index("checked")  # the check follows the dropdown
        assert page.count("SOLUTION-LINE") == 1
    assert r"\(\Delta = 2\)" in page  # in a Markdown output
    assert r"\(\ell(x) = x^2\)" in page and "_static/mathjax/tex-chtml.js" in page
    for html in (tmp_path / "html").glob("*.html"):
        text = html.read_text()
        assert "cdn" not in text.lower() and not re.search(r"""(src|href)=["'](https?:)?//""", text), html.name
    assert "Comparer(children" not in page
