"""Every notebook in notebooks/ runs top to bottom, so none can rot (a project rule).

Each notebooks/*.ipynb (a new one is picked up by the glob) is executed in memory with nbclient
at the tiny size (SEDJAX_NOTEBOOK_SIZE=tiny), in a kernel of this very interpreter (the venv's:
a kernel spec of our own comes first on JUPYTER_PATH, whatever specs the machine has), started
in notebooks/ and inheriting this process's environment (conftest.py's four CPU devices).
Those outputs are never written back: the repository keeps each notebook as
launch/execute_notebooks.py wrote it, executed at the demo size, and the stored outputs are
checked as the tiny run's are (every cell ran in order, no error, the tables and pictures).
"""

import json
import os
import pathlib
import re
import sys

import nbformat
import pytest
from nbclient import NotebookClient

ROOT = pathlib.Path(__file__).parents[1]
NOTEBOOK_DIR = ROOT / "notebooks"
NOTEBOOKS = sorted(NOTEBOOK_DIR.glob("*.ipynb"))
CELL_TIMEOUT_S = 900
SYSTEMS = ("two_pass_mean", "two_pass_linear_softmax", "mean_teacher")
PICTURES = ("training_curves.png", "piano_roll.png", "psd_roc.png")


@pytest.fixture
def kernel_env(tmp_path, monkeypatch):
    """Kernel spec 'python3' = this interpreter; Jupyter/IPython state in tmp_path; tiny size."""
    spec = tmp_path / "jupyter" / "kernels" / "python3"
    spec.mkdir(parents=True)
    (spec / "kernel.json").write_text(json.dumps({
        "argv": [sys.executable, "-m", "ipykernel_launcher", "-f", "{connection_file}"],
        "display_name": "Python 3 (sedjax tests)", "language": "python"}))
    monkeypatch.setenv("JUPYTER_PATH", str(tmp_path / "jupyter"))  # searched before any other
    monkeypatch.setenv("JUPYTER_RUNTIME_DIR", str(tmp_path / "runtime"))
    monkeypatch.setenv("IPYTHONDIR", str(tmp_path / "ipython"))  # no user startup files
    monkeypatch.delenv("MPLBACKEND", raising=False)  # the kernel's inline backend shows plots
    monkeypatch.setenv("SEDJAX_NOTEBOOK_SIZE", "tiny")
    (tmp_path / "tmp").mkdir()  # the notebooks' temporary folders, even when a cell fails
    monkeypatch.setenv("TMPDIR", str(tmp_path / "tmp"))


def execute(nb):
    """Runs nb in place (cwd notebooks/); a failing cell raises CellExecutionError."""
    NotebookClient(nb, timeout=CELL_TIMEOUT_S, kernel_name="python3",
                   resources={"metadata": {"path": str(NOTEBOOK_DIR)}}).execute()
    return nb


def outputs(nb) -> list:
    return [o for c in nb.cells if c.cell_type == "code" for o in c.get("outputs", [])]


def text_of(output) -> str:
    if output.output_type == "stream":
        return output.text
    data = output.get("data", {})
    return "\n".join(data.get(k, "") for k in ("text/plain", "text/html", "text/markdown"))


def test_every_notebook_is_found():
    assert {"ablations.ipynb", "median_filter_ablation.ipynb"} <= {p.name for p in NOTEBOOKS}


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_notebook_is_stored_executed_at_the_demo_size(path):
    nb = nbformat.read(path, as_version=4)
    nbformat.validate(nb)
    counts = [c.execution_count for c in nb.cells if c.cell_type == "code"]
    assert counts == list(range(1, len(counts) + 1)), (
        f"{path.name}: cells not executed top to bottom in one kernel ({counts}); "
        "run python launch/execute_notebooks.py")
    errors = [o for o in outputs(nb) if o.output_type == "error"]
    assert not errors, f"{path.name}: stored with an error: {errors[0].ename}"
    provenance = "\n".join(text_of(o) for o in outputs(nb))
    assert re.search(r"executed \d{4}-\d\d-\d\d \d\d:\d\d UTC at size 'demo'", provenance), (
        f"{path.name}: not executed at the demo size by launch/execute_notebooks.py")
    assert "machine: " in provenance
    CHECKS.get(path.name, lambda nb: None)(nb)


def test_kernel_is_this_interpreter_in_notebooks_dir_with_our_environment(kernel_env):
    nb = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell(
        "import json, os, sys, jax\n"
        "print(json.dumps({'executable': sys.executable, 'cwd': os.getcwd(),\n"
        "                  'size': os.environ.get('SEDJAX_NOTEBOOK_SIZE'),\n"
        "                  'devices': jax.device_count(), 'backend': jax.default_backend()}))")])
    seen = json.loads(execute(nb).cells[0].outputs[0].text)
    assert seen["executable"] == sys.executable
    assert pathlib.Path(seen["cwd"]).resolve() == NOTEBOOK_DIR.resolve()
    assert seen["size"] == "tiny"
    assert (seen["devices"], seen["backend"]) == (4, "cpu"), os.environ.get("XLA_FLAGS")


def check_ablations(nb):
    texts = [text_of(o) for o in outputs(nb)]
    table = [t for t in texts if "PSDS1" in t and "segment F1" in t]
    assert table, "no results table among the outputs"
    assert all(name in table[0] for name in SYSTEMS), table[0]
    images = [o for o in outputs(nb)
              if {"image/png", "image/jpeg"} & set(o.get("data", {}))]
    assert len(images) == len(SYSTEMS) * len(PICTURES)
    shown = "\n".join(texts)
    assert all(p in shown for p in PICTURES)


def check_median_filter(nb):
    assert any("image/png" in o.get("data", {}) for o in outputs(nb)), "no F1 plot"
    # the scores dict: one entry per filter length, odd numbers of frames, 1 (no filter) first
    lengths = [[int(n) for n in re.findall(r"(\d+): ", text_of(o))] for o in outputs(nb)
               if o.get("output_type") == "execute_result" and text_of(o).startswith("{")]
    assert lengths and len(lengths[-1]) >= 4, f"no scores per filter length: {lengths}"
    assert lengths[-1][0] == 1 and all(n % 2 == 1 for n in lengths[-1]), lengths[-1]


CHECKS = {"ablations.ipynb": check_ablations, "median_filter_ablation.ipynb": check_median_filter}


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_notebook_runs_top_to_bottom(path, kernel_env):
    nb = execute(nbformat.read(path, as_version=4))  # in memory: the file is not touched
    errors = [o for o in outputs(nb) if o.output_type == "error"]
    assert not errors, "\n".join(f"{e.ename}: {e.evalue}" for e in errors)
    assert all(c.execution_count for c in nb.cells if c.cell_type == "code")
    CHECKS.get(path.name, lambda nb: None)(nb)
