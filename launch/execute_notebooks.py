"""Executes the notebooks at the demo size and writes them back with their outputs.

    python launch/execute_notebooks.py [notebooks/NAME.ipynb ...]   (default: every notebook)

The repository keeps its notebooks executed at the demo size (SEDJAX_NOTEBOOK_SIZE=demo), so
that a reader on the web sees the scores, the tables and the pictures; each notebook's second
code cell prints when, on which machine and at which commit its outputs were made. Each runs
in a kernel of this interpreter, started in notebooks/, without a cell timeout (the demo-size
runs take minutes to an hour on a laptop CPU). A notebook whose execution fails is not written
back: the file keeps its previous outputs, and this command exits 1 naming the cell.
The tests execute the same notebooks at the tiny size in memory (tests/test_notebooks.py).
"""

from __future__ import annotations

import os
import pathlib
import sys
import time

import nbformat
from nbclient import NotebookClient
from nbclient.exceptions import CellExecutionError

ROOT = pathlib.Path(__file__).resolve().parents[1]
NOTEBOOK_DIR = ROOT / "notebooks"


def execute(path: pathlib.Path) -> bool:
    """Executes `path` at the demo size; writes it back only when every cell ran."""
    nb = nbformat.read(path, as_version=4)
    began = time.time()
    try:
        NotebookClient(nb, timeout=None, kernel_name="python3",
                       resources={"metadata": {"path": str(NOTEBOOK_DIR)}}).execute()
    except CellExecutionError as e:
        print(f"error: {path}: a cell failed, the file is unchanged:\n{e}", file=sys.stderr)
        return False
    tmp = path.with_suffix(".ipynb.tmp")
    nbformat.write(nb, tmp)
    os.replace(tmp, path)
    print(f"{path.relative_to(ROOT)}: executed in {time.time() - began:.0f} s")
    return True


def main(argv: list[str]) -> int:
    os.environ["SEDJAX_NOTEBOOK_SIZE"] = "demo"
    paths = [pathlib.Path(a).resolve() for a in argv] or sorted(NOTEBOOK_DIR.glob("*.ipynb"))
    missing = [p for p in paths if not p.is_file()]
    if missing:
        print(f"error: {missing[0]}: no such notebook", file=sys.stderr)
        return 2
    return 0 if all([execute(p) for p in paths]) else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
