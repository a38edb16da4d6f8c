"""What `train(augmentation=...)` and `load_image_gt(augmentation=...)` accept, as one bookseg `Augmenter`.

Accepted: None; an `iaa` augmenter; an albumentations transform; a list of those (applied in order);
or a ready `bookseg.data.augment.Augmenter`. The result moves masks with the image pixel-exactly
(nearest-neighbour, zero fill) and drops instances pushed out of the frame.
"""

from __future__ import annotations

from bookseg.compat.iaa.base import as_transform
from bookseg.data.augment import Augmenter


def as_augmenter(augmentation, seed: int | None = None) -> Augmenter | None:
    """The bookseg `Augmenter` running `augmentation` (None for None or an empty list)."""
    if augmentation is None or isinstance(augmentation, Augmenter):
        return augmentation
    items = augmentation if isinstance(augmentation, list | tuple) else [augmentation]
    if not items:
        return None
    return Augmenter([as_transform(item) for item in items], seed=seed)
