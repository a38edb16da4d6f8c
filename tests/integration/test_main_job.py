"""The main job (`python -m bookseg.run`, no arguments) reaches its quality bar. Minutes: marked slow.

Its wall time on a 2-core CPU is measured by `benchmarks/main_job.py`, not asserted here.
"""

import pytest


@pytest.mark.slow
def test_main_job_reaches_mask_ap50_of_0_8(cli):
    proc = cli.run(timeout=3600)
    assert "mean±std" in proc.stdout
    (parent,), children = cli.runs()
    assert len(children) == 3
    assert parent.data.metrics["cv/mask_ap50_mean"] >= 0.8, parent.data.metrics
