"""The inspection notebooks in `notebooks/` execute from top to bottom and show what they promise.

Each notebook (Jupytext percent format) is converted with jupytext and run by nbclient in a fresh
kernel of this Python, in a temporary working folder with its own MLflow store and data cache. The
run comparison notebook and the load-from-MLflow path of the model notebook read the runs of one
`python -m bookseg.run +experiment=smoke` job made in that folder first.
"""

from __future__ import annotations

import base64
import re
from pathlib import Path

import jupytext
import nbformat
import numpy as np
import pytest
from nbclient import NotebookClient

NOTEBOOKS = Path(__file__).resolve().parents[1] / "notebooks"
KERNEL_NAME = "bookseg-notebook-test"
CELL_TIMEOUT = 300  # seconds per cell; the heaviest cell (training the tiny model) takes ~30 s


@pytest.fixture(scope="module")
def workspace(tmp_path_factory):
    """A working folder with a kernel spec of this interpreter, an MLflow store and a data cache.

    The kernel spec is written here (not into the user's Jupyter folders) and points at
    `sys.executable`, so the notebooks run with the Python that runs the tests, whatever kernels the
    machine has registered.
    """
    from ipykernel.kernelspec import write_kernel_spec

    root = tmp_path_factory.mktemp("notebooks")
    write_kernel_spec(root / "jupyter" / "kernels" / KERNEL_NAME)
    env = {
        "JUPYTER_PATH": str(root / "jupyter"),
        "MLFLOW_TRACKING_URI": f"sqlite:///{root / 'mlflow.db'}",
        "BOOKSEG_CACHE": str(root / "cache"),
        "TF_CPP_MIN_LOG_LEVEL": "2",
    }
    with pytest.MonkeyPatch.context() as patch:
        for key, value in env.items():
            patch.setenv(key, value)
        patch.delenv("MPLBACKEND", raising=False)  # the kernel must use the inline backend to emit figures
        yield root


@pytest.fixture(scope="module")
def smoke_run(smoke_sweep) -> str:
    """The parent run id of the session's smoke sweep (anchors default), see tests/conftest.py."""
    return smoke_sweep.parents[0].info.run_id


def execute(name: str, workdir: Path, parameters: dict | None = None) -> nbformat.NotebookNode:
    """Convert `notebooks/<name>.py` and execute it in `workdir`; `parameters` are assigned right after
    the cell tagged "parameters" (as papermill does). Raises `CellExecutionError` on the first failure."""
    notebook = jupytext.read(NOTEBOOKS / f"{name}.py")
    if parameters:
        tagged = [i for i, cell in enumerate(notebook.cells) if "parameters" in cell.metadata.get("tags", [])]
        assert len(tagged) == 1, f"{name}: expected one cell tagged 'parameters', found {len(tagged)}"
        source = "\n".join(f"{key} = {value!r}" for key, value in parameters.items())
        notebook.cells.insert(tagged[0] + 1, nbformat.v4.new_code_cell(source))
    client = NotebookClient(
        notebook,
        kernel_name=KERNEL_NAME,
        timeout=CELL_TIMEOUT,
        resources={"metadata": {"path": str(workdir)}},
    )
    client.execute()
    return notebook


def outputs(notebook, output_type=None) -> list:
    return [
        output
        for cell in notebook.cells
        if cell.cell_type == "code"
        for output in cell.get("outputs", [])
        if output_type is None or output.output_type == output_type
    ]


def text_of(notebook) -> str:
    """All printed text and plain-text results of the notebook."""
    parts = []
    for output in outputs(notebook):
        if output.output_type == "stream":
            parts.append(output.text)
        elif "data" in output and "text/plain" in output.data:
            parts.append(output.data["text/plain"])
    return "\n".join(parts)


def figures(notebook) -> list[np.ndarray]:
    """Every PNG the notebook displayed, decoded to uint8 [H, W, C]."""
    import cv2

    images = []
    for output in outputs(notebook, "display_data"):
        if "image/png" in output.data:
            raw = np.frombuffer(base64.b64decode(output.data["image/png"]), np.uint8)
            images.append(cv2.imdecode(raw, cv2.IMREAD_UNCHANGED))
    return images


def number_after(text: str, label: str) -> float:
    match = re.search(re.escape(label) + r"\s*([-+0-9.e]+)", text)
    assert match, f"{label!r} not in the notebook's output:\n{text[-3000:]}"
    return float(match.group(1))


def test_every_notebook_is_jupytext_percent_with_parameters():
    for path in sorted(NOTEBOOKS.glob("*.py")):
        notebook = jupytext.read(path)
        assert notebook.cells[0].cell_type == "markdown", path.name
        tagged = [cell for cell in notebook.cells if "parameters" in cell.metadata.get("tags", [])]
        assert len(tagged) == 1, f"{path.name}: one cell must be tagged 'parameters'"
    assert {p.stem for p in NOTEBOOKS.glob("*.py")} >= {
        "01_inspect_data",
        "02_inspect_model",
        "03_compare_runs",
    }


