"""
Mask R-CNN: train on book outlines (VIA polygons) in matterport's sample style, on bookseg.

Written like matterport's balloon sample; only the imports differ from a matterport script
(docs/migrating-from-matterport.md). The VIA file is read the way the balloon sample reads
`via_region_data.json` (a VIA 1 export or a VIA 2 project file both work); every fifth image is held
out for validation.

Usage (from the repository root):

    # Train on the built-in synthetic shelves (generated into ./logs/synthetic_shelves)
    python samples/bookshelf/bookshelf.py train --dataset=synthetic

    # Train on Open Shelves photos, starting from matterport's COCO weights (downloaded once)
    python samples/bookshelf/bookshelf.py train --dataset=../shared/data/open_shelves/via_project.json \
        --weights=coco

    # Resume the last training run
    python samples/bookshelf/bookshelf.py train --dataset=synthetic --weights=last

    # Detect books in an image with the last weights and save the drawing
    python samples/bookshelf/bookshelf.py detect --weights=last --image=path/to/photo.jpg

`--tiny` switches to a small CPU model (64 px, tiny backbone) for smoke tests.
"""

import argparse
import json
import os
import sys

import cv2
import matplotlib

matplotlib.use("Agg")  # figures are saved to files, never shown

import matplotlib.pyplot as plt
import numpy as np

# The only lines that differ from a matterport script.
from bookseg.compat import (
    iaa,
    utils,
    visualize,
)
from bookseg.compat import model as modellib
from bookseg.compat.config import Config

ROOT_DIR = os.path.abspath(os.getcwd())
COCO_WEIGHTS_PATH = os.path.join(ROOT_DIR, "mask_rcnn_coco.h5")
DEFAULT_LOGS_DIR = os.path.join(ROOT_DIR, "logs")

############################################################
#  Configurations
############################################################


class BookConfig(Config):
    """Configuration for training on book outlines."""

    NAME = "book"
    IMAGES_PER_GPU = 2
    NUM_CLASSES = 1 + 1  # background + book
    STEPS_PER_EPOCH = 100
    VALIDATION_STEPS = 10
    DETECTION_MIN_CONFIDENCE = 0.9
    IMAGE_MIN_DIM = 512
    IMAGE_MAX_DIM = 512


class TinyBookConfig(BookConfig):
    """A small CPU model (bookseg's tiny backbone, 64 px) for smoke runs."""

    BACKBONE = "tiny"
    NORM = "batch_norm"  # from scratch: real batch statistics
    TINY_CHANNELS = (8, 16, 32, 64)
    IMAGE_MIN_DIM = 64
    IMAGE_MAX_DIM = 64
    RPN_ANCHOR_SCALES = (8, 16, 32, 64, 128)
    TOP_DOWN_PYRAMID_SIZE = 32
    RPN_CONV_CHANNELS = 32
    FPN_CLASSIF_FC_LAYERS_SIZE = 64
    MASK_HEAD_CHANNELS = 16
    RPN_TRAIN_ANCHORS_PER_IMAGE = 64
    PRE_NMS_LIMIT = 500
    POST_NMS_ROIS_TRAINING = 100
    POST_NMS_ROIS_INFERENCE = 50
    TRAIN_ROIS_PER_IMAGE = 32
    MAX_GT_INSTANCES = 20
    MINI_MASK_SHAPE = (28, 28)
    DETECTION_MAX_INSTANCES = 20
    DETECTION_MIN_CONFIDENCE = 0.0
    STEPS_PER_EPOCH = 2
    VALIDATION_STEPS = 1


############################################################
#  Dataset
############################################################


class BookDataset(utils.Dataset):
    def load_book(self, annotation_path, subset):
        """Load a subset of a VIA-annotated book data set.

        annotation_path: VIA 1 export (`via_region_data.json`) or VIA 2 project file.
        subset: "train" (4 of every 5 images) or "val" (the fifth).
        """
        self.add_class("book", 1, "book")
        assert subset in ["train", "val"]
        dataset_dir = os.path.dirname(annotation_path)
        with open(annotation_path) as f:
            annotations = json.load(f)
        annotations = annotations.get("_via_img_metadata", annotations)  # VIA 2 project file
        annotations = [a for a in annotations.values() if a["regions"]]  # skip unannotated images
        for index, a in enumerate(annotations):
            if (index % 5 == 4) != (subset == "val"):
                continue
            regions = a["regions"].values() if isinstance(a["regions"], dict) else a["regions"]
            polygons = [r["shape_attributes"] for r in regions]
            image_path = os.path.join(dataset_dir, a["filename"])
            if not os.path.exists(image_path):
                image_path = os.path.join(dataset_dir, "images", a["filename"])
            height, width = cv2.imread(image_path).shape[:2]
            self.add_image(
                "book", image_id=a["filename"], path=image_path, width=width, height=height, polygons=polygons
            )

    def load_mask(self, image_id):
        """Instance masks of an image: bool [height, width, instances], and class ids [instances]."""
        info = self.image_info[image_id]
        if info["source"] != "book":
            return super().load_mask(image_id)
        mask = np.zeros([info["height"], info["width"], len(info["polygons"])], dtype=np.uint8)
        for i, p in enumerate(info["polygons"]):
            # Pixel centres inside the polygon (coordinates in 1/16 pixel).
            points = np.stack([p["all_points_x"], p["all_points_y"]], axis=1) - 0.5
            layer = np.zeros(mask.shape[:2], np.uint8)
            cv2.fillPoly(layer, [np.round(points * 16).astype(np.int32)], 1, lineType=cv2.LINE_8, shift=4)
            mask[:, :, i] = layer
        return mask.astype(bool), np.ones([mask.shape[-1]], dtype=np.int32)

    def image_reference(self, image_id):
        info = self.image_info[image_id]
        return info["path"] if info["source"] == "book" else super().image_reference(image_id)


