"""The peer-comparison tools in benchmarks/ that run in bookseg's environment: a fold written as an
Ultralytics data set keeps every book, and the scorer gives a perfect score to the ground truth."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pycocotools.mask as mask_utils

from bookseg.data.readers import load_dataset
from bookseg.data.synthetic import synthetic_dataset_path

BENCHMARKS = Path(__file__).resolve().parents[1] / "benchmarks"


def _run(script: str, *args: str) -> str:
    proc = subprocess.run(
        [sys.executable, str(BENCHMARKS / script), *args],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-3000:]
    return proc.stdout


def test_fold_as_ultralytics_set_and_ground_truth_scores_one(tmp_path):
    project = synthetic_dataset_path(tmp_path / "cache", 6, seed=0, image_size=(128, 128))
    out = tmp_path / "yolo"
    _run("yolo_dataset.py", "data=via", f"data.path={project}", "--out", str(out))
    split = json.loads((out / "bookseg_split.json").read_text())
    records = {r.image_id: r for r in load_dataset(project).records}
    val = split["splits"]["val"]
    assert val and len(val) + len(split["splits"]["train"]) == len(records)
    results = []
    for image_id, entry in enumerate(val, start=1):
        record = records[entry["image_id"]]
        label = out / "labels" / "val" / (Path(entry["file"]).stem + ".txt")
        rows = [line.split() for line in label.read_text().splitlines()]
        assert len(rows) == len(record.instances) == entry["instances"]
        coords = np.array([float(v) for row in rows for v in row[1:]])
        assert coords.min() >= 0.0 and coords.max() <= 1.0 and {row[0] for row in rows} == {"0"}
        masks = record.masks()
        for k in range(masks.shape[-1]):
            rle = mask_utils.encode(np.asfortranarray(masks[:, :, k].astype(np.uint8)))
            rle["counts"] = rle["counts"].decode()
            y, x = np.nonzero(masks[:, :, k])
            box = [float(x.min()), float(y.min()), float(x.max() - x.min() + 1), float(y.max() - y.min() + 1)]
            results.append(
                {"image_id": image_id, "category_id": 1, "score": 1.0, "segmentation": rle, "bbox": box}
            )
    (tmp_path / "gt_as_results.json").write_text(json.dumps(results))
    printed = _run(
        "score_coco_results.py", "--dataset", str(out), "--split", "val", str(tmp_path / "gt_as_results.json")
    )
    assert float(re.search(r"mask AP50[^0-9]*([0-9.]+)", printed).group(1)) > 0.99, printed
