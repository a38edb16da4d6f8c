"""Named starting weights of the model layer: `model.weights` = a path | `coco` | `imagenet`, as a local file.

* `coco`: matterport's `mask_rcnn_coco.h5` (ResNet-101 Mask R-CNN trained on COCO, legacy h5 layout).
* `imagenet`: Keras' ImageNet ResNet "notop" h5 of `model.backbone` (resnet50 or resnet101; `tiny` has none).
* anything else: a path to an h5 file, as before.

`run:<run id>` (the weights a bookseg MLflow run logged) is a name too (`is_named`), but it is resolved
above the model layer, by `bookseg.inference.starting_weights`, which hands everything else to `weights_file`.

Downloaded files live in `weights_cache_dir()` (`$BOOKSEG_CACHE/weights`, default `./.cache/bookseg/weights`),
fetched once with a progress bar into a temporary name and renamed only after their digest matched, then
reused (and checked again) on later runs. Every downloadable file is pinned in `PINNED`, the one place that
says where a name comes from and what its bytes must hash to. `$BOOKSEG_WEIGHTS_URL_BASE` replaces each
URL's part before the file name (a mirror, or a local server in tests).
"""

from __future__ import annotations

import hashlib
import http.client
import os
import sys
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path

URL_BASE_ENV = "BOOKSEG_WEIGHTS_URL_BASE"
CACHE_ENV = "BOOKSEG_CACHE"  # the data cache's variable too (`data.cache_dir`)
RUN_PREFIX = "run:"
IMAGENET_BACKBONES = ("resnet50", "resnet101")
DOWNLOAD_TIMEOUT = 60  # seconds without a byte before a download is given up
_CHUNK = 1 << 20


class WeightsSourceError(ValueError):
    """`model.weights` names something that cannot be turned into a usable local file (the message says what to do)."""


@dataclass(frozen=True)
class PinnedFile:
    """One downloadable weights file.

    Attributes:
        url: where it is published.
        algorithm: `hashlib` name of `digest` ("md5", "sha256"), or None when the publisher gives no digest.
        digest: expected hex digest, or None (unpinned: the SHA-256 of the first download is recorded next to
            the file, `<file>.sha256`, and later uses are checked against it).
        file_name: name in the cache folder.
    """

    url: str
    algorithm: str | None
    digest: str | None
    file_name: str

    @property
    def pinned(self) -> bool:
        return bool(self.algorithm and self.digest)

    def expected(self) -> str:
        """The expected digest as a message shows it."""
        if self.pinned:
            return f"{self.algorithm} {self.digest}"
        return "none pinned (the publisher gives no digest; the first file's sha256 is recorded and checked later)"


_KERAS_RESNET = "https://storage.googleapis.com/tensorflow/keras-applications/resnet/"

# Every named file. The ResNet digests are the MD5s Keras itself verifies when it downloads these files
# (keras/src/applications/resnet.py, WEIGHTS_HASHES[<model>][1], the "notop" entry). matterport published
# no digest for mask_rcnn_coco.h5, so that entry is unpinned: see `PinnedFile.digest`.
PINNED: dict[str, PinnedFile] = {
    "coco": PinnedFile(
        url="https://github.com/matterport/Mask_RCNN/releases/download/v2.0/mask_rcnn_coco.h5",
        algorithm=None,
        digest=None,
        file_name="mask_rcnn_coco.h5",
    ),
    "imagenet/resnet50": PinnedFile(
        url=_KERAS_RESNET + "resnet50_weights_tf_dim_ordering_tf_kernels_notop.h5",
        algorithm="md5",
        digest="4d473c1dd8becc155b73f8504c6f6626",
        file_name="resnet50_weights_tf_dim_ordering_tf_kernels_notop.h5",
    ),
    "imagenet/resnet101": PinnedFile(
        url=_KERAS_RESNET + "resnet101_weights_tf_dim_ordering_tf_kernels_notop.h5",
        algorithm="md5",
        digest="88cf7a10940856eca736dc7b7e228a21",
        file_name="resnet101_weights_tf_dim_ordering_tf_kernels_notop.h5",
    ),
}