def test_inspect_data_notebook(workspace):
    notebook = execute("01_inspect_data", workspace)
    text = text_of(notebook)
    assert "format: via2_project" in text
    assert number_after(text, "images:") == 48
    # Grouped folds: every image in one fold, no group in two, GroupKFold's balanced sizes.
    assert "groups in more than one fold: 0" in text
    sizes = [int(n) for n in re.search(r"images per fold: \[([\d, ]+)\]", text).group(1).split(",")]
    assert len(sizes) == 3 and sum(sizes) == 48 and max(sizes) - min(sizes) <= 1
    # Every augmentation preset was built from its YAML and applied, and the draws did change the image.
    presets = sorted(p.stem for p in (NOTEBOOKS.parent / "conf" / "augmentation").glob("*.yaml"))
    changed = {}
    for name in presets:
        match = re.search(rf"^{name}: (.*)$", text, re.MULTILINE)
        assert match, f"no line for augmentation preset {name!r}"
        draws = re.search(r"(\d+) of \d+ draws changed the image", match.group(1))
        changed[name] = int(draws.group(1)) if draws else 0
    assert "none: no transform" in text
    assert sum(changed.values()) >= 3, changed
    shown = figures(notebook)
    assert len(shown) == 5  # examples, histograms, fold bars, augmentation grid, mask targets
    assert all(image.std() > 10 for image in shown)  # drawn, not blank
    tables = [o.data["text/html"] for o in outputs(notebook, "execute_result") if "text/html" in o.data]
    assert len(tables) == 1 and "largest group" in tables[0]
    # The synthetic shelves' masks survive the model's mask path (resize, mini mask, 28 x 28, paste).
    assert number_after(text, "round-trip IoU median") > 0.85


def test_inspect_model_notebook_trains_and_follows_one_image(workspace):
    notebook = execute("02_inspect_model", workspace)
    text = text_of(notebook)
    # RPN targets: the positives' target deltas lead exactly onto ground-truth boxes.
    assert number_after(text, "min IoU with their GT box") > 0.999
    assert number_after(text, "anchors:") > 0  # positive anchors
    assert number_after(text, "GT boxes with a positive anchor:") >= 1
    # The step-by-step proposals are the inference graph's proposals.
    assert "inference proposals match the ones above: True" in text
    # Trained briefly on easy shelves, the model finds most books of a held-out image.
    match = re.search(r"(\d+) books detected, (\d+) annotated", text)
    assert match, text[-3000:]
    detected, annotated = int(match.group(1)), int(match.group(2))
    assert annotated > 0 and detected >= annotated / 2, match.group(0)
    # anchors, RPN targets, RPN scores/proposals, classifier, 28x28 masks, pasted masks, weight histograms
    assert len(figures(notebook)) == 7
    tables = [o.data["text/html"] for o in outputs(notebook, "execute_result") if "text/html" in o.data]
    assert len(tables) == 2 and "P6" in tables[0] and "rpn_model" in tables[1]


def test_compare_runs_notebook_reads_a_smoke_run(workspace, smoke_sweep, smoke_run):
    parameters = {"TRACKING_URI": smoke_sweep.uri, "EXPERIMENT": smoke_sweep.experiment, "RUN_ID": smoke_run}
    notebook = execute("03_compare_runs", workspace, parameters)
    text = text_of(notebook)
    assert f"{smoke_sweep.experiment}: 4 parent runs, 4 fold runs" in text  # 2 finished, 2 failed points
    assert f"run {smoke_run}: 2 folds" in text
    for loss in ("rpn_class_loss", "mrcnn_mask_loss", "'loss'"):
        assert loss in text
    # The summary table shows the parent run's cross-validation metrics as logged.

    logged = smoke_sweep.client().get_run(smoke_run).data.metrics
    summary = [o.data["text/plain"] for o in outputs(notebook, "execute_result")][-1]
    expected = f"{logged['cv/mask_ap50_mean']:.3f} ± {logged['cv/mask_ap50_std']:.3f}"
    assert "mask_ap50" in summary and expected in summary
    assert len(figures(notebook)) == 2  # metric per run with error bars, loss curves


def test_inspect_model_notebook_loads_a_run_from_mlflow(workspace, smoke_sweep, smoke_run, monkeypatch):
    monkeypatch.setenv("MLFLOW_TRACKING_URI", smoke_sweep.uri)  # the kernel inherits it
    notebook = execute("02_inspect_model", workspace, parameters={"RUN_ID": smoke_run})
    text = text_of(notebook)
    assert f"MLflow run {smoke_run} fold" in text
    assert "backbone tiny, image (128, 128, 3)" in text  # the smoke config's model, not the notebook's
    assert "inference proposals match the ones above: True" in text
    # The 28x28 mask figure appears only when the barely trained smoke model detects something.
    assert len(figures(notebook)) in (6, 7)
