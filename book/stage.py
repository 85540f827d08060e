"""Stage the course site: the notebooks as ``make tutorial`` executed them, made ready for Jupyter Book 1.

``make site`` runs this, then Sphinx on the staged tree. Into ``--out`` (default ``runs/site-src/``) it writes
``_config.yml`` (copied from this folder), the front page ``README.md`` and the ``glossary.md`` of ``notebooks/``,
each executed ``NN_*.ipynb`` of ``--notebooks`` (default ``runs/notebooks/``) transformed as below, and a
``_toc.yml`` listing whichever notebooks are there, in order. Nothing is executed again. With ``--html``, it then
builds the HTML there with Sphinx (warnings are errors; ``make site``: ``runs/site/``).

The transform of a notebook:

* a markdown cell tagged ``exercise`` becomes an ``{exercise}`` box (sphinx-exercise); a leading heading stays a
  heading above the box, so the page keeps its section and its anchor;
* the code cells that follow it and carry nbgrader's ``"solution": true`` (or the tag ``solution``) are wrapped,
  outputs and all, between the gated directives ``{solution-start}`` (``:class: dropdown``, a "Click to show"
  box) and ``{solution-end}``; with ``--student`` they are dropped instead, and so are the cells tagged
  ``answer-source`` (they display the library code an exercise asks for);
* widget outputs (``application/vnd.jupyter.widget-view+json``, with their text fallback) and the notebook's
  stored widget state are removed: a widget needs a kernel, and its renderer would be loaded from a CDN. The
  notebook shows a static figure beside each widget.

Usage::

    python book/stage.py [--notebooks runs/notebooks] [--out runs/site-src] [--student] [--html runs/site]
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

import nbformat
import yaml

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
BEGIN_SOLUTION = "### BEGIN SOLUTION"
WIDGET_MIME = "application/vnd.jupyter.widget-view+json"
PAGES = ("README.md", "glossary.md")  # from notebooks/: the front page and the glossary
HEADING = re.compile(r"#{1,6}\s+\S")


def is_solution(cell) -> bool:
    """A code cell with nbgrader's ``"solution": true`` or the tag ``solution``."""
    return cell.cell_type == "code" and (bool(cell.metadata.get("nbgrader", {}).get("solution"))
                                         or "solution" in cell.metadata.get("tags", []))


def is_exercise(cell) -> bool:
    return cell.cell_type == "markdown" and "exercise" in cell.metadata.get("tags", [])


def _fence(text: str) -> str:
    """A backtick fence longer than any run of backticks in ``text``, so a directive can hold it."""
    longest = max((len(m) for m in re.findall(r"`+", text)), default=0)
    return "`" * max(3, longest + 1)


def _markdown(source: str, cell_id: str) -> nbformat.NotebookNode:
    cell = nbformat.v4.new_markdown_cell(source)
    cell.id = cell_id
    return cell


def _exercise_cells(cell, label: str) -> list:
    """The exercise statement ``cell`` as an ``{exercise}`` box labelled ``label``, its leading heading (if any)
    kept as a heading above the box."""
    cell_id = cell.get("id", label)
    lines = cell.source.strip("\n").split("\n")
    heading = lines[0] if HEADING.match(lines[0]) else None
    body = "\n".join(lines[1:] if heading else lines).strip("\n")
    out = []
    if heading and body:
        heading_cell = _markdown(heading, f"{cell_id}-heading")
        heading_cell.metadata = nbformat.from_dict({"tags": ["exercise-heading"]})
        out.append(heading_cell)
    fence = _fence(body)
    title = f" {heading.lstrip('#').strip()}" if heading and not body else ""
    box = _markdown(f"{fence}{{exercise}}{title}\n:label: {label}\n:nonumber:\n\n{body}\n{fence}", cell_id)
    box.metadata = cell.metadata
    out.append(box)
    return out


def _drop_widgets(cell) -> None:
    cell.outputs = [o for o in cell.get("outputs", []) if WIDGET_MIME not in o.get("data", {})]


def transform(nb: nbformat.NotebookNode, name: str, student: bool = False) -> nbformat.NotebookNode:
    """A copy of the executed notebook ``nb`` (``name``: its file name, whose stem prefixes the exercise labels)
    ready for the site: exercise boxes, solutions in dropdowns (dropped when ``student``), no widget outputs."""
    nb = nbformat.from_dict(nb)
    nb.metadata.pop("widgets", None)
    stem = re.sub(r"[^A-Za-z0-9]+", "-", Path(name).stem).strip("-")
    cells, label, exercises, solutions = [], None, 0, 0
    i = 0
    while i < len(nb.cells):
        cell = nb.cells[i]
        if is_exercise(cell):
            exercises += 1
            label = f"{stem}-exercise-{exercises}"
            cells += _exercise_cells(cell, label)
            i += 1
            continue
        if is_solution(cell):
            group = []
            while i < len(nb.cells) and is_solution(nb.cells[i]):
                _drop_widgets(nb.cells[i])
                group.append(nb.cells[i])
                i += 1
            if label is None:
                raise ValueError(f"{name}: the solution cell {group[0].get('id', '')!r} follows no markdown cell "
                                 "tagged 'exercise' (tag the cell that states the exercise)")
            if not student:
                solutions += 1
                cells.append(_markdown(f"```{{solution-start}} {label}\n:class: dropdown\n```",
                                       f"{stem}-solution-{solutions}-start"))
                cells += group
                cells.append(_markdown("```{solution-end}\n```", f"{stem}-solution-{solutions}-end"))
            continue
        if student and "answer-source" in cell.metadata.get("tags", []):
            i += 1
            continue
        if cell.cell_type == "code":
            _drop_widgets(cell)
            if student and BEGIN_SOLUTION in cell.source:
                raise ValueError(f"{name}: the cell {cell.get('id', '')!r} holds {BEGIN_SOLUTION!r} but no nbgrader "
                                 "metadata '\"solution\": true': the student edition would show the solution")
        cells.append(cell)
        i += 1
    nb.cells = cells
    return nb


