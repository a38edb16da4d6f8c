"""utils: AP and overlaps equal bookseg's matterport-style evaluation; geometry helpers; weight download."""

from __future__ import annotations

import hashlib
import http.server
import socket
import threading

import numpy as np
import pytest

from bookseg.compat import utils
from bookseg.evaluation import matterport_ap
from bookseg.mrcnn.pretrained import URL_BASE_ENV, WeightsSourceError


def _instances(seed, n, shape=(40, 50)):
    rng = np.random.default_rng(seed)
    masks = np.zeros((*shape, n), bool)
    for k in range(n):
        y, x = rng.integers(0, shape[0] - 12), rng.integers(0, shape[1] - 12)
        masks[y : y + rng.integers(4, 12), x : x + rng.integers(4, 12), k] = True
    return masks, rng.integers(1, 3, n).astype(np.int32), rng.random(n).astype(np.float32)


def test_compute_ap_equals_bookseg_matterport_ap():
    gt_masks, gt_ids, _ = _instances(0, 5)
    pred_masks, pred_ids, scores = _instances(1, 6)
    pred_masks[..., :3] = gt_masks[..., :3]  # three good predictions
    pred_ids[:3] = gt_ids[:3]
    args = (
        utils.extract_bboxes(gt_masks), gt_ids, gt_masks,
        utils.extract_bboxes(pred_masks), pred_ids, scores, pred_masks,
    )  # fmt: skip
    ap, precisions, recalls, overlaps = utils.compute_ap(*args, iou_threshold=0.5)
    expected = matterport_ap.compute_ap(*args, iou_threshold=0.5)
    assert 0 < ap < 1 and ap == expected[0]
    np.testing.assert_array_equal(precisions, expected[1])
    np.testing.assert_array_equal(recalls, expected[2])
    np.testing.assert_array_equal(overlaps, expected[3])
    assert utils.compute_ap_range(*args) == matterport_ap.compute_ap_range(*args)
    np.testing.assert_array_equal(utils.compute_overlaps_masks(pred_masks, gt_masks), overlaps)


def test_box_and_mask_helpers():
    masks = np.zeros((10, 12, 2), bool)
    masks[1:4, 2:9, 0] = True
    boxes = utils.extract_bboxes(masks)
    np.testing.assert_array_equal(boxes, [[1, 2, 4, 9], [0, 0, 0, 0]])
    assert boxes.dtype == np.int32
    np.testing.assert_allclose(utils.compute_overlaps(boxes[:1], np.array([[1, 2, 4, 5]])), [[9 / 21]])
    mini = utils.minimize_mask(boxes[:1], masks[..., :1], (8, 8))
    assert mini.shape == (8, 8, 1) and mini.all()
    np.testing.assert_array_equal(utils.expand_mask(boxes[:1], mini, (10, 12)), masks[..., :1])


def test_resize_image_square_and_resize_mask():
    image = np.full((30, 60, 3), 9, np.uint8)
    out, window, scale, padding, crop = utils.resize_image(image, min_dim=32, max_dim=64, mode="square")
    assert out.shape == (64, 64, 3) and crop is None
    assert scale == pytest.approx(64 / 60)
    assert window == (16, 0, 48, 64)
    assert padding == [(16, 16), (0, 0), (0, 0)]
    mask = np.zeros((30, 60, 1), bool)
    mask[:, :30] = True
    resized = utils.resize_mask(mask, scale, padding)
    assert resized.shape == (64, 64, 1)
    assert resized[16:48, :32].all() and not resized[:16].any() and not resized[16:48, 32:].any()
    with pytest.raises(ValueError, match="crop"):
        utils.resize_image(image, 32, 64, mode="crop")


# ------------------------------------------------------------------------------- download_trained_weights


class _Server:
    """Loopback HTTP server serving one body under any path; counts requests."""

    def __init__(self, body: bytes):
        self.body, self.requests = body, 0
        outer = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self):
                outer.requests += 1
                self.send_response(200)
                self.send_header("Content-Length", str(len(outer.body)))
                self.end_headers()
                self.wfile.write(outer.body)

            def log_message(self, *args):
                pass

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.base = f"http://127.0.0.1:{self.httpd.server_address[1]}/v2.0"
        threading.Thread(target=self.httpd.serve_forever, args=(0.05,), daemon=True).start()

    def close(self):
        self.httpd.shutdown()
        self.httpd.server_close()


def test_download_trained_weights_fetches_once_and_records_the_digest(tmp_path, monkeypatch):
    body = bytes(range(256)) * 100
    server = _Server(body)
    monkeypatch.setenv(URL_BASE_ENV, server.base)
    try:
        target = tmp_path / "weights" / "mask_rcnn_coco.h5"
        assert utils.download_trained_weights(str(target), verbose=0) == str(target)
        assert target.read_bytes() == body
        record = target.with_name("mask_rcnn_coco.h5.sha256").read_text()
        assert record.split()[0] == hashlib.sha256(body).hexdigest()
        utils.download_trained_weights(str(target), verbose=0)  # already there: not downloaded again
        assert server.requests == 1
    finally:
        server.close()


def test_download_trained_weights_offline_says_what_to_do(tmp_path, monkeypatch):
    with socket.socket() as probe:  # a loopback port nobody listens on
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    monkeypatch.setenv(URL_BASE_ENV, f"http://127.0.0.1:{port}/v2.0")
    target = tmp_path / "mask_rcnn_coco.h5"
    with pytest.raises(WeightsSourceError) as error:
        utils.download_trained_weights(str(target), verbose=0)
    message = str(error.value)
    assert "download failed" in message and "offline" in message
    assert f"http://127.0.0.1:{port}/v2.0/mask_rcnn_coco.h5" in message
    assert str(target) in message
    assert not target.exists() and list(tmp_path.iterdir()) == []
