"""matterport `mrcnn` API on bookseg: run matterport-style training scripts on TensorFlow 2.21 / Keras 3.

Change only the imports of a matterport script::

    from bookseg.compat.config import Config            # was: from mrcnn.config import Config
    from bookseg.compat import model as modellib, utils, visualize   # was: from mrcnn import ...
    from bookseg.compat import iaa                      # was: import imgaug.augmenters as iaa

Everything runs on bookseg's own network (`bookseg.mrcnn`), input code, training loop and
matterport-style evaluation; docs/migrating-from-matterport.md lists what differs.
"""

from bookseg.compat import config, iaa, model, utils, visualize
from bookseg.compat.config import Config

modellib = model

__all__ = ["Config", "config", "iaa", "model", "modellib", "utils", "visualize"]