def executed_notebooks(folder: Path, sources: Path = ROOT / "notebooks") -> list[Path]:
    """The executed ``NN_*.ipynb`` of ``folder``, in order; an error names each notebook of ``sources`` that has
    no executed copy there, or a copy whose execution failed."""
    found = sorted(folder.glob("[0-9][0-9]_*.ipynb"))
    missing = sorted({p.name for p in sources.glob("[0-9][0-9]_*.ipynb")} - {p.name for p in found})
    if missing:
        raise SystemExit(f"site: no executed copy in {folder}/ of {', '.join(missing)}: run `make tutorial` first")
    for path in found:
        papermill = nbformat.read(path, as_version=4).metadata.get("papermill")
        if papermill is None:
            raise SystemExit(f"site: {path} was not executed by papermill: run `make tutorial` first")
        if papermill.get("exception"):
            raise SystemExit(f"site: {path} stopped on an error: fix it and run `make tutorial` again")
    return found


def toc(names: list[str], glossary: bool) -> dict:
    parts = [{"caption": "Notebooks", "chapters": [{"file": Path(n).stem} for n in names]}]
    if glossary:
        parts.append({"caption": "Reference", "chapters": [{"file": "glossary"}]})
    return {"format": "jb-book", "root": "README", "parts": parts}


def stage(notebooks: Path, out: Path, student: bool = False, sources: Path = ROOT / "notebooks") -> list[Path]:
    """Write the staged book into ``out`` (emptied first): the executed notebooks of ``notebooks``, the pages of
    ``sources`` (the checkout's ``notebooks/``); return the staged notebooks."""
    paths = executed_notebooks(notebooks, sources)
    if out.exists():
        shutil.rmtree(out)
    out.mkdir(parents=True)
    config = yaml.safe_load((HERE / "_config.yml").read_text())
    if student:
        config["title"] += " (student edition)"
    (out / "_config.yml").write_text(yaml.safe_dump(config, sort_keys=False))
    for folder in ("_ext", "_static"):
        if (HERE / folder).is_dir():
            shutil.copytree(HERE / folder, out / folder, ignore=shutil.ignore_patterns("__pycache__"))
    for page in PAGES:
        if (sources / page).exists():
            shutil.copy2(sources / page, out / page)
    if not (out / "README.md").exists():
        raise SystemExit("site: notebooks/README.md (the front page) is missing")
    staged = []
    for path in paths:
        nb = transform(nbformat.read(path, as_version=4), path.name, student=student)
        nbformat.write(nb, out / path.name)
        staged.append(out / path.name)
    (out / "_toc.yml").write_text(yaml.safe_dump(toc([p.name for p in paths], (out / "glossary.md").exists()),
                                                 sort_keys=False))
    return staged


def build(src: Path, html: Path) -> None:
    """Build the staged book ``src`` into ``html`` (replaced) with Sphinx; warnings are errors. Sphinx writes into
    ``src/_build/`` (myst-nb puts its extracted outputs beside the HTML folder), then the HTML moves to ``html``."""
    subprocess.run([str(Path(sys.executable).with_name("jupyter-book")), "config", "sphinx", str(src)], check=True,
                   stdout=subprocess.DEVNULL)
    out = src / "_build" / "html"
    if html.exists():  # a failed build leaves no site behind
        shutil.rmtree(html)
    env = {**os.environ, "PYTHONPATH": str(src / "_ext")}  # the local extension of _config.yml
    result = subprocess.run([sys.executable, "-m", "sphinx", "-b", "html", "-W", "--keep-going", "-q",
                             "-d", str(src / "_build" / "doctrees"), str(src), str(out)], env=env)
    if result.returncode:
        raise SystemExit(f"site: the Sphinx build of {src} failed (its warnings, above, are errors)")
    html.parent.mkdir(parents=True, exist_ok=True)
    shutil.move(out, html)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--notebooks", type=Path, default=ROOT / "runs" / "notebooks",
                        help="the executed notebooks (default: runs/notebooks, written by make tutorial)")
    parser.add_argument("--out", type=Path, default=ROOT / "runs" / "site-src", help="default: runs/site-src")
    parser.add_argument("--student", action="store_true", help="drop the solutions (and the answer-source cells)")
    parser.add_argument("--html", type=Path, help="then build the site into this folder (make site: runs/site)")
    args = parser.parse_args(argv)
    start = time.monotonic()
    staged = stage(args.notebooks, args.out, student=args.student)
    edition = " (student edition)" if args.student else ""
    print(f"site: {len(staged)} notebooks{edition} staged in {args.out}")
    if args.html:
        build(args.out, args.html)
        print(f"site: {args.html / 'index.html'} built in {time.monotonic() - start:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