def weights_cache_dir() -> Path:
    """Folder of downloaded weights: `$BOOKSEG_CACHE/weights`, default `./.cache/bookseg/weights`."""
    base = os.environ.get(CACHE_ENV) or str(Path.cwd() / ".cache" / "bookseg")
    return Path(base).expanduser() / "weights"


def download_url(entry: PinnedFile) -> str:
    """`entry.url`, or its file name under `$BOOKSEG_WEIGHTS_URL_BASE` when that is set."""
    base = os.environ.get(URL_BASE_ENV)
    if not base:
        return entry.url
    return base.rstrip("/") + "/" + entry.url.rsplit("/", 1)[-1]


def is_named(spec: str) -> bool:
    """True for `coco`, `imagenet` and `run:<id>` (names, not paths)."""
    return spec in ("coco", "imagenet") or spec.startswith(RUN_PREFIX)


def weights_file(spec: str, *, backbone: str, cache_dir: Path) -> tuple[Path, str]:
    """The local file behind `coco`, `imagenet` or a path, downloading a named one on first use, and its
    human-readable origin (printed when the weights are loaded).

    Args:
        spec: `coco`, `imagenet`, or a path to an h5 file.
        backbone: `model.backbone` (chooses the ImageNet file).
        cache_dir: download folder (normally `weights_cache_dir()`).

    Raises:
        WeightsSourceError: no such file, a backbone without ImageNet weights, a failed or corrupt download.
    """
    if spec in ("coco", "imagenet"):
        entry = PINNED["coco" if spec == "coco" else imagenet_key(backbone)]
        path = fetch(entry, cache_dir, label=f"model.weights={spec}")
        return path, f"{spec} ({path}, from {download_url(entry)})"
    path = Path(spec).expanduser()
    if not path.is_file():
        raise WeightsSourceError("no such file (give an h5 file, or coco | imagenet | run:<run id>)")
    return path, f"file {path}"


def imagenet_key(backbone: str) -> str:
    """`PINNED` key of the ImageNet weights of `backbone`."""
    if backbone not in IMAGENET_BACKBONES:
        raise WeightsSourceError(
            f"model.backbone={backbone} has no ImageNet weights (only {' and '.join(IMAGENET_BACKBONES)} do): use "
            "model=resnet50 or model=resnet101, or train from scratch (model.weights=null model.norm=batch_norm)"
        )
    return f"imagenet/{backbone}"


# ------------------------------------------------------------------------------------------ downloads


def fetch(entry: PinnedFile, cache_dir: Path, label: str = "model.weights") -> Path:
    """`entry`'s file in `cache_dir`: checked when present, else downloaded, checked and renamed into place."""
    path = Path(cache_dir) / entry.file_name
    if path.is_file():
        _check_cached(entry, path, label)
        return path
    path.parent.mkdir(parents=True, exist_ok=True)
    url = download_url(entry)
    part = path.with_name(f".{entry.file_name}.{os.getpid()}.part")
    try:
        digests = _download(url, part, entry, path)
        _check_download(entry, digests, url, path)
        if not entry.pinned:
            _record_sha256(path, digests["sha256"], label)
        os.replace(part, path)
    finally:
        part.unlink(missing_ok=True)
    return path


def _download(url: str, part: Path, entry: PinnedFile, path: Path) -> dict[str, str]:
    """Stream `url` into `part` with a progress bar; returns hex digests by algorithm (always sha256)."""
    from tqdm import tqdm

    hashers = {"sha256": hashlib.sha256()}
    if entry.algorithm:
        hashers[entry.algorithm] = hashlib.new(entry.algorithm, usedforsecurity=False)
    request = urllib.request.Request(url, headers={"User-Agent": "bookseg"})
    received = 0
    try:
        with urllib.request.urlopen(request, timeout=DOWNLOAD_TIMEOUT) as response, open(part, "wb") as out:
            length = response.headers.get("Content-Length")
            total = int(length) if length and length.isdigit() else None
            with tqdm(
                total=total,
                unit="B",
                unit_scale=True,
                unit_divisor=1024,
                desc=entry.file_name,
                file=sys.stderr,
                mininterval=1.0,
            ) as bar:
                while chunk := response.read(_CHUNK):
                    out.write(chunk)
                    for hasher in hashers.values():
                        hasher.update(chunk)
                    received += len(chunk)
                    bar.update(len(chunk))
    except (OSError, http.client.HTTPException) as error:  # URLError / HTTPError / timeouts are OSErrors
        raise _fetch_error(entry, url, path, f"download failed ({_reason(error)})") from error
    if total is not None and received != total:
        raise _fetch_error(entry, url, path, f"download truncated: {received} of {total} bytes arrived")
    return {name: hasher.hexdigest() for name, hasher in hashers.items()}


