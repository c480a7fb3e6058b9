"""The ``Dataset`` base class (Matterport's ``utils.Dataset`` API) and image reading.

A dataset registers classes with :meth:`Dataset.add_class` and images with
:meth:`Dataset.add_image`, then :meth:`Dataset.prepare` assigns contiguous
internal ids. Class id 0 is always the background class ``"BG"`` of source
``""``. Subclasses override :meth:`Dataset.load_mask` (and optionally
:meth:`Dataset.load_image` / :meth:`Dataset.image_reference`)::

    class ShapesDataset(Dataset):
        def load_mask(self, image_id):
            ...
            return masks, class_ids      # bool [H, W, N], int32 [N]

Image arrays are ``uint8 [H, W, 3]`` RGB in pixel coordinates (row ``y``,
column ``x``); masks are ``bool [H, W, N]`` with one channel per instance.
"""
from __future__ import annotations

import logging
import os
from typing import Any, Dict, List, Optional, Sequence, Tuple

import numpy as np

__all__ = ["Dataset", "ImageLoadError", "read_image", "stack_masks", "to_rgb_uint8"]

logger = logging.getLogger(__name__)


class ImageLoadError(IOError):
    """An image file is missing, unreadable, truncated or has an unusable layout."""


# --------------------------------------------------------------------------------------------------
# Image reading
# --------------------------------------------------------------------------------------------------

def to_rgb_uint8(array: np.ndarray) -> np.ndarray:
    """Convert a decoded image array to ``uint8 [H, W, 3]`` RGB.

    - ``[H, W]`` or ``[H, W, 1]`` grey → the grey channel repeated 3 times;
      ``[H, W, 2]`` grey + alpha → grey repeated, alpha dropped;
      ``[H, W, 4]`` RGBA → alpha dropped (not composited: Matterport's behaviour).
    - ``bool`` → 0 / 255.
    - float whose finite values all lie in 0..1 → times 255 (skimage's float images);
      float or signed-integer values all in 0..255 → kept as 8-bit levels (rounded),
      so ``image.astype(float)`` of a uint8 image converts back to that image.
    - Anything else (uint16/uint32, other value ranges) is **min-max stretched**
      over the whole image (all channels together, so colour balance is kept)
      to 0..255. A right shift (``>> 8``) would keep absolute levels but turns
      typical microscopy (12-bit cameras, or the DSB2018 nuclei image whose
      uint16 values only reach 235) into an all-black picture; stretching keeps
      every image visible, at the cost of per-image rather than absolute
      intensities. A constant image becomes all zeros. NaNs become 0 (callers
      that must refuse them, ``detect`` and the training checks, do so first).

    Raises:
        ValueError: for arrays that are not 2-D or 3-D with 1 to 4 channels.
    """
    a = np.asarray(array)
    if a.ndim == 3 and a.shape[2] == 1:
        a = a[:, :, 0]
    if a.ndim == 3 and a.shape[2] == 2:
        a = a[:, :, 0]
    if a.ndim == 3 and a.shape[2] == 4:
        a = a[:, :, :3]
    if not (a.ndim == 2 or (a.ndim == 3 and a.shape[2] == 3)):
        raise ValueError(f"expected an image of shape [H, W] or [H, W, 1..4], got {a.shape}")
    a = _to_uint8(a)
    if a.ndim == 2:
        a = np.stack([a, a, a], axis=-1)
    return np.ascontiguousarray(a)


def _to_uint8(a: np.ndarray) -> np.ndarray:
    if a.dtype == np.uint8:
        return a
    if a.dtype == bool:
        return a.astype(np.uint8) * 255
    if a.dtype.kind not in "iuf":
        raise ValueError(f"image dtype {a.dtype} is not numeric")
    f = a.astype(np.float64)
    finite = np.isfinite(f)
    if not finite.any():
        return np.zeros(a.shape, np.uint8)
    lo, hi = float(f[finite].min()), float(f[finite].max())
    f = np.where(finite, f, 0.0 if lo >= 0 else lo)
    if a.dtype.kind == "f" and lo >= 0.0 and hi <= 1.0 and hi > 0.0:
        return np.round(f * 255.0).astype(np.uint8)
    if a.dtype.kind in "fi" and lo >= 0.0 and hi <= 255.0:
        return np.round(f).astype(np.uint8)
    if hi <= lo:
        return np.zeros(a.shape, np.uint8)
    # halves keep hi - lo finite for values near the float64 limits
    scale = 255.0 / (hi / 2 - lo / 2)
    return np.clip(np.round((f / 2 - lo / 2) * scale), 0, 255).astype(np.uint8)


