"""matterport's `utils.download_trained_weights`: `mask_rcnn_coco.h5`, through bookseg's pinned download.

The file comes from the URL pinned in `bookseg.mrcnn.pretrained.PINNED["coco"]` (or the mirror in
`$BOOKSEG_WEIGHTS_URL_BASE`), streamed into a temporary name and renamed into place when complete; its
SHA-256 is recorded next to it (`<file>.sha256`) and checked on later calls. Offline, the error says
which URL failed and where to put the file by hand.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

from bookseg.mrcnn.pretrained import PINNED, WeightsSourceError, download_url, fetch

COCO_MODEL_URL = PINNED["coco"].url


def download_trained_weights(coco_model_path, verbose: int = 1) -> str:
    """Download matterport's COCO-trained weights to `coco_model_path` (kept if already there).

    Raises:
        WeightsSourceError: the download failed (offline, HTTP error, truncated file) or a file
            already there does not match its recorded digest; the message gives the URL and the path.
    """
    path = Path(coco_model_path).expanduser().resolve()
    entry = dataclasses.replace(PINNED["coco"], file_name=path.name)
    if verbose and not path.is_file():
        print(f"Downloading pretrained model to {path} from {download_url(entry)} ...")
    try:
        result = fetch(entry, path.parent, label="download_trained_weights")
    except WeightsSourceError as error:
        raise WeightsSourceError(f"download_trained_weights({str(coco_model_path)!r}): {error}") from error
    if verbose:
        print("... done downloading pretrained model!")
    return str(result)
