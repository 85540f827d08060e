"""Project hygiene: notebooks stored clean and parameterised, one pinned environment, library code rules."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parent.parent
NOTEBOOKS = sorted((ROOT / "notebooks").glob("*.ipynb"))


def _source(cell) -> str:
    src = cell.get("source", "")
    return "".join(src) if isinstance(src, list) else src


@pytest.fixture(params=NOTEBOOKS or [None], ids=lambda p: p.name if p else "none")
def notebook(request):
    if request.param is None:
        pytest.skip("no notebooks/*.ipynb yet")
    return request.param, json.loads(request.param.read_text())  # raises if it is not valid JSON


def test_notebook_has_exactly_one_parameters_cell(notebook):
    path, nb = notebook
    tagged = [c for c in nb["cells"] if "parameters" in c.get("metadata", {}).get("tags", [])]
    assert len(tagged) == 1, f"{path.name}: {len(tagged)} cells tagged 'parameters'"
    assert tagged[0]["cell_type"] == "code"
    # papermill injects its values after this cell: it must assign something
    assert re.search(r"^[A-Za-z_]\w*\s*(:[^=\n]+)?=", _source(tagged[0]), re.M), path.name


def test_notebook_is_stored_without_outputs(notebook):
    path, nb = notebook
    for i, cell in enumerate(nb["cells"]):
        if cell["cell_type"] == "code":
            assert cell.get("outputs") == [], f"{path.name}, cell {i} has stored outputs"
            assert cell.get("execution_count") is None, f"{path.name}, cell {i} has an execution count"


def test_notebook_runs_on_the_python3_kernel(notebook):
    path, nb = notebook
    assert nb["metadata"]["kernelspec"]["name"] == "python3", path.name
    assert nb["nbformat"] == 4


def test_notebook_says_how_to_run_it_at_full_scale(notebook):
    path, nb = notebook
    markdown = [_source(c) for c in nb["cells"] if c["cell_type"] == "markdown"]
    hits = [m for m in markdown if "Run at full scale" in m]
    assert hits, f"{path.name}: no markdown cell with 'Run at full scale'"
    text = hits[0]
    after = text[text.index("Run at full scale"):]
    assert re.search(rf"papermill\s+notebooks/{re.escape(path.name)}\s", after), \
        f"{path.name}: the 'Run at full scale' cell gives no `papermill notebooks/{path.name} ...` command"


# ---------------------------------------------------------------------------------------------- environment
def test_environment_yml_installs_the_package_from_conda_forge_and_pip():
    env = yaml.safe_load((ROOT / "environment.yml").read_text())
    assert env["channels"] == ["conda-forge"]
    deps = env["dependencies"]
    plain = [d for d in deps if isinstance(d, str)]
    assert any(re.fullmatch(r"python(=[0-9.]+)?", d) for d in plain), plain
    assert "pip" in plain
    pip_sections = [d["pip"] for d in deps if isinstance(d, dict) and "pip" in d]
    assert len(pip_sections) == 1
    # the same optional groups as `make env`
    extras = re.search(r'pip install --quiet -e "\.\[([a-z,]+)\]"', (ROOT / "Makefile").read_text()).group(1)
    assert set(extras.split(",")) >= {"notebooks", "test", "site"}, extras
    assert f"-e .[{extras}]" in pip_sections[0]
    # nothing else is pinned by conda: the versions come from pyproject.toml through pip
    assert not [d for d in plain if d.split("=")[0] not in ("python", "pip")]


def test_pyproject_pins_torch_and_torchvision():
    tomllib = pytest.importorskip("tomllib")  # Python >= 3.11
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    deps = project["dependencies"]
    assert "torch==2.14.1" in deps and "torchvision==0.29.1" in deps
    extras = project["optional-dependencies"]
    assert {"notebooks", "test"} <= set(extras)
    assert any(d.startswith("papermill") for d in extras["notebooks"])
    assert any(d.startswith("nbval") for d in extras["test"])
    # the course site: Jupyter Book 1 (Jupyter Book 2 fetches its theme from the network at build time)
    assert any(d.startswith("jupyter-book") and "<2" in d for d in extras["site"])


# --------------------------------------------------------------------------------------------- library code
RULES = {
    "a hard-coded .cuda( call (use .to(device))": re.compile(r"\.cuda\("),
    "a star import": re.compile(r"^\s*from\s+\S+\s+import\s+\*", re.M),
    "sys.path manipulation": re.compile(r"sys\.path"),
    "a print( call (use the return value, logging or tqdm)": re.compile(r"(?<![\w.])print\("),
}


@pytest.mark.parametrize("rule", list(RULES))
def test_library_code_rules(rule):
    pattern = RULES[rule]
    offenders = []
    files = sorted((ROOT / "udalib").rglob("*.py"))
    assert len(files) > 10
    for path in files:
        rel = path.relative_to(ROOT).as_posix()
        if rule.startswith("a print(") and rel == "udalib/cli.py":
            continue  # the command line prints its results
        for n, line in enumerate(path.read_text().splitlines(), 1):
            if pattern.search(line):
                offenders.append(f"{rel}:{n}: {line.strip()}")
    assert not offenders, f"{rule} in udalib/:\n" + "\n".join(offenders)


def test_the_rules_catch_what_they_are_meant_to():
    assert RULES["a print( call (use the return value, logging or tqdm)"].search("    print(x)")
    assert not RULES["a print( call (use the return value, logging or tqdm)"].search("pprint(x); fingerprint(x)")
    assert RULES["a star import"].search("from torch import *")
    assert RULES["a hard-coded .cuda( call (use .to(device))"].search("x = x.cuda()")


def test_readme_starts_with_the_two_commands():
    readme = ROOT / "README.md"
    if not readme.exists():
        pytest.skip("README.md does not exist yet")
    head = "\n".join(readme.read_text().splitlines()[:15])
    assert "make tutorial" in head and "make test" in head
