"""Build helpers for the notebook sources: `python notebooks/src/nbNN.py` rewrites notebooks/NN_*.ipynb (no outputs)."""
import json
def md(s): return {"cell_type": "markdown", "metadata": {}, "source": s.strip("\n")}
def code(s, tags=None):
    c = {"cell_type": "code", "execution_count": None, "metadata": {}, "outputs": [], "source": s.strip("\n")}
    if tags: c["metadata"]["tags"] = tags
    return c
def write(path, cells):
    nb = {"cells": cells, "metadata": {"kernelspec": {"display_name": "Python 3", "language": "python", "name": "python3"},
          "language_info": {"name": "python"}}, "nbformat": 4, "nbformat_minor": 5}
    for i, c in enumerate(cells): c["id"] = f"c{i:02d}"
    for c in cells:
        src = c["source"]; lines = src.split("\n"); c["source"] = [l + "\n" for l in lines[:-1]] + [lines[-1]]
    json.dump(nb, open(path, "w"), indent=1); open(path, "a").write("\n")