def read_image(path: str, image_id: Any = None) -> np.ndarray:
    """Read an image file as ``uint8 [H, W, 3]`` RGB (see :func:`to_rgb_uint8`).

    Palette images are expanded through their palette; multi-page files give
    their first page. EXIF orientation is *not* applied: annotation tools and
    COCO store coordinates for the stored pixel grid, as Matterport read it.

    Raises:
        ImageLoadError: the file is missing, truncated, not an image, or has an
            unusable shape; the message names ``image_id`` (if given) and ``path``.
    """
    from PIL import Image, UnidentifiedImageError

    who = f"image {image_id}: " if image_id is not None else ""
    if not path or not os.path.isfile(path):
        raise ImageLoadError(f"{who}file not found: {path!r}")
    try:
        with Image.open(path) as im:
            im.load()  # decode now so truncated files fail here, not later
            array = _pil_to_array(im)
    except UnidentifiedImageError as e:
        array = _read_with_skimage(path, who, e)
    except (OSError, ValueError, SyntaxError) as e:
        raise ImageLoadError(f"{who}cannot read {path!r}: {e}") from e
    try:
        return to_rgb_uint8(array)
    except ValueError as e:
        raise ImageLoadError(f"{who}{path!r}: {e}") from e


def _pil_to_array(im) -> np.ndarray:
    if im.mode in ("P", "PA"):
        im = im.convert("RGBA" if "transparency" in im.info or im.mode == "PA" else "RGB")
    elif im.mode == "1":
        im = im.convert("L")
    elif im.mode in ("CMYK", "YCbCr", "LAB", "HSV", "RGBX", "RGBa", "La"):
        im = im.convert("RGB")
    elif im.mode.startswith("I;16"):
        # np.asarray on "I;16B" etc. gives the right values but keep it explicit and native-endian
        return np.asarray(im).astype(np.uint16)
    return np.asarray(im)


def _read_with_skimage(path: str, who: str, pil_error: Exception) -> np.ndarray:
    """Fallback for files Pillow cannot identify (e.g. some multi-channel 16-bit TIFFs)."""
    import warnings
    try:
        import skimage.io
        with warnings.catch_warnings():  # imageio warns while probing its plugins
            warnings.simplefilter("ignore")
            a = skimage.io.imread(path)
    except Exception as e:  # noqa: BLE001 — any reader failure means "not an image"
        raise ImageLoadError(f"{who}not a readable image: {path!r} ({pil_error}; {e})") from e
    # a multi-page stack [P, H, W] or [P, H, W, C]: keep the first page
    if a.ndim == 4 or (a.ndim == 3 and a.shape[2] > 4):
        a = a[0]
    return a


# --------------------------------------------------------------------------------------------------
# Dataset
# --------------------------------------------------------------------------------------------------

def _clean_name(name: str) -> str:
    """Matterport shortens names to the text before the first comma (COCO-style long names)."""
    return ",".join(name.split(",")[:1])


