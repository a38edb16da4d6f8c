"""Training under tf.distribute: one step on 2 replicas is the step one device takes on the global batch."""

import json
import subprocess
import sys
from pathlib import Path

import pytest

from bookseg.mrcnn.distribute import make_strategy

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def step_results():
    """distributed_step.py's comparison, run in its own process (it needs 2 logical CPUs)."""
    proc = subprocess.run(
        [sys.executable, "-m", "tests.mrcnn.distributed_step"],
        cwd=ROOT,
        check=False,
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads(proc.stdout.strip().splitlines()[-1])


def test_two_replicas_take_the_one_device_step(step_results):
    assert step_results["replicas"] == 2
    one, two = step_results["loss_one"], step_results["loss_two"]
    assert set(one) == set(two)
    # The replicas hold 3 + 2 and 0 + 1 books: every loss has terms, and their counts differ by replica.
    assert all(one[name] > 0 for name in ("mrcnn_bbox_loss", "mrcnn_mask_loss", "rpn_bbox_loss"))
    for name in one:
        assert two[name] == pytest.approx(one[name], rel=1e-5, abs=1e-7), name
    assert step_results["weight_diff"] < 1e-6


def test_the_global_gradient_is_clipped_once(step_results):
    # The unclipped gradient is longer than clipnorm 0.5, so the first SGD step is exactly 0.5 x lr long,
    # on one device and on 2 replicas (clipping each replica's share would give another length).
    assert step_results["step_norm_one"] == pytest.approx(0.5, rel=1e-3)
    assert step_results["step_norm_two"] == pytest.approx(0.5, rel=1e-3)


def test_a_non_finite_loss_on_one_replica_updates_nothing(step_results):
    result = step_results["nan"]
    assert not result["loss_finite"]
    assert result["moved"] == 0.0
    assert result["iterations"] == 1  # the finite step before it counted, this one did not


def test_unknown_strategy_is_a_clear_error():
    with pytest.raises(ValueError, match="unknown strategy 'tpu': use default or mirrored"):
        make_strategy("tpu")
