"""Downloads with a progress bar, checksum, atomic write and a clear offline error.

Used for Matterport's ``mask_rcnn_coco.h5`` and by the samples (COCO archives).
Every URL can be overridden (argument or environment variable) so tests can serve
files from 127.0.0.1.
"""
from __future__ import annotations

import hashlib
import logging
import os
import tempfile
import urllib.error
import urllib.request
from typing import Callable, Optional

logger = logging.getLogger("mrcnn.io")

COCO_MODEL_URL = "https://github.com/matterport/Mask_RCNN/releases/download/v2.0/mask_rcnn_coco.h5"
#: SHA-256 of Matterport's release file. Matterport never published one and this project's
#: build machine has no internet access to measure it, so it is unset here; pass
#: ``sha256=`` or set ``MRCNN_COCO_SHA256`` to enforce it. The file is always checked
#: structurally (HDF5 with Mask R-CNN layer names) after download.
COCO_MODEL_SHA256: Optional[str] = os.environ.get("MRCNN_COCO_SHA256") or None

OFFLINE_HELP = (
    "Could not download {what} from {url}: {reason}.\n"
    "If this machine is offline, download the file elsewhere ({url}) and pass its local path, e.g.\n"
    "    model.load_weights('/path/to/mask_rcnn_coco.h5', by_name=True)\n"
    "or for the samples: --weights /path/to/mask_rcnn_coco.h5. See mask_rcnn_coco.h5.txt in the repository."
)


class DownloadError(RuntimeError):
    """A download failed (offline, HTTP error, checksum mismatch, bad content)."""


def sha256_of(path: str, chunk: int = 1 << 20) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(chunk), b""):
            h.update(block)
    return h.hexdigest()


def download_file(url: str, dest: str, sha256: Optional[str] = None, progress: bool = True,
                  what: Optional[str] = None, timeout: float = 60.0,
                  validate: Optional[Callable[[str], None]] = None) -> str:
    """Download ``url`` to ``dest`` atomically.

    The bytes go to a temporary file in the destination folder, are checked
    (``sha256`` if given, then ``validate(tmp_path)`` if given) and only then renamed
    onto ``dest``; on any failure the temporary file is removed, so no half file is
    ever left at ``dest``.

    Raises:
        DownloadError: with what to do when offline, on HTTP errors, bad checksum or content.
    """
    what = what or os.path.basename(dest)
    dest = os.path.abspath(dest)
    os.makedirs(os.path.dirname(dest), exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix="." + os.path.basename(dest) + ".", suffix=".part", dir=os.path.dirname(dest))
    try:
        try:
            response = urllib.request.urlopen(url, timeout=timeout)
        except (urllib.error.URLError, OSError, ValueError) as exc:
            reason = getattr(exc, "reason", exc)
            raise DownloadError(OFFLINE_HELP.format(what=what, url=url, reason=reason)) from exc
        with response, os.fdopen(fd, "wb") as out:
            fd = None
            total = int(response.headers.get("Content-Length") or 0) or None
            bar = _progress(total, what) if progress else None
            digest = hashlib.sha256()
            while True:
                block = response.read(1 << 16)
                if not block:
                    break
                out.write(block)
                digest.update(block)
                if bar is not None:
                    bar.update(len(block))
            if bar is not None:
                bar.close()
            out.flush()
            os.fsync(out.fileno())
        if total is not None and os.path.getsize(tmp) != total:
            raise DownloadError(f"Download of {what} from {url} was cut short: got {os.path.getsize(tmp)} "
                                f"of {total} bytes. Try again.")
        got = digest.hexdigest()
        if sha256 and got.lower() != sha256.lower():
            raise DownloadError(f"Checksum mismatch for {what} from {url}: expected SHA-256 {sha256}, got {got}. "
                                "The file was not saved.")
        if validate is not None:
            validate(tmp)
        os.replace(tmp, dest)
        tmp = None
        logger.info("Downloaded %s to %s (sha256 %s)", what, dest, got)
        return dest
    finally:
        if fd is not None:
            os.close(fd)
        if tmp is not None and os.path.exists(tmp):
            os.remove(tmp)


def _progress(total: Optional[int], what: str):
    try:
        from tqdm.auto import tqdm
    except ImportError:  # tqdm is a requirement, but a download must not fail for a progress bar
        return None
    return tqdm(total=total, unit="B", unit_scale=True, unit_divisor=1024, desc=what)


def check_mask_rcnn_h5(path: str) -> None:
    """Raise DownloadError unless ``path`` is an HDF5 weight file with Mask R-CNN layers."""
    import h5py

    try:
        with h5py.File(path, "r") as f:
            g = f["model_weights"] if "layer_names" not in f.attrs and "model_weights" in f else f
            names = [n.decode() if isinstance(n, bytes) else str(n) for n in g.attrs.get("layer_names", [])]
    except OSError as exc:
        raise DownloadError(f"{path} is not an HDF5 weight file ({exc})") from exc
    needed = {"conv1", "fpn_c5p5", "mrcnn_mask"}
    if not needed.issubset(names):
        raise DownloadError(f"{path} is HDF5 but not Mask R-CNN weights (missing layers {sorted(needed - set(names))})")


def download_trained_weights(coco_model_path: str, verbose: int = 1, url: Optional[str] = None,
                             sha256: Optional[str] = None) -> str:
    """Download Matterport's COCO-trained weights to ``coco_model_path``.

    Args:
        coco_model_path: where to write ``mask_rcnn_coco.h5``.
        verbose: 0 silences the progress bar and messages.
        url: defaults to ``$MRCNN_COCO_URL`` or :data:`COCO_MODEL_URL`.
        sha256: expected SHA-256; defaults to ``$MRCNN_COCO_SHA256`` (see :data:`COCO_MODEL_SHA256`).
    Returns:
        The path written.
    """
    url = url or os.environ.get("MRCNN_COCO_URL") or COCO_MODEL_URL
    sha256 = sha256 or os.environ.get("MRCNN_COCO_SHA256") or COCO_MODEL_SHA256
    if verbose > 0:
        print(f"Downloading pretrained model to {coco_model_path} ...")
    path = download_file(url, coco_model_path, sha256=sha256, progress=verbose > 0,
                         what="mask_rcnn_coco.h5", validate=check_mask_rcnn_h5)
    if verbose > 0:
        print(f"... done downloading pretrained model! SHA-256: {sha256_of(path)}")
    return path
