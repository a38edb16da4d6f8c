"""A trained model as a TensorFlow SavedModel that takes one photo and returns its books (`bookseg export`).

    bookseg export --run <mlflow run id> --out exported/
    bookseg export --weights fold0.weights.h5 --config config.yaml --out exported/
    export_saved_model(trained.model, "exported/", class_names=trained.class_names)   # from Python

The SavedModel's `serving_default` signature takes `image`: uint8 [H, W, 3] RGB of any size and does
all of `MaskRCNN.detect` inside the graph: resize and pad ("square" mode, bilinear, as
`bookseg.mrcnn.images.resize_image`), subtract the mean pixel, run the network, map the boxes back to
the photo and paste each 28 x 28 mask into its box (bilinear, threshold 0.5). It returns

    boxes           float32 [N, 4]  (y1, x1, y2, x2) pixels of the photo, y2/x2 exclusive, integer-valued
    class_ids       int32   [N]     1..num_classes-1 (class k is class_names[k - 1])
    scores          float32 [N]     sorted, highest first
    masks           uint8   [N, H, W]  1 inside the book
    num_detections  int32   []      N

Minimum score and maximum detections are fixed at export time. `bookseg_export.json` next to the model
records the class names, those two settings, the model's origin and the resolved config.

    detector = tf.saved_model.load("exported/").signatures["serving_default"]
    out = detector(image=tf.constant(photo))
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import tensorflow as tf

from bookseg.mrcnn.anchors import anchors_for
from bookseg.mrcnn.images import MASK_THRESHOLD

METADATA_FILE = "bookseg_export.json"


class DetectorModule(tf.Module):
    """tf.Module around a `MaskRCNN` whose `detect` method is the serving signature.

    Args:
        model: a `MaskRCNN` with image_resize_mode "square".
        min_confidence: minimum detection score (default `config.detection_min_confidence`).
        max_instances: maximum detections (default `config.detection_max_instances`).
    """

    def __init__(self, model, *, min_confidence: float | None = None, max_instances: int | None = None):
        super().__init__(name="bookseg_detector")
        config = model.config
        if config.image_resize_mode != "square":
            raise ValueError(
                f"export supports image_resize_mode 'square' only (the config has {config.image_resize_mode!r})"
            )
        self.model = model
        self.min_confidence = float(
            config.detection_min_confidence if min_confidence is None else min_confidence
        )
        self.max_instances = int(config.detection_max_instances if max_instances is None else max_instances)
        if self.max_instances < 1:
            raise ValueError(f"max_instances must be >= 1, got {self.max_instances}")
        self._size = int(config.image_max_dim)
        self._anchors = anchors_for(config, (self._size, self._size))

    @tf.function(input_signature=[tf.TensorSpec([None, None, 3], tf.uint8, name="image")])
    def detect(self, image):
        """Detections of one uint8 [H, W, 3] RGB image; see the module docstring for the outputs."""
        molded, meta = self.mold(image)
        out = self.model.inference_outputs(
            molded[tf.newaxis],
            meta[tf.newaxis],
            tf.constant(self._anchors),
            self.min_confidence,
            self.max_instances,
        )
        return self.unmold(out["detections"][0], out["mrcnn_mask"][0], tf.shape(image)[:2], meta)

    def mold(self, image):
        """`images.resize_image` ("square") + `mold_image` in TF.

        Args:
            image: uint8 [H, W, 3] RGB.

        Returns:
            molded: float32 [S, S, 3] (S = image_max_dim), pixels minus mean_pixel, padding -mean_pixel.
            meta: float32 [image_meta_size] as `compose_image_meta` (image id 0, window, scale, all
                classes active).
        """
        config = self.model.config
        size = self._size
        hw = tf.cast(tf.shape(image)[:2], tf.float64)
        h, w = hw[0], hw[1]
        scale = tf.constant(1.0, tf.float64)
        if config.image_min_dim:
            scale = tf.maximum(scale, config.image_min_dim / tf.minimum(h, w))
        if config.image_min_scale:
            scale = tf.maximum(scale, float(config.image_min_scale))
        scale = tf.where(tf.round(tf.maximum(h, w) * scale) > size, size / tf.maximum(h, w), scale)
        new_h = tf.cast(tf.round(h * scale), tf.int32)
        new_w = tf.cast(tf.round(w * scale), tf.int32)
        resized = tf.cond(
            tf.equal(scale, 1.0),
            lambda: tf.cast(image, tf.float32),
            # OpenCV's INTER_LINEAR on uint8: half-pixel centres, no antialiasing, rounded half up. OpenCV
            # uses 11-bit fixed-point weights, so pixels may differ by 1 except at exact 2x reductions.
            lambda: tf.clip_by_value(
                tf.floor(
                    tf.image.resize(
                        tf.cast(image, tf.float32),
                        tf.stack([new_h, new_w]),
                        method="bilinear",
                        antialias=False,
                    )
                    + 0.5
                ),
                0.0,
                255.0,
            ),
        )
        top, left = (size - new_h) // 2, (size - new_w) // 2
        # As resize_image then mold_image: pad with 0, subtract the mean after (padding = -mean_pixel).
        padded = tf.pad(resized, [[top, size - new_h - top], [left, size - new_w - left], [0, 0]])
        molded = tf.ensure_shape(padded - tf.constant(config.mean_pixel, tf.float32), [size, size, 3])
        window = tf.cast(tf.stack([top, left, top + new_h, left + new_w]), tf.float32)
        meta = tf.concat(
            [
                tf.zeros([1]),
                tf.cast(tf.shape(image), tf.float32),
                tf.constant([size, size, 3], tf.float32),
                window,
                tf.cast(scale, tf.float32)[tf.newaxis],
                tf.ones([config.num_classes]),
            ],
            axis=0,
        )
        return molded, meta

    def unmold(self, detections, masks, image_hw, meta):
        """`images.unmold_detections` in TF.

        Args:
            detections: float32 [M, 6] (y1, x1, y2, x2, class_id, score), boxes normalised on the molded
                image; rows with class_id 0 are padding.
            masks: float32 [M, 28, 28, C] mask probabilities.
            image_hw: int32 [2] (H, W) of the photo.
            meta: float32 [meta_size] from `mold` (window at [7:11]).

        Returns:
            dict of the signature's outputs (see the module docstring); detections whose box has no area
            in the photo are dropped, as in `unmold_detections`.
        """
        size = float(self._size)
        class_ids = tf.cast(detections[:, 4], tf.int32)
        valid = class_ids > 0
        # Normalised molded coords -> normalised window coords -> photo pixels (float64 as the NumPy path).
        window = tf.cast(meta[7:11], tf.float64)
        norm_window = (window - tf.constant([0.0, 0.0, 1.0, 1.0], tf.float64)) / (size - 1.0)
        shift = tf.stack([norm_window[0], norm_window[1], norm_window[0], norm_window[1]])
        extent = tf.stack([norm_window[2] - norm_window[0], norm_window[3] - norm_window[1]] * 2)
        hw = tf.cast(image_hw, tf.float64)
        photo_scale = tf.stack([hw[0] - 1.0, hw[1] - 1.0, hw[0] - 1.0, hw[1] - 1.0])
        boxes = (tf.cast(detections[:, :4], tf.float64) - shift) / extent
        boxes = tf.round(boxes * photo_scale + tf.constant([0.0, 0.0, 1.0, 1.0], tf.float64))
        boxes = tf.clip_by_value(boxes, 0.0, tf.stack([hw[0], hw[1], hw[0], hw[1]]))
        keep = valid & (boxes[:, 2] > boxes[:, 0]) & (boxes[:, 3] > boxes[:, 1])
        boxes = tf.cast(tf.boolean_mask(boxes, keep), tf.int32)
        class_ids = tf.boolean_mask(class_ids, keep)
        scores = tf.boolean_mask(detections[:, 5], keep)
        # [M, 28, 28, C] -> each kept detection's own class channel [n, 28, 28].
        class_masks = tf.gather(
            tf.transpose(tf.boolean_mask(masks, keep), [0, 3, 1, 2]), class_ids, batch_dims=1
        )
        height, width = image_hw[0], image_hw[1]

        def paste(args):
            box, mask = args
            y1, x1, y2, x2 = box[0], box[1], box[2], box[3]
            resized = tf.image.resize(
                mask[..., tf.newaxis], tf.stack([y2 - y1, x2 - x1]), method="bilinear", antialias=False
            )[..., 0]
            inside = tf.cast(resized >= MASK_THRESHOLD, tf.uint8)
            return tf.pad(inside, [[y1, height - y2], [x1, width - x2]])

        n = tf.shape(boxes)[0]
        full = tf.cond(
            n > 0,
            lambda: tf.map_fn(
                paste, (boxes, class_masks), fn_output_signature=tf.TensorSpec([None, None], tf.uint8)
            ),
            lambda: tf.zeros(tf.stack([0, height, width]), tf.uint8),
        )
        return {
            "boxes": tf.cast(boxes, tf.float32),
            "class_ids": class_ids,
            "scores": scores,
            "masks": tf.reshape(full, tf.stack([n, height, width])),
            "num_detections": n,
        }


def export_saved_model(
    model,
    out_dir: str | Path,
    *,
    class_names: list[str],
    min_confidence: float | None = None,
    max_instances: int | None = None,
    source: str = "",
    cfg=None,
    overwrite: bool = False,
) -> Path:
    """Save `model` as a SavedModel with a `serving_default` signature (see the module docstring).

    Args:
        model: a `MaskRCNN` (square resize mode).
        out_dir: SavedModel folder; must not exist or be empty unless `overwrite`.
        class_names: class names without background (written to `bookseg_export.json`).
        min_confidence, max_instances: fixed detection settings (defaults from the model config).
        source: where the weights came from (recorded).
        cfg: the resolved bookseg config (recorded), optional.
        overwrite: replace the folder's content.

    Returns:
        The folder written.
    """
    out_dir = Path(out_dir)
    if out_dir.exists() and any(out_dir.iterdir()):
        if not overwrite:
            raise FileExistsError(f"{out_dir} exists and is not empty; pass --overwrite to replace it")
        shutil.rmtree(out_dir)
    module = DetectorModule(model, min_confidence=min_confidence, max_instances=max_instances)
    tf.saved_model.save(
        module, str(out_dir), signatures={"serving_default": module.detect.get_concrete_function()}
    )
    metadata = {
        "class_names": list(class_names),
        "min_confidence": module.min_confidence,
        "max_instances": module.max_instances,
        "image_max_dim": int(model.config.image_max_dim),
        "source": source,
        "signature": "serving_default: image uint8 [H, W, 3] -> boxes, class_ids, scores, masks, num_detections",
    }
    if cfg is not None:
        from omegaconf import OmegaConf

        # A run's config.yaml is resolved already; the composed default config keeps ${hydra:...} references.
        metadata["config"] = OmegaConf.to_container(cfg, resolve=False)
    (out_dir / METADATA_FILE).write_text(json.dumps(metadata, indent=2, default=str))
    return out_dir
