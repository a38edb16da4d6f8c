"""Data layer: readers for VIA / COCO / LabelMe, validation, synthetic shelves, folds, augmentation,
instance overlays (`viz`)."""