def synthetic_dataset(logs):
    """The built-in synthetic shelves (40 images, 256 px), generated once into `logs`."""
    from bookseg.data.synthetic import synthetic_dataset_path

    return str(synthetic_dataset_path(os.path.join(logs, "synthetic_shelves"), 40))


def train(model, config, annotation_path, heads_epochs, all_epochs):
    """Train the heads, then all layers."""
    dataset_train = BookDataset()
    dataset_train.load_book(annotation_path, "train")
    dataset_train.prepare()
    dataset_val = BookDataset()
    dataset_val.load_book(annotation_path, "val")
    dataset_val.prepare()

    augmentation = iaa.Sometimes(
        0.8, [iaa.Fliplr(0.5), iaa.OneOf([iaa.Multiply((0.8, 1.2)), iaa.GaussianBlur(sigma=(0.0, 1.0))])]
    )
    print("Training network heads")
    model.train(
        dataset_train,
        dataset_val,
        learning_rate=config.LEARNING_RATE,
        epochs=heads_epochs,
        layers="heads",
        augmentation=augmentation,
    )
    print("Fine tune all layers")
    model.train(
        dataset_train,
        dataset_val,
        learning_rate=config.LEARNING_RATE / 10,
        epochs=heads_epochs + all_epochs,
        layers="all",
        augmentation=augmentation,
    )


def detect_and_draw(model, image_path, out_path):
    """Detect books in an image and save the `display_instances` drawing to out_path."""
    image = cv2.cvtColor(cv2.imread(image_path), cv2.COLOR_BGR2RGB)
    r = model.detect([image], verbose=1)[0]
    figure = visualize.display_instances(
        image,
        r["rois"],
        r["masks"],
        r["class_ids"],
        ["BG", "book"],
        r["scores"],
        title=os.path.basename(image_path),
    )
    figure.savefig(out_path, bbox_inches="tight")
    plt.close(figure)
    print(f"{len(r['class_ids'])} books; saved to {out_path}")
    return r


############################################################
#  Command line
############################################################


def main(argv=None):
    parser = argparse.ArgumentParser(description="Train Mask R-CNN to outline books.")
    parser.add_argument("command", metavar="<command>", help="'train' or 'detect'")
    parser.add_argument("--dataset", default="synthetic", help="VIA file, or 'synthetic'")
    parser.add_argument(
        "--weights", default="none", help="Path to weights .h5 file or 'coco', 'last', 'none'"
    )
    parser.add_argument("--logs", default=DEFAULT_LOGS_DIR, help="Logs and checkpoints directory")
    parser.add_argument("--image", help="Image to detect books in (detect; default: a validation image)")
    parser.add_argument(
        "--out", default=None, help="Where detect saves the drawing (default: logs/detection.png)"
    )
    parser.add_argument("--heads-epochs", type=int, default=20)
    parser.add_argument("--all-epochs", type=int, default=10)
    parser.add_argument("--tiny", action="store_true", help="Small CPU model for smoke runs")
    args = parser.parse_args(argv)

    annotation_path = synthetic_dataset(args.logs) if args.dataset == "synthetic" else args.dataset
    if args.command == "train":
        config = TinyBookConfig() if args.tiny else BookConfig()
    else:

        class InferenceConfig(TinyBookConfig if args.tiny else BookConfig):
            GPU_COUNT = 1
            IMAGES_PER_GPU = 1

        config = InferenceConfig()
    config.display()

    mode = "training" if args.command == "train" else "inference"
    model = modellib.MaskRCNN(mode=mode, config=config, model_dir=args.logs)
    if args.weights.lower() == "coco":
        if not os.path.exists(COCO_WEIGHTS_PATH):
            utils.download_trained_weights(COCO_WEIGHTS_PATH)
        # The class-specific heads differ in size: leave them out.
        model.load_weights(
            COCO_WEIGHTS_PATH,
            by_name=True,
            exclude=["mrcnn_class_logits", "mrcnn_bbox_fc", "mrcnn_bbox", "mrcnn_mask"],
        )
    elif args.weights.lower() == "last":
        model.load_weights(model.find_last(), by_name=True)
    elif args.weights.lower() != "none":
        model.load_weights(args.weights, by_name=True)

    if args.command == "train":
        train(model, config, annotation_path, args.heads_epochs, args.all_epochs)
    elif args.command == "detect":
        image_path = args.image
        if image_path is None:
            dataset_val = BookDataset()
            dataset_val.load_book(annotation_path, "val")
            dataset_val.prepare()
            image_path = dataset_val.image_info[0]["path"]
        detect_and_draw(model, image_path, args.out or os.path.join(args.logs, "detection.png"))
    else:
        print(f"'{args.command}' is not recognized. Use 'train' or 'detect'")
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
