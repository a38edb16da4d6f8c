"""matterport's `utils.Dataset`: classes and images registered per source, masks from `load_mask`.

Subclass it, call `add_class` / `add_image` in your own `load_*` method, override `load_mask` (and
`image_reference`, and `load_image` if images do not come from `path`), then call `prepare()`.

Conventions (matterport's): class id 0 is the background "BG"; internal class and image ids are
0..n-1 in registration order; "source.id" strings map a source's own ids to internal ones.
`load_image` returns uint8 [H, W, 3] RGB (EXIF orientation applied, as annotation tools display
photos); `load_mask` returns bool [H, W, N] instance masks and int32 [N] internal class ids.
"""

from __future__ import annotations

import logging

import numpy as np

from bookseg.data.images import load_image_rgb

log = logging.getLogger(__name__)


class Dataset:
    """Base class of a matterport-style data set (see the module docstring).

    Attributes (after `prepare`): num_classes, class_ids int [num_classes], class_names, num_images,
    image_ids (property) int [num_images], sources, source_class_ids {source: [internal class ids,
    background included]}, class_from_source_map and image_from_source_map {"source.id": internal id}.
    """

    def __init__(self, class_map=None):
        del class_map  # accepted for matterport signature compatibility; unused there too
        self._image_ids: np.ndarray = np.zeros(0, np.int64)
        self.image_info: list[dict] = []
        self.class_info: list[dict] = [{"source": "", "id": 0, "name": "BG"}]
        self.source_class_ids: dict[str, list[int]] = {}

    def add_class(self, source: str, class_id: int, class_name: str) -> None:
        """Register class `class_id` of `source` (ignored if already registered)."""
        if "." in source:
            raise ValueError(f"source names cannot contain a dot: {source!r}")
        for info in self.class_info:
            if info["source"] == source and info["id"] == class_id:
                return
        self.class_info.append({"source": source, "id": class_id, "name": class_name})

    def add_image(self, source: str, image_id, path, **kwargs) -> None:
        """Register an image; `kwargs` (e.g. polygons, width, height) are kept in its `image_info`."""
        self.image_info.append({"id": image_id, "source": source, "path": path, **kwargs})

    def image_reference(self, image_id: int) -> str:
        """A link or name of the image for messages; override to return something useful."""
        return ""

    def prepare(self, class_map=None) -> None:
        """Build the internal id tables; call after registering classes and images, before use."""
        del class_map
        self.num_classes = len(self.class_info)
        self.class_ids = np.arange(self.num_classes)
        # matterport keeps only the text before the first comma ("person, people" -> "person").
        self.class_names = [info["name"].split(",")[0] for info in self.class_info]
        self.num_images = len(self.image_info)
        self._image_ids = np.arange(self.num_images)
        self.class_from_source_map = {
            f"{info['source']}.{info['id']}": index for index, info in enumerate(self.class_info)
        }
        self.image_from_source_map = {
            f"{info['source']}.{info['id']}": index for index, info in enumerate(self.image_info)
        }
        self.sources = sorted({info["source"] for info in self.class_info})
        self.source_class_ids = {
            source: [i for i, info in enumerate(self.class_info) if i == 0 or info["source"] == source]
            for source in self.sources
        }

    def map_source_class_id(self, source_class_id: str) -> int:
        """Internal class id of "source.class_id" (e.g. "coco.12")."""
        return self.class_from_source_map[source_class_id]

    def get_source_class_id(self, class_id: int, source: str):
        """The source's own id of internal class `class_id`."""
        info = self.class_info[class_id]
        if info["source"] != source:
            raise ValueError(f"class {class_id} comes from source {info['source']!r}, not {source!r}")
        return info["id"]

    @property
    def image_ids(self) -> np.ndarray:
        return self._image_ids

    def source_image_link(self, image_id: int):
        """Path or URL of the image file."""
        return self.image_info[image_id]["path"]

    def load_image(self, image_id: int) -> np.ndarray:
        """uint8 [H, W, 3] RGB pixels of `image_info[image_id]["path"]` (gray and alpha converted)."""
        return load_image_rgb(self.image_info[image_id]["path"])

    def load_mask(self, image_id: int) -> tuple[np.ndarray, np.ndarray]:
        """Override: bool [H, W, N] instance masks and int32 [N] internal class ids of an image.

        This default returns no instances (matterport's default too) and warns once.
        """
        log.warning("Dataset.load_mask is not overridden: image %s gets no instances", image_id)
        return np.empty((0, 0, 0), bool), np.empty(0, np.int32)

    def active_class_ids(self, image_id: int, num_classes: int) -> np.ndarray:
        """int32 [num_classes]: 1 for the classes of the image's source (matterport's per-source mask)."""
        active = np.zeros(num_classes, np.int32)
        source = self.image_info[image_id]["source"]
        ids = self.source_class_ids.get(source, range(num_classes))
        active[[i for i in ids if i < num_classes]] = 1
        return active
