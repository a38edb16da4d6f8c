"""MaskRCNN: the Keras 3 model, its training/validation steps and `detect`.

The network is made of four Functional sub-models holding every weight, with matterport's layer
names (matterport's, so its h5 files load by name): `backbone_fpn` (image -> P2..P6), `rpn_model` (shared RPN head),
`fpn_classifier` and `fpn_mask` (ROI heads on flattened ROIs, see heads.py), plus one
`fpn_classifier_stage<k>` per cascade stage (cascade.py; none by default). The weightless
graph layers (`ROI`, `proposal_targets`, `roi_align_*`, `mrcnn_detection`) are wired in Python
by `training_outputs` (training graph) and `inference_outputs` (inference graph), so one model
object trains and detects. Anchors are constants computed from the molded image shape (never
weights). The four sub-models are built under the Keras dtype policy `config.precision`
("float32" or "mixed_bfloat16"); their output layers are float32 either way.

`train_step` / `test_step` compute the five named losses, the weight-decay term `l2_loss` and
their weighted sum `loss`, tracked as metrics (so `History` has them, with `val_` versions).
A step whose loss or gradient norm is not finite applies no update; `training.NonFiniteLossGuard`
then stops training with a clear error.
"""

from __future__ import annotations

import contextlib

import keras
import numpy as np
import tensorflow as tf

from bookseg.mrcnn import losses as L
from bookseg.mrcnn.anchors import anchors_for
from bookseg.mrcnn.backbone import backbone_graph
from bookseg.mrcnn.cascade import refine_rois, refinement_class_ids, stage_targets
from bookseg.mrcnn.config import LOSS_NAMES, MrcnnConfig
from bookseg.mrcnn.detection import DetectionLayer
from bookseg.mrcnn.detection_targets import DetectionTargetLayer, max_positive_rois
from bookseg.mrcnn.distribute import apply_finite_update, replicas_in_sync
from bookseg.mrcnn.fpn import fpn_graph
from bookseg.mrcnn.heads import apply_head, build_classifier_head, build_mask_head
from bookseg.mrcnn.inputs import INPUT_NAMES
from bookseg.mrcnn.normalization import is_norm_layer
from bookseg.mrcnn.proposals import ProposalLayer, norm_boxes_graph
from bookseg.mrcnn.roi_align import PyramidROIAlign
from bookseg.mrcnn.rpn import build_rpn_model, run_rpn

TRAINING_INPUTS = INPUT_NAMES  # the keys of a training batch, as `make_dataset` builds it
LOG_NAMES = ("loss", *LOSS_NAMES, "l2_loss")
# The image size must survive 5 halvings (P6) and the FPN's x2 upsamplings exactly.
SIZE_MULTIPLE = 64


@contextlib.contextmanager
def layer_dtype_policy(name: str):
    """Layers created inside take the Keras dtype policy `name` ("float32", "mixed_bfloat16");
    the global policy is restored after."""
    previous = keras.config.dtype_policy()
    keras.config.set_dtype_policy(name)
    try:
        yield
    finally:
        keras.config.set_dtype_policy(previous)


def build_backbone_fpn(config: MrcnnConfig) -> keras.Model:
    """Functional model "backbone_fpn": molded image [B, H, W, 3] -> [P2, P3, P4, P5, P6]."""
    image = keras.Input(shape=(None, None, 3), name="input_image")
    c2, c3, c4, c5 = backbone_graph(image, config)
    pyramid = fpn_graph(c2, c3, c4, c5, config.top_down_pyramid_size, config.norm)
    return keras.Model(image, pyramid, name="backbone_fpn")


def named_weight_layers(model: MaskRCNN) -> dict[str, keras.layers.Layer]:
    """Every layer that owns weights, keyed by its matterport name; `rpn_model` is one entry.

    This is the weight loader's and `set_trainable`'s view of the network. Order: backbone,
    FPN, rpn_model, classifier head, mask head, cascade heads.
    """
    named: dict[str, keras.layers.Layer] = {}

    def add(name, layer):
        if name in named:
            raise ValueError(f"two weighted layers are named {name!r}")
        named[name] = layer

    for layer in model.backbone_fpn.layers:
        if layer.weights:
            add(layer.name, layer)
    add(model.rpn_model.name, model.rpn_model)
    for head in (model.classifier_head, model.mask_head, *model.cascade_heads):
        for layer in head.layers:
            if layer.weights:
                add(layer.name, layer)
    return named


