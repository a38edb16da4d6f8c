"""Every experiment in conf/experiment/ runs through the real CLI (shrunk: one fold, 2 steps per epoch).

Slow (about a minute per experiment): `make test-all` or `pytest -m slow`.
"""

from pathlib import Path

import pytest

EXPERIMENTS = sorted(
    p.stem for p in (Path(__file__).resolve().parents[2] / "conf" / "experiment").glob("*.yaml")
)
SHRINK = (
    "cv.k=3",
    "cv.folds=[0]",
    "stages.steps_per_epoch=2",
    "stages.validation_steps=1",
    "data.synthetic.n_images=9",
    "eval.max_images=3",
    "tracking.overlays=1",
    "tracking.log_weights=false",
    "study=all_experiments",
)


@pytest.mark.slow
def test_every_experiment_runs(cli):
    cli.run("-m", "+experiment=" + ",".join(EXPERIMENTS), *SHRINK, timeout=3600)
    parents, children = cli.runs("bookseg/all_experiments")
    finished = {
        p.data.tags["bookseg.overrides"].split()[0].split("=")[1]
        for p in parents
        if p.info.status == "FINISHED"
    }
    assert finished == set(EXPERIMENTS)
    assert len(children) == len(EXPERIMENTS)
