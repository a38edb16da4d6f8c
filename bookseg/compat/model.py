"""matterport's `mrcnn.model` (import it as `modellib`): `MaskRCNN`, `load_image_gt`, `mold_image`, `log`.

`MaskRCNN` is a thin front door on bookseg's own model (`bookseg.mrcnn.model.MaskRCNN`, its
`keras_model`), training loop (`bookseg.mrcnn.training.train_stages`: stages, global epoch numbers, NaN
guard), weight loader (`bookseg.mrcnn.weights.load_weights`) and `detect`. One bookseg model trains and
detects, so `mode` only decides which of `train` / `detect` matterport would allow; `detect` works in
both here.
"""

from __future__ import annotations

import datetime
from types import SimpleNamespace

import keras
import numpy as np

from bookseg.compat import checkpoints as ckpt
from bookseg.compat.augmentation import as_augmenter
from bookseg.compat.config import to_mrcnn_config
from bookseg.compat.pipeline import load_image_gt, make_dataset
from bookseg.compat.tracking import mlflow_run
from bookseg.mrcnn import images as im
from bookseg.mrcnn.model import MaskRCNN as BooksegMaskRCNN
from bookseg.mrcnn.training import OptimizerSpec, Stage, set_trainable, train_stages
from bookseg.mrcnn.weights import load_weights as load_weight_file

__all__ = ["MaskRCNN", "load_image_gt", "log", "mold_image", "unmold_image"]


def mold_image(images, config) -> np.ndarray:
    """RGB image(s) [..., 3] -> float32 network input: pixels minus `config.MEAN_PIXEL`."""
    return im.mold_image(images, SimpleNamespace(mean_pixel=tuple(np.asarray(config.MEAN_PIXEL).tolist())))


def unmold_image(normalized_images, config) -> np.ndarray:
    """Inverse of `mold_image`, as uint8."""
    return im.unmold_image(
        normalized_images, SimpleNamespace(mean_pixel=tuple(np.asarray(config.MEAN_PIXEL).tolist()))
    )


def log(text: str, array=None) -> None:
    """Print `text`, and for an array its shape, min, max and dtype (matterport's debugging helper)."""
    if array is not None:
        array = np.asarray(array)
        text = f"{text:25s} shape: {array.shape!s:20}"
        if array.size:
            text += f" min: {array.min():10.5f} max: {array.max():10.5f}"
        else:
            text += f" min: {'':10} max: {'':10}"
        text += f" {array.dtype}"
    print(text)