def _check_image_size(height, width, where: str) -> None:
    if height is None or width is None:
        raise ValueError(
            f"{where}: the molded image size must be static (got {height} x {width}); training batches "
            "use resize mode 'square', or a dataset with a fixed padded size"
        )
    if height % SIZE_MULTIPLE or width % SIZE_MULTIPLE:
        raise ValueError(
            f"{where}: molded image size {height} x {width} is not a multiple of {SIZE_MULTIPLE} "
            "(the FPN downsamples 6 times); use resize mode 'square' with image_max_dim % 64 == 0 or 'pad64'"
        )


class MaskRCNN(keras.Model):
    """Mask R-CNN with matterport's layer names, trained with `fit` and used with `detect`.

    Args:
        config: `MrcnnConfig` (validated here).

    Training batches are dicts with the keys of `TRAINING_INPUTS` (see
    `bookseg.mrcnn.inputs.make_dataset`). Compile with
    `jit_compile=False` (done by `training.train_stages`).
    """

    def __init__(self, config: MrcnnConfig, name: str = "mask_rcnn", **kwargs):
        super().__init__(name=name, **kwargs)
        config.validate()
        self.config = config
        with layer_dtype_policy(config.precision):
            self.backbone_fpn = build_backbone_fpn(config)
            self.rpn_model = build_rpn_model(
                config.rpn_anchor_stride,
                len(config.rpn_anchor_ratios),
                config.top_down_pyramid_size,
                config.rpn_conv_channels,
            )
            self.classifier_head = build_classifier_head(config)
            self.mask_head = build_mask_head(config)
            self.cascade_heads = [
                build_classifier_head(config, stage=k + 2) for k in range(len(config.cascade_iou_thresholds))
            ]
        self.proposal_layer = ProposalLayer(config)
        self.detection_target_layer = DetectionTargetLayer(config)
        self.roi_align_classifier = PyramidROIAlign(
            (config.pool_size, config.pool_size),
            "roi_align_classifier",
            canonical_size=config.roi_canonical_size,
        )
        self.roi_align_mask = PyramidROIAlign(
            (config.mask_pool_size, config.mask_pool_size),
            "roi_align_mask",
            canonical_size=config.roi_canonical_size,
        )
        self.detection_layer = DetectionLayer(config)
        self.trackers = {name: keras.metrics.Mean(name=name) for name in LOG_NAMES}
        self._norm_scale_paths = frozenset(v.path for v in self.norm_scales())
        self._inference_functions = {}
        self.built = True

    # ------------------------------------------------------------------ graph pieces
    def _features(self, images, training):
        return self.backbone_fpn(images, training=training)

    def _heads(self, rois, image_hw, feature_maps, training, head=None):
        """Box head (`classifier_head` or a cascade head) on `rois` [B, R, 4] -> class logits
        [B, R, C], bbox deltas [B, R, C, 4]."""
        pooled = self.roi_align_classifier(rois, image_hw, feature_maps[:4])
        return apply_head(head or self.classifier_head, pooled, training=training)

    def _mask_logits(self, rois, image_hw, feature_maps, training):
        """Mask head on `rois` [B, R, 4] -> logits [B, R, 28, 28, C]."""
        pooled = self.roi_align_mask(rois, image_hw, feature_maps[:4])
        return apply_head(self.mask_head, pooled, training=training)

    def training_outputs(self, batch: dict, training: bool = True, deterministic: bool = False) -> dict:
        """The training graph on one batch (dict with the `TRAINING_INPUTS` keys).

        Args:
            batch: training batch (`TRAINING_INPUTS`, as `make_dataset` builds it); image shape must be static.
            training: passed to the sub-models (batch statistics with `config.norm` "batch_norm").
            deterministic: fixed ROI sampling (used for validation).

        Returns:
            dict of tensors: rpn_class_logits [B, A, 2], rpn_bbox [B, A, 4], rpn_rois [B, P, 4],
            rois [B, T, 4], target_class_ids [B, T], target_bbox [B, T, 4], roi_valid [B, T],
            mrcnn_class_logits [B, T, C], mrcnn_bbox [B, T, C, 4]; and for the first
            M = `max_positive_rois(config)` ROIs (where all positives are): target_mask [B, M, 28, 28],
            mask_class_ids [B, M], mrcnn_mask_logits [B, M, 28, 28, C]. "cascade" lists one dict per
            cascade stage (cascade.py) with that stage's rois, target_class_ids, target_bbox,
            roi_valid, mrcnn_class_logits and mrcnn_bbox; with stages, the mask entries are computed
            on the last stage's rois.
        """
        missing = [key for key in TRAINING_INPUTS if key not in batch]
        if missing:
            raise KeyError(f"training batch lacks {missing}; it has {sorted(batch)}")
        images = tf.cast(batch["input_image"], tf.float32)
        height, width = images.shape[1], images.shape[2]
        _check_image_size(height, width, "MaskRCNN training batch")
        image_hw = tf.constant([height, width], tf.float32)
        anchors = tf.constant(anchors_for(self.config, (height, width)))

        feature_maps = self._features(images, training)
        rpn_class_logits, rpn_probs, rpn_bbox = run_rpn(self.rpn_model, feature_maps, training=training)
        rpn_rois = self.proposal_layer(
            rpn_probs, rpn_bbox, anchors, proposal_count=self.config.post_nms_rois_training
        )
        gt_boxes = norm_boxes_graph(batch["input_gt_boxes"], (height, width))
        rois, target_class_ids, target_bbox, target_mask, roi_valid = self.detection_target_layer(
            tf.stop_gradient(rpn_rois),
            batch["input_gt_class_ids"],
            gt_boxes,
            tf.cast(batch["input_gt_masks"], tf.float32),
            deterministic=deterministic,
            image_hw=(height, width),
        )
        class_logits, bbox = self._heads(rois, image_hw, feature_maps, training)
        # Positives come first and number at most M = `mask_slots`, and the mask loss reads only
        # positives: running the mask head on that slice gives matterport's loss and gradients
        # (it runs the head on all T ROIs) for a third of the work.
        mask_slots = max_positive_rois(self.config)
        mask_rois, mask_class_ids = rois[:, :mask_slots], target_class_ids[:, :mask_slots]
        target_mask = target_mask[:, :mask_slots]
        cascade = []
        stage_rois, stage_class_ids, stage_logits, stage_bbox = rois, target_class_ids, class_logits, bbox
        thresholds = self.config.cascade_iou_thresholds
        for k, (head, threshold) in enumerate(zip(self.cascade_heads, thresholds)):
            last = k == len(thresholds) - 1
            stage_rois = refine_rois(
                stage_rois,
                stage_bbox,
                refinement_class_ids(stage_logits, stage_class_ids),
                self.config.bbox_std_dev,
            )
            stage_class_ids, stage_deltas, stage_valid, *masks = stage_targets(
                stage_rois,
                roi_valid,
                batch["input_gt_class_ids"],
                gt_boxes,
                tf.cast(batch["input_gt_masks"], tf.float32),
                self.config,
                positive_iou=threshold,
                with_masks=last,
                image_hw=(height, width),
            )
            stage_logits, stage_bbox = self._heads(stage_rois, image_hw, feature_maps, training, head)
            cascade.append(
                {
                    "rois": stage_rois,
                    "target_class_ids": stage_class_ids,
                    "target_bbox": stage_deltas,
                    "roi_valid": stage_valid,
                    "mrcnn_class_logits": stage_logits,
                    "mrcnn_bbox": stage_bbox,
                }
            )
            if last:
                mask_rois, (mask_class_ids, target_mask) = stage_rois[:, :mask_slots], masks
        mask_logits = self._mask_logits(mask_rois, image_hw, feature_maps, training)
        return {
            "rpn_class_logits": rpn_class_logits,
            "rpn_bbox": rpn_bbox,
            "rpn_rois": rpn_rois,
            "rois": rois,
            "target_class_ids": target_class_ids,
            "target_bbox": target_bbox,
            "target_mask": target_mask,
            "mask_class_ids": mask_class_ids,
            "roi_valid": roi_valid,
            "mrcnn_class_logits": class_logits,
            "mrcnn_bbox": bbox,
            "mrcnn_mask_logits": mask_logits,
            "cascade": cascade,
        }

    def mrcnn_losses(self, batch: dict, training: bool = True, deterministic: bool = False) -> dict:
        """The five named, unweighted losses of a batch (float32 scalars). With cascade stages the
        class and box losses are sums over the box heads, each weighted 1 (a choice: some
        cascade implementations weight later heads less)."""
        out = self.training_outputs(batch, training=training, deterministic=deterministic)
        active_class_ids = batch["input_image_meta"][:, 12:]
        box_stages = [out, *out["cascade"]]
        return {
            "rpn_class_loss": L.rpn_class_loss(batch["input_rpn_match"], out["rpn_class_logits"]),
            "rpn_bbox_loss": L.rpn_bbox_loss(
                batch["input_rpn_bbox"], batch["input_rpn_match"], out["rpn_bbox"]
            ),
            "mrcnn_class_loss": tf.add_n(
                [
                    L.mrcnn_class_loss(
                        s["target_class_ids"], s["mrcnn_class_logits"], active_class_ids, s["roi_valid"]
                    )
                    for s in box_stages
                ]
            ),
            "mrcnn_bbox_loss": tf.add_n(
                [
                    L.mrcnn_bbox_loss(s["target_bbox"], s["target_class_ids"], s["mrcnn_bbox"])
                    for s in box_stages
                ]
            ),
            "mrcnn_mask_loss": L.mrcnn_mask_loss(
                out["target_mask"], out["mask_class_ids"], out["mrcnn_mask_logits"]
            ),
        }

    def norm_scales(self) -> list:
        """Gamma and beta variables of every norm layer (never weight-decayed)."""
        scales = []
        for layer in named_weight_layers(self).values():
            if is_norm_layer(layer):
                scales += [layer.gamma, layer.beta]
        return scales

    def weight_decay_variables(self) -> list:
        """Trainable weights that take weight decay: all but norm gamma/beta (matterport)."""
        return [v for v in self.trainable_variables if v.path not in self._norm_scale_paths]

    def l2_loss(self):
        """Weight-decay term on the current trainable set (see `losses.weight_decay_loss`)."""
        return L.weight_decay_loss(
            self.weight_decay_variables(), self.config.weight_decay, self.config.weight_decay_mode
        )

    def total_loss(self, named_losses: dict, l2_loss):
        """sum(loss_weights[name] * loss) + l2_loss."""
        weights = self.config.loss_weights
        return tf.add_n([float(weights[name]) * named_losses[name] for name in LOSS_NAMES]) + l2_loss

    # ------------------------------------------------------------------ Keras training API
    def compile(self, optimizer="sgd", **kwargs):
        """Keras `compile` with `jit_compile=False` by default; builds the optimizer right away.

        Building the optimizer's slots here (for the *current* trainable set, so call
        `training.set_trainable` first) keeps variable creation out of the traced train step,
        which TensorFlow would otherwise trace twice. Losses are not passed: `train_step`
        computes them. Under a `tf.distribute` strategy, create the optimizer and compile inside
        `self.distribute_strategy.scope()` (as `training.train_stages` does).
        """
        kwargs.setdefault("jit_compile", False)
        super().compile(optimizer=optimizer, **kwargs)
        self.optimizer.build(self.trainable_variables)

    @property
    def metrics(self):
        return list(self.trackers.values())

    def _update_trackers(self, values: dict) -> dict:
        for name, tracker in self.trackers.items():
            tracker.update_state(values[name])
        return {name: tracker.result() for name, tracker in self.trackers.items()}

    @staticmethod
    def _unpack(data) -> dict:
        if isinstance(data, (tuple, list)):
            data = data[0]
        if not isinstance(data, dict):
            raise TypeError(
                f"MaskRCNN expects batches as dicts with keys {TRAINING_INPUTS}, got {type(data)}"
            )
        return data

    def train_step(self, data):
        """One step on this replica's batch; with N replicas each differentiates loss / N (distribute.py)."""
        batch = self._unpack(data)
        variables = self.trainable_variables
        with tf.GradientTape() as tape:
            named = self.mrcnn_losses(batch, training=True)
            l2 = self.l2_loss()
            total = self.total_loss(named, l2)
            share = total / replicas_in_sync()
        gradients = tape.gradient(share, variables)
        pairs = [(g, v) for g, v in zip(gradients, variables) if g is not None]
        if pairs:  # a NaN/inf step touches neither the weights nor the optimizer's slots
            apply_finite_update(self.optimizer, pairs, total)
        return self._update_trackers({"loss": total, "l2_loss": l2, **named})

    def test_step(self, data):
        batch = self._unpack(data)
        named = self.mrcnn_losses(batch, training=False, deterministic=True)
        l2 = self.l2_loss()
        return self._update_trackers({"loss": self.total_loss(named, l2), "l2_loss": l2, **named})

    # ------------------------------------------------------------------ inference
    def inference_outputs(
        self, images, image_metas, anchors, min_confidence=None, max_instances=None, training=False
    ) -> dict:
        """The inference graph on molded images.

        Args:
            images: float32 [B, H, W, 3] molded images (H, W multiples of 64).
            image_metas: float32 [B, meta_size] (window of the photo in molded pixels at [7:11]).
            anchors: float32 [A, 4] normalised anchors of this molded shape (`anchors_for`).
            min_confidence: float, default `config.detection_min_confidence`.
            max_instances: int, default `config.detection_max_instances`.

        Returns:
            dict: detections [B, M, 6] (y1, x1, y2, x2, class_id, score; normalised, zero padded),
            mrcnn_mask [B, M, 28, 28, C] sigmoid probabilities for the detections, rpn_rois
            [B, P, 4], mrcnn_class [B, P, C] softmax, mrcnn_bbox [B, P, C, 4]. With cascade stages
            mrcnn_class is the mean of the stages' softmax scores and mrcnn_bbox the last stage's
            deltas, relative to the ROIs that stage saw (cascade.py).
        """
        config = self.config
        min_confidence = config.detection_min_confidence if min_confidence is None else min_confidence
        max_instances = config.detection_max_instances if max_instances is None else int(max_instances)
        images = tf.cast(images, tf.float32)
        image_hw = tf.cast(tf.shape(images)[1:3], tf.float32)
        feature_maps = self._features(images, training)
        _, rpn_probs, rpn_bbox = run_rpn(self.rpn_model, feature_maps, training=training)
        rpn_rois = self.proposal_layer(
            rpn_probs, rpn_bbox, anchors, proposal_count=config.post_nms_rois_inference
        )
        rois = rpn_rois
        class_logits, bbox = self._heads(rois, image_hw, feature_maps, training)
        stage_probs = [tf.nn.softmax(class_logits, axis=-1)]
        for head in self.cascade_heads:
            rois = refine_rois(rois, bbox, refinement_class_ids(class_logits), config.bbox_std_dev)
            class_logits, bbox = self._heads(rois, image_hw, feature_maps, training, head)
            stage_probs.append(tf.nn.softmax(class_logits, axis=-1))
        class_probs = tf.add_n(stage_probs) / len(stage_probs)
        windows = norm_boxes_graph(tf.cast(image_metas[:, 7:11], tf.float32), image_hw)
        detections = self.detection_layer(
            rois, class_probs, bbox, windows, min_confidence=min_confidence, max_instances=max_instances
        )
        # matterport re-runs the mask head on the final boxes.
        mask_logits = self._mask_logits(detections[..., :4], image_hw, feature_maps, training)
        return {
            "detections": detections,
            "mrcnn_mask": tf.sigmoid(mask_logits),
            "rpn_rois": rpn_rois,
            "mrcnn_class": class_probs,
            "mrcnn_bbox": bbox,
        }

    def call(self, inputs, training=False):
        """Inference graph on a dict {input_image, input_image_meta[, input_anchors]}."""
        images = inputs["input_image"]
        anchors = inputs.get("input_anchors")
        if anchors is None:
            _check_image_size(images.shape[1], images.shape[2], "MaskRCNN.call without input_anchors")
            anchors = tf.constant(anchors_for(self.config, images.shape[1:3]))
        return self.inference_outputs(images, inputs["input_image_meta"], anchors, training=training)

    def inference_function(self, max_instances: int):
        """The compiled inference graph `detect` runs, traced once per `max_instances` for any image size.

        Called as run(molded float32 [B, H, W, 3], metas float32 [B, meta_size], anchors float32
        [A, 4] normalised, min_confidence float32 []) -> (detections float32 [B, max_instances, 6]
        (y1, x1, y2, x2 normalised, class_id, score), masks float32 [B, max_instances, 28, 28, C]).
        """
        if max_instances not in self._inference_functions:
            signature = [
                tf.TensorSpec([None, None, None, 3], tf.float32),
                tf.TensorSpec([None, self.config.image_meta_size], tf.float32),
                tf.TensorSpec([None, 4], tf.float32),
                tf.TensorSpec([], tf.float32),
            ]

            def run(images, metas, anchors, min_confidence):
                out = self.inference_outputs(images, metas, anchors, min_confidence, max_instances)
                return out["detections"], out["mrcnn_mask"]

            self._inference_functions[max_instances] = tf.function(
                run, input_signature=signature, jit_compile=False, reduce_retracing=True
            )
        return self._inference_functions[max_instances]

    def detect(self, images, *, min_confidence=None, max_instances=None) -> list[dict]:
        """Detect books (instances) in RGB photos of any size.

        Images are resized/padded per `config.image_resize_mode`, grouped by molded shape and run
        in chunks of `config.images_per_batch`.

        Args:
            images: list of uint8 [H, W, 3] RGB arrays.
            min_confidence: minimum score (default `config.detection_min_confidence`).
            max_instances: maximum detections per image (default `config.detection_max_instances`).

        Returns:
            One dict per image (see `images.unmold_detections`): rois int32 [n, 4] (y1, x1, y2, x2)
            original pixels (y2/x2 exclusive), class_ids int32 [n], scores float32 [n], masks bool
            [H, W, n]; sorted by score.
        """
        from bookseg.mrcnn import images as image_utils

        config = self.config
        min_confidence = config.detection_min_confidence if min_confidence is None else float(min_confidence)
        max_instances = config.detection_max_instances if max_instances is None else int(max_instances)
        if max_instances < 1:
            raise ValueError(f"max_instances must be >= 1, got {max_instances}")
        molded = []
        for index, image in enumerate(images):
            image = np.asarray(image)
            if image.ndim != 3 or image.shape[2] != 3:
                raise ValueError(f"detect: image {index} has shape {image.shape}, expected [H, W, 3] RGB")
            resized, window, scale, _ = image_utils.resize_image(image, config)
            _check_image_size(resized.shape[0], resized.shape[1], f"detect: image {index}")
            meta = image_utils.compose_image_meta(
                index, image.shape, resized.shape, window, scale, np.ones(config.num_classes)
            )
            molded.append((image_utils.mold_image(resized, config), meta, image.shape, window))

        by_shape: dict[tuple, list[int]] = {}
        for index, (molded_image, *_rest) in enumerate(molded):
            by_shape.setdefault(molded_image.shape, []).append(index)
        run = self.inference_function(max_instances)
        results: list[dict | None] = [None] * len(molded)
        chunk = max(1, int(config.images_per_batch))
        for shape, indices in by_shape.items():
            anchors = tf.constant(anchors_for(config, shape))
            for start in range(0, len(indices), chunk):
                part = indices[start : start + chunk]
                batch_images = tf.constant(np.stack([molded[i][0] for i in part]))
                batch_metas = tf.constant(np.stack([molded[i][1] for i in part]))
                detections, masks = run(
                    batch_images, batch_metas, anchors, tf.constant(min_confidence, tf.float32)
                )
                detections, masks = detections.numpy(), masks.numpy()
                for row, i in enumerate(part):
                    _, _, original_shape, window = molded[i]
                    results[i] = image_utils.unmold_detections(
                        detections[row], masks[row], original_shape, shape, window
                    )
        return results