def _reason(error: Exception) -> str:
    """Why a download failed, in a few words: "HTTP 404 Not Found", "URLError: [Errno 111] ...", ..."""
    if isinstance(error, urllib.error.HTTPError):
        return f"HTTP {error.code} {error.reason}"
    if isinstance(error, urllib.error.URLError):
        return f"URLError: {error.reason} (offline, or the server is unreachable?)"
    return f"{type(error).__name__}: {error}"


def _check_download(entry: PinnedFile, digests: dict[str, str], url: str, path: Path) -> None:
    if entry.pinned and digests[entry.algorithm] != entry.digest.lower():
        raise _fetch_error(
            entry,
            url,
            path,
            f"the downloaded file has {entry.algorithm} {digests[entry.algorithm]}, not the pinned digest "
            "(a corrupt download, or the file changed upstream)",
        )


def _check_cached(entry: PinnedFile, path: Path, label: str) -> None:
    """A file already in the cache (downloaded earlier or placed by hand) must still have its digest."""
    if entry.pinned:
        actual = file_digest(path, entry.algorithm)
        if actual != entry.digest.lower():
            raise WeightsSourceError(
                f"{path} has {entry.algorithm} {actual}, expected {entry.expected()}: delete it to "
                f"download it again from {download_url(entry)}, or replace it with the right file"
            )
        return
    record = sha256_record(path)
    actual = file_digest(path, "sha256")
    if not record.is_file():  # placed by hand: record it as a first download would
        _record_sha256(path, actual, label)
        return
    recorded = (record.read_text().split() or ["nothing"])[0].lower()
    if actual != recorded:
        raise WeightsSourceError(
            f"{path} has sha256 {actual}, but {recorded} was recorded in {record} when it first arrived: the "
            f"file changed. Delete both files to download it again from {download_url(entry)}, or restore the file"
        )


def _record_sha256(path: Path, digest: str, label: str) -> None:
    """Write `<file>.sha256` (sha256sum format) and say that the file is not verified against a pinned value."""
    record = sha256_record(path)
    tmp = record.with_name(f".{record.name}.{os.getpid()}.part")
    tmp.write_text(f"{digest}  {path.name}\n")
    os.replace(tmp, record)
    print(
        f"{label}: {path.name} has sha256 {digest}. Its publisher gives no digest, so this file is NOT verified "
        f"against a pinned value; the digest is recorded in {record} and later runs check the file against it.",
        file=sys.stderr,
        flush=True,
    )


def sha256_record(path: Path) -> Path:
    """Where the SHA-256 of an unpinned file is recorded: next to it, `<file>.sha256`."""
    return path.with_name(path.name + ".sha256")


def file_digest(path: Path, algorithm: str) -> str:
    """Hex digest of a file, read in chunks."""
    hasher = hashlib.new(algorithm, usedforsecurity=False)
    with open(path, "rb") as f:
        while chunk := f.read(_CHUNK):
            hasher.update(chunk)
    return hasher.hexdigest()


def _fetch_error(entry: PinnedFile, url: str, path: Path, reason: str) -> WeightsSourceError:
    return WeightsSourceError(
        f"cannot get {entry.file_name}: {reason}.\n"
        f"    URL: {url}\n"
        f"    expected digest: {entry.expected()}\n"
        f"    Download it another way and put it at {path}, then run the command again."
    )
