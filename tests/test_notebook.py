"""notebooks/quickstart.ipynb executes top to bottom (tiny settings) in a real Jupyter kernel."""

import json
import sys
from pathlib import Path

import pytest

nbformat = pytest.importorskip("nbformat")
nbclient = pytest.importorskip("nbclient")
pytest.importorskip("ipykernel")

NOTEBOOK = Path(__file__).resolve().parents[1] / "notebooks" / "quickstart.ipynb"


@pytest.fixture
def kernel_of_this_python(tmp_path, monkeypatch):
    """A ``python3`` kernelspec that runs this interpreter (the venv), found before any other."""
    spec = tmp_path / "jupyter" / "kernels" / "python3"
    spec.mkdir(parents=True)
    argv = [sys.executable, "-m", "ipykernel_launcher", "-f", "{connection_file}"]
    (spec / "kernel.json").write_text(json.dumps({"argv": argv, "display_name": "Python 3", "language": "python"}))
    monkeypatch.setenv("JUPYTER_PATH", str(tmp_path / "jupyter"))
    return "python3"


@pytest.mark.slow
def test_quickstart_runs(tmp_path, monkeypatch, kernel_of_this_python):
    monkeypatch.setenv("LDD_NOTEBOOK_TINY", "1")
    monkeypatch.setenv("LDD_NOTEBOOK_DIR", str(tmp_path / "out"))
    monkeypatch.setenv("LIGHTNING_DD_QUIET", "1")
    nb = nbformat.read(NOTEBOOK, as_version=4)
    nbformat.validate(nb)
    assert all(not cell.get("outputs") for cell in nb.cells if cell.cell_type == "code")  # stored without outputs
    client = nbclient.NotebookClient(
        nb, kernel_name=kernel_of_this_python, timeout=300, resources={"metadata": {"path": str(tmp_path)}}
    )
    client.execute()

    outputs = [out for cell in nb.cells if cell.cell_type == "code" for out in cell.outputs]
    text = "".join(out.get("text", "") for out in outputs if out.output_type == "stream")
    assert not [out for out in outputs if out.output_type == "error"]
    assert "| distilled, 1/class" in text and "| random real, 1/class" in text  # the accuracy table
    assert "TinyCNN trained on 40 distilled images" in text and "% real test accuracy" in text
    images = [out for out in outputs if out.output_type == "display_data" and "image/png" in out.get("data", {})]
    assert len(images) == 2  # stored and decoded grids
    assert (tmp_path / "out" / "digits_distilled.pt").exists()
