"""Each notebook is paired with a percent-format source in notebooks/src/ (jupytext); the two must agree.

`make notebooks` (``jupytext --sync``) brings the older of the two up to date after an edit.
"""

from __future__ import annotations

from pathlib import Path

import jupytext
import nbformat
import pytest

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOKS = sorted((ROOT / "notebooks").glob("[0-9][0-9]_*.ipynb"))
SOURCES = sorted((ROOT / "notebooks" / "src").glob("*.py"))


def cells(nb) -> list[tuple[str, str, list[str]]]:
    return [(c.cell_type, c.source.strip("\n"), list(c.metadata.get("tags", []))) for c in nb.cells]


def test_every_notebook_has_a_source_and_every_source_a_notebook():
    assert NOTEBOOKS, "no notebooks found"
    assert [p.stem for p in NOTEBOOKS] == [p.stem for p in SOURCES], (
        "notebooks/NN_*.ipynb and notebooks/src/NN_*.py must pair one to one: run `make notebooks`")


@pytest.mark.parametrize("notebook", NOTEBOOKS, ids=lambda p: p.stem)
def test_notebook_agrees_with_its_source(notebook):
    source = ROOT / "notebooks" / "src" / f"{notebook.stem}.py"
    stored = nbformat.read(notebook, as_version=4)
    from_source = jupytext.read(source)
    a, b = cells(stored), cells(from_source)
    assert len(a) == len(b), (f"{notebook.name} has {len(a)} cells, {source.name} {len(b)}: "
                              "run `make notebooks` after editing either")
    for i, (x, y) in enumerate(zip(a, b)):
        assert x == y, f"{notebook.name} cell {i} differs from {source.name}: run `make notebooks` after editing either"


@pytest.mark.parametrize("notebook", NOTEBOOKS, ids=lambda p: p.stem)
def test_parameters_cell_is_tagged_in_the_source(notebook):
    tagged = [c for c in jupytext.read(ROOT / "notebooks" / "src" / f"{notebook.stem}.py").cells
              if "parameters" in c.metadata.get("tags", [])]
    assert len(tagged) == 1, f"{notebook.stem}.py needs exactly one cell tagged parameters for papermill"


def test_sources_and_library_pass_ruff():
    import shutil
    import subprocess
    import sys

    ruff = shutil.which("ruff", path=str(Path(sys.executable).parent)) or shutil.which("ruff")
    if ruff is None:
        pytest.skip("ruff is not installed (pip install -e '.[test]')")
    paths = ["udalib", "tests", "tests_browser", "benchmarks", "data_scripts", "notebooks/src", "book"]
    done = subprocess.run([ruff, "check", "--quiet", *paths], cwd=ROOT, capture_output=True, text=True)
    assert done.returncode == 0, f"ruff check {' '.join(paths)}:\n{done.stdout}{done.stderr}"
