"""launch/colab.ipynb runs top to bottom (at its tiny size, in a fresh kernel) so it cannot rot."""

import os

import pytest

from tests.conftest import ROOT


@pytest.mark.slow
def test_the_colab_notebook_runs_at_tiny_size(tiny_data_dir, tmp_path, monkeypatch):
  nbformat = pytest.importorskip("nbformat")
  nbclient = pytest.importorskip("nbclient")
  monkeypatch.setenv("CLIPMED_NOTEBOOK_SIZE", "tiny")
  monkeypatch.setenv("CLIPMED_NOTEBOOK_DATA_DIR", tiny_data_dir)
  monkeypatch.setenv("CLIPMED_NOTEBOOK_WORKDIR", str(tmp_path / "workdir"))
  monkeypatch.setenv("JAX_PLATFORMS", "cpu")
  monkeypatch.setenv("PYTHONPATH", ROOT + os.pathsep + os.environ.get("PYTHONPATH", ""))
  notebook = nbformat.read(os.path.join(ROOT, "launch", "colab.ipynb"), as_version=4)
  client = nbclient.NotebookClient(notebook, timeout=600, kernel_name="python3",
                                   resources={"metadata": {"path": ROOT}})
  client.execute()  # raises CellExecutionError naming the cell on any error

  outputs = [out for cell in notebook.cells if cell.cell_type == "code" for out in cell.outputs]
  figures = [out for out in outputs if "image/png" in out.get("data", {})]
  # SynthCXR samples, ROC curves, reliability diagram, batch heatmaps, CXR-Align examples.
  assert len(figures) >= 5, len(figures)
  text = "".join(out.get("text", "") for out in outputs)
  assert "closest report:" in text and "test images, logit scale" in text
  assert "largest difference to the workdir's embeddings: 0.0" in text
  assert any("Evaluation results at step 6" in out.get("data", {}).get("text/markdown", "")
             for out in outputs)
