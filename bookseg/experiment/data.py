"""Load the data set a config names (synthetic, VIA, COCO, LabelMe), assign fold groups, fingerprint it."""

from __future__ import annotations

import hashlib
from pathlib import Path

from omegaconf import DictConfig

from bookseg.data.folds import assign_groups
from bookseg.data.readers import Dataset, load_dataset


def load_data(cfg: DictConfig) -> Dataset:
    """Read `cfg.data` through the common reader path and set each record's fold group."""
    d = cfg.data
    if d.kind == "synthetic":
        from bookseg.data.synthetic import synthetic_dataset_path

        s = d.synthetic
        path = synthetic_dataset_path(Path(d.cache_dir), s.n_images, s.seed, (s.height, s.width))
        dataset = load_dataset(path)
    else:
        dataset = load_dataset(
            Path(d.path).expanduser(),
            format=d.kind,  # data=coco on a VIA file is an error, not a silent switch
            images_dir=Path(d.images_dir).expanduser() if d.images_dir else None,
            class_attribute=d.class_attribute,
            default_class=d.default_class,
        )
    assign_groups(dataset.records, regex=d.group_regex, attribute=d.group_attribute)
    return dataset


def fingerprint(dataset: Dataset) -> str:
    """Hash of the records: image names, byte sizes and sizes, groups and annotations.

    Image contents are not read (too slow for large sets): an image edited in place to the same byte
    size keeps the fingerprint.
    """
    h = hashlib.sha1()
    for record in sorted(dataset.records, key=lambda r: r.image_id):
        size = Path(record.path).stat().st_size
        h.update(f"{record.image_id}|{size}|{record.width}x{record.height}|{record.group}".encode())
        for inst in record.instances:
            h.update(inst.class_name.encode())
            if inst.polygon is not None:
                h.update(inst.polygon.astype("float32").tobytes())
            if inst.mask is not None:
                h.update(inst.mask.astype("uint8").tobytes())
    return h.hexdigest()[:16]