class Dataset(object):
    """Base class for datasets, with Matterport's ``utils.Dataset`` API.

    Add classes and images, call :meth:`prepare`, then use the internal ids
    (``0 .. num_images-1`` and ``0 .. num_classes-1``).

    Attributes after :meth:`prepare`:
        num_classes, class_ids (int array), class_names (list of str),
        num_images, image_ids / _image_ids (int array),
        class_from_source_map ("source.id" → internal class id),
        image_from_source_map ("source.id" → internal image id),
        sources (list of source names, "" for background included),
        source_class_ids (source → list of internal class ids, 0 included).
    """

    def __init__(self, class_map: Optional[Dict] = None):
        # class_map is accepted for compatibility; Matterport never used it either.
        self._image_ids: np.ndarray = np.zeros([0], dtype=int)
        self.image_info: List[Dict[str, Any]] = []
        self.class_info: List[Dict[str, Any]] = [{"source": "", "id": 0, "name": "BG"}]
        self.source_class_ids: Dict[str, List[int]] = {}

    # -- registration -------------------------------------------------------------------------------
    def add_class(self, source: str, class_id: int, class_name: str) -> None:
        """Register class ``class_id`` of ``source``; a repeated (source, id) is ignored.

        Raises:
            ValueError: if ``source`` contains a dot ("source.id" keys would be ambiguous).
        """
        if "." in source:
            raise ValueError(f"source name cannot contain a dot: {source!r}")
        for info in self.class_info:
            if info["source"] == source and info["id"] == class_id:
                if info["name"] != class_name:
                    logger.warning("class %s.%s already added as %r; ignoring new name %r",
                                   source, class_id, info["name"], class_name)
                return
        self.class_info.append({"source": source, "id": class_id, "name": class_name})

    def add_image(self, source: str, image_id: Any, path: Optional[str], **kwargs: Any) -> None:
        """Register an image; extra keyword arguments are stored in its ``image_info`` dict."""
        image_info = {"id": image_id, "source": source, "path": path}
        image_info.update(kwargs)
        self.image_info.append(image_info)

    def image_reference(self, image_id: int) -> str:
        """A link or description of the image for debugging; override it. Base: ``""``."""
        return ""

    # -- preparation --------------------------------------------------------------------------------
    def prepare(self, class_map: Optional[Dict] = None) -> None:
        """Build the internal id tables; call after adding all classes and images."""
        self.num_classes = len(self.class_info)
        self.class_ids = np.arange(self.num_classes)
        self.class_names = [_clean_name(c["name"]) for c in self.class_info]
        self.num_images = len(self.image_info)
        self._image_ids = np.arange(self.num_images)

        self.class_from_source_map = {f"{info['source']}.{info['id']}": int(i)
                                      for info, i in zip(self.class_info, self.class_ids)}
        self.image_from_source_map = {f"{info['source']}.{info['id']}": int(i)
                                      for info, i in zip(self.image_info, self._image_ids)}
        # first-seen order keeps the result deterministic (Matterport used an unordered set)
        self.sources = list(dict.fromkeys(c["source"] for c in self.class_info))
        self.source_class_ids = {}
        for source in self.sources:
            self.source_class_ids[source] = [i for i, info in enumerate(self.class_info)
                                             if i == 0 or info["source"] == source]

    def map_source_class_id(self, source_class_id: str) -> int:
        """Internal class id of a ``"source.id"`` string, e.g. ``"coco.12"``."""
        table = self._prepared("class_from_source_map")
        try:
            return table[source_class_id]
        except KeyError:
            raise KeyError(f"unknown class {source_class_id!r}; known: {sorted(table)[:20]}") from None

    def get_source_class_id(self, class_id: int, source: str) -> Any:
        """The source's own id of internal class ``class_id``; the class must belong to ``source``."""
        info = self.class_info[class_id]
        if info["source"] != source:
            raise ValueError(f"class {class_id} belongs to source {info['source']!r}, not {source!r}")
        return info["id"]

    def _prepared(self, attribute: str) -> Any:
        if not hasattr(self, attribute):
            raise RuntimeError(f"{type(self).__name__}.prepare() must be called first")
        return getattr(self, attribute)

    @property
    def image_ids(self) -> np.ndarray:
        """Internal image ids ``0 .. num_images-1`` (empty before :meth:`prepare`)."""
        return self._image_ids

    def source_image_link(self, image_id: int) -> Optional[str]:
        """Path or URL of the image in its source."""
        return self.image_info[image_id]["path"]

    # -- data ---------------------------------------------------------------------------------------
    def load_image(self, image_id: int) -> np.ndarray:
        """The image as ``uint8 [H, W, 3]`` RGB (see :func:`read_image` for conversions).

        Raises:
            ImageLoadError: missing or unreadable file, naming the image id and path.
        """
        info = self.image_info[image_id]
        label = f"{image_id} ({info['source']}.{info['id']})"
        return read_image(info["path"], image_id=label)

    def load_mask(self, image_id: int) -> Tuple[np.ndarray, np.ndarray]:
        """Instance masks ``bool [H, W, N]`` and class ids ``int32 [N]``; override it.

        The base version logs a warning and returns an empty ``[0, 0, 0]`` mask
        and no class ids, as Matterport's does. Negative class ids mark crowd
        regions that training excludes.
        """
        logger.warning("You are using the default load_mask(), maybe you need to define your own one.")
        return np.empty([0, 0, 0], dtype=bool), np.empty([0], np.int32)

    # -- conveniences (not in Matterport) -----------------------------------------------------------
    def __len__(self) -> int:
        return len(self.image_info)

    def __repr__(self) -> str:
        return (f"<{type(self).__name__}: {len(self.image_info)} images, "
                f"{len(self.class_info)} classes incl. BG>")


def stack_masks(masks: Sequence[np.ndarray], class_ids: Sequence[int],
                height: int, width: int) -> Tuple[np.ndarray, np.ndarray]:
    """Stack per-instance ``[H, W]`` masks into ``(bool [H, W, N], int32 [N])``; N may be 0."""
    if not masks:
        return np.zeros([height, width, 0], dtype=bool), np.zeros([0], np.int32)
    return (np.stack([np.asarray(m, dtype=bool) for m in masks], axis=-1),
            np.asarray(class_ids, dtype=np.int32))