class MaskRCNN:
    """matterport's model class on bookseg's network.

    Args:
        mode: "training" or "inference".
        config: a `Config` subclass instance (mapped with `to_mrcnn_config`).
        model_dir: folder of the log directories (TensorBoard logs and checkpoints).

    Attributes:
        keras_model: the bookseg `MaskRCNN` (a `keras.Model`, matterport's layer names).
        epoch: epochs finished (0 for a new model; set from a checkpoint's name by `load_weights`).
        log_dir, checkpoint_path: where `train` writes, as matterport (`checkpoint_path` holds an
            `{epoch:04d}` placeholder).
    """

    def __init__(self, mode: str, config, model_dir):
        if mode not in ("training", "inference"):
            raise ValueError(f'mode must be "training" or "inference", got {mode!r}')
        self.mode, self.config, self.model_dir = mode, config, str(model_dir)
        self.name = ckpt.run_name(config)
        self.keras_model = BooksegMaskRCNN(to_mrcnn_config(config))
        self.last_load_report = None
        self._mlflow_run_id: str | None = None
        self.set_log_dir()

    @property
    def mrcnn_config(self):
        """The `MrcnnConfig` the network was built with."""
        return self.keras_model.config

    def set_log_dir(self, model_path=None) -> None:
        """New log directory stamped now, or, for a matterport-named checkpoint path, that run's
        directory with `epoch` set to the checkpoint's epoch (so training continues after it)."""
        self.epoch = 0
        when = datetime.datetime.now()
        parsed = ckpt.parse_checkpoint(model_path) if model_path else None
        if parsed is not None:
            when, self.epoch = parsed
            print(f"Re-starting from epoch {self.epoch}")
        self.log_dir = str(ckpt.log_dir_for(self.model_dir, self.name, when))
        self.checkpoint_path = str(ckpt.checkpoint_template(self.log_dir, self.name))

    def find_last(self) -> str:
        """Path of the last checkpoint of the newest run of this config's NAME under `model_dir`."""
        return ckpt.find_last(self.model_dir, self.name)

    def load_weights(self, filepath, by_name: bool = False, exclude=None):
        """Load weights: a matterport / Keras 2 h5 (e.g. `mask_rcnn_coco.h5`) by layer name or in
        order, or a checkpoint of `train` (restored whole). `exclude`: layer names not to load.

        Returns the `bookseg.mrcnn.weights.LoadReport` (also kept as `last_load_report`).
        """
        report = load_weight_file(self.keras_model, filepath, exclude=exclude or (), by_name=by_name)
        self.last_load_report = report
        self.set_log_dir(filepath)
        return report

    def get_imagenet_weights(self) -> str:
        """Local path of Keras' ImageNet ResNet weights of `config.BACKBONE`, downloaded once."""
        from bookseg.mrcnn.pretrained import PINNED, fetch, imagenet_key, weights_cache_dir

        return str(fetch(PINNED[imagenet_key(self.mrcnn_config.backbone)], weights_cache_dir()))

    def set_trainable(self, layer_regex: str) -> int:
        """Make the layers whose names fully match `layer_regex` (or a stage name) trainable."""
        return set_trainable(self.keras_model, layer_regex)

    def train(
        self,
        train_dataset,
        val_dataset,
        learning_rate: float,
        epochs: int,
        layers: str,
        augmentation=None,
        custom_callbacks=None,
        no_augmentation_sources=None,
    ) -> list[dict]:
        """Train up to epoch `epochs` (cumulative: a second call continues where the first ended).

        Args:
            train_dataset, val_dataset: prepared `Dataset`s (val_dataset may be None).
            learning_rate: SGD learning rate (momentum LEARNING_MOMENTUM, global-norm clipping
                GRADIENT_CLIP_NORM).
            epochs: the epoch number to train up to, counted from the first call.
            layers: "heads", "3+", "4+", "5+", "all" or a regex over layer names.
            augmentation: `iaa` augmenter, albumentations transform(s) or None.
            custom_callbacks: Keras callbacks run after the checkpoint callback.
            no_augmentation_sources: dataset sources never augmented.

        Returns:
            One dict per epoch trained (`train_stages`' logs: epoch, losses, val_ losses, rate).
        """
        if self.mode != "training":
            raise ValueError('Create the model in training mode: MaskRCNN(mode="training", ...)')
        config, mrcnn = self.config, self.mrcnn_config
        train_data = make_dataset(
            train_dataset,
            mrcnn,
            augmenter=as_augmenter(augmentation),
            no_augmentation_sources=no_augmentation_sources,
            seed=self.epoch,
        )
        val_data = None if val_dataset is None else make_dataset(val_dataset, mrcnn, shuffle=False)
        print(f"\nStarting at epoch {self.epoch}. LR={learning_rate}\n")
        print(f"Checkpoint Path: {self.checkpoint_path}")
        checkpoint = ckpt.EpochCheckpoint(self.log_dir, self.name)
        clip = getattr(config, "GRADIENT_CLIP_NORM", None)
        optimizer = OptimizerSpec(name="sgd", momentum=float(config.LEARNING_MOMENTUM), clipnorm=clip or None)
        with mlflow_run(config, self.name, self.log_dir, self._mlflow_run_id) as (tracking, run_id):
            self._mlflow_run_id = run_id or self._mlflow_run_id
            callbacks = [
                keras.callbacks.TensorBoard(log_dir=self.log_dir, write_graph=False, profile_batch=0),
                checkpoint,
                *(custom_callbacks or []),
                *tracking,
            ]
            logs = train_stages(
                self.keras_model,
                train_data,
                val_data,
                [Stage(layers=layers, epochs=int(epochs), learning_rate=float(learning_rate))],
                optimizer,
                steps_per_epoch=int(config.STEPS_PER_EPOCH),
                validation_steps=int(config.VALIDATION_STEPS),
                callbacks=callbacks,
                initial_epoch=self.epoch,
            )
        self.epoch = max(self.epoch, int(epochs))
        return logs

    def detect(self, images, verbose: int = 0) -> list[dict]:
        """Detect instances in RGB images of any size and number.

        Args:
            images: list of uint8 [H, W, 3] RGB images (matterport required exactly BATCH_SIZE).
            verbose: 1 prints the images' statistics.

        Returns:
            One dict per image: rois int32 [N, 4] (y1, x1, y2, x2) original pixels, y2/x2 exclusive;
            class_ids int32 [N]; scores float32 [N]; masks bool [H, W, N]; sorted by score.
        """
        if verbose:
            log(f"Processing {len(images)} images")
            for image in images:
                log("image", image)
        return self.keras_model.detect(list(images))

    def mold_inputs(self, images):
        """matterport's `mold_inputs`: molded float32 [B, H, W, 3], image metas [B, META], windows int32 [B, 4]."""
        return im.mold_inputs(list(images), self.mrcnn_config)

    def get_trainable_layers(self) -> list:
        """The weighted layers that are trainable now (matterport layer names)."""
        from bookseg.mrcnn.model import named_weight_layers

        return [layer for layer in named_weight_layers(self.keras_model).values() if layer.trainable]
