"""Pieces shared by the format loaders: rasterisation, a kept/skipped report, class tables, splits.

Coordinates: annotation tools give ``x`` (column) and ``y`` (row) in pixels of
the stored image. Shapes are rasterised with :mod:`skimage.draw`, which fills
the pixels whose centres fall inside the shape, clipped to the image (points
outside the image are allowed; Matterport's balloon loader crashed on them).
"""
from __future__ import annotations

import logging
import math
from collections import Counter
from dataclasses import dataclass, field
from typing import Any, Dict, Hashable, Iterable, List, Optional, Sequence, Tuple

import numpy as np

__all__ = ["LoadReport", "polygon_mask", "box_mask", "circle_mask", "ellipse_mask",
           "split_ids", "select_subset", "ClassTable", "image_size"]

logger = logging.getLogger("mrcnn.data.formats")

# Per reason, how many skip messages go to the log at WARNING before the rest go to DEBUG.
_LOUD_MESSAGES = 10


# --------------------------------------------------------------------------------------------------
# Report
# --------------------------------------------------------------------------------------------------

@dataclass
class LoadReport:
    """What a loader kept and skipped, and why.

    ``kept`` counts things such as ``"images"`` and ``"instances"``; ``skipped``
    counts reasons (``"polygon with < 3 points"``, ``"missing image file"``...);
    ``ignored`` counts things dropped on purpose by the format's rules (line
    shapes, ``__ignore__`` regions, background categories); ``messages`` holds
    one line per skipped item naming the file and annotation.
    """
    format: str
    kept: Counter = field(default_factory=Counter)
    skipped: Counter = field(default_factory=Counter)
    ignored: Counter = field(default_factory=Counter)
    messages: List[str] = field(default_factory=list)

    def keep(self, what: str, n: int = 1) -> None:
        self.kept[what] += n

    def skip(self, reason: str, message: str, n: int = 1) -> None:
        """Count ``n`` items skipped for ``reason`` and log ``message`` (file + annotation)."""
        self.skipped[reason] += n
        self.messages.append(message)
        level = logging.WARNING if self.skipped[reason] <= _LOUD_MESSAGES else logging.DEBUG
        logger.log(level, "%s: %s", self.format, message)

    def ignore(self, what: str, n: int = 1) -> None:
        """Count something dropped by the format's own rules (not an error, not logged one by one)."""
        self.ignored[what] += n

    def summary(self) -> str:
        kept = ", ".join(f"{k} {v}" for k, v in self.kept.items()) or "nothing"
        skipped = ", ".join(f"{k}: {v}" for k, v in self.skipped.items()) or "nothing"
        text = f"{self.format}: kept {kept}; skipped {skipped}"
        if self.ignored:
            text += "; ignored " + ", ".join(f"{k}: {v}" for k, v in self.ignored.items())
        return text

    def log(self) -> None:
        logger.info(self.summary())

    def __str__(self) -> str:
        return self.summary()


# --------------------------------------------------------------------------------------------------
# Rasterisation (all return bool [H, W])
# --------------------------------------------------------------------------------------------------

def polygon_mask(xs: Sequence[float], ys: Sequence[float], shape: Tuple[int, int]) -> np.ndarray:
    """Fill a polygon given by vertex columns ``xs`` and rows ``ys``; clipped to ``shape`` (H, W).

    Raises:
        ValueError: fewer than 3 vertices, different lengths or non-finite values.
    """
    xs = np.asarray(xs, dtype=np.float64).ravel()
    ys = np.asarray(ys, dtype=np.float64).ravel()
    if xs.shape != ys.shape:
        raise ValueError(f"polygon has {xs.size} x and {ys.size} y coordinates")
    if xs.size < 3:
        raise ValueError(f"polygon has {xs.size} points, needs at least 3")
    if not (np.isfinite(xs).all() and np.isfinite(ys).all()):
        raise ValueError("polygon has non-finite coordinates")
    import skimage.draw
    mask = np.zeros(shape[:2], dtype=bool)
    rr, cc = skimage.draw.polygon(ys, xs, shape=shape[:2])
    mask[rr, cc] = True
    return mask


def box_mask(y1: float, x1: float, y2: float, x2: float, shape: Tuple[int, int]) -> np.ndarray:
    """Fill pixel rows ``[y1, y2)`` and columns ``[x1, x2)`` (y2/x2 exclusive), clipped to ``shape``.

    Fractional corners are rounded to the nearest pixel edge.
    """
    h, w = shape[:2]
    r1, r2 = (int(np.clip(round(v), 0, h)) for v in (min(y1, y2), max(y1, y2)))
    c1, c2 = (int(np.clip(round(v), 0, w)) for v in (min(x1, x2), max(x1, x2)))
    mask = np.zeros((h, w), dtype=bool)
    mask[r1:r2, c1:c2] = True
    return mask


def circle_mask(cx: float, cy: float, radius: float, shape: Tuple[int, int]) -> np.ndarray:
    """Fill a disk of centre (``cx`` column, ``cy`` row) and ``radius`` pixels, clipped to ``shape``."""
    return ellipse_mask(cx, cy, radius, radius, 0.0, shape)


def ellipse_mask(cx: float, cy: float, rx: float, ry: float, theta: float,
                 shape: Tuple[int, int]) -> np.ndarray:
    """Fill an ellipse with x radius ``rx``, y radius ``ry``, rotated by ``theta`` radians.

    A pixel is inside when its centre (integer ``x, y``, as for polygons) lies
    inside or **on** the ellipse, so a circle of integer radius keeps its four
    extreme pixels (skimage's ``ellipse``/``disk`` drop the boundary). ``theta``
    follows VIA's convention: it turns the x axis towards +y (clockwise on screen).
    """
    if not (rx > 0 and ry > 0):
        raise ValueError(f"ellipse/circle radius must be > 0, got rx={rx}, ry={ry}")
    h, w = shape[:2]
    mask = np.zeros((h, w), dtype=bool)
    r = max(rx, ry)
    y0, y1 = max(int(np.floor(cy - r)), 0), min(int(np.ceil(cy + r)) + 1, h)
    x0, x1 = max(int(np.floor(cx - r)), 0), min(int(np.ceil(cx + r)) + 1, w)
    if y0 >= y1 or x0 >= x1:
        return mask
    yy, xx = np.mgrid[y0:y1, x0:x1]
    dx, dy = xx - cx, yy - cy
    c, s = np.cos(theta), np.sin(theta)
    u, v = dx * c + dy * s, -dx * s + dy * c  # coordinates along the rotated axes
    mask[y0:y1, x0:x1] = (u / rx) ** 2 + (v / ry) ** 2 <= 1.0 + 1e-9
    return mask


# --------------------------------------------------------------------------------------------------
# Classes
# --------------------------------------------------------------------------------------------------

class ClassTable:
    """Maps annotation labels to a loader's source class ids 1..K.

    With ``names`` given, only those labels are accepted (in that order);
    otherwise labels are discovered: collect them with :meth:`see`, then
    :meth:`freeze` sorts them so ids do not depend on file order.
    """

    def __init__(self, names: Optional[Sequence[str]] = None):
        self.fixed = names is not None
        self.names: List[str] = list(dict.fromkeys(names)) if names is not None else []
        self._seen: Dict[str, None] = {}

    def see(self, label: str) -> None:
        if not self.fixed:
            self._seen[label] = None

    def freeze(self) -> None:
        if not self.fixed:
            self.names = sorted(self._seen)
            self.fixed = True

    def id_of(self, label: str) -> Optional[int]:
        """Source class id (1-based) of ``label``, or None if it is not a known class."""
        try:
            return self.names.index(label) + 1
        except ValueError:
            return None

    def register(self, dataset: Any, source: str) -> None:
        for i, name in enumerate(self.names, start=1):
            dataset.add_class(source, i, name)


# --------------------------------------------------------------------------------------------------
# Splits
# --------------------------------------------------------------------------------------------------

def split_ids(ids: Iterable[Hashable], val_fraction: float = 0.2, seed: int = 0,
              groups: Optional[Dict[Hashable, Hashable]] = None) -> Tuple[List, List]:
    """Reproducible train/val split of image ids.

    Ids are sorted (by ``str``) before a seeded shuffle, so the result depends
    only on the set of ids, ``val_fraction`` and ``seed`` — not on file-system
    order. With ``groups`` (id → group, e.g. class), each group is split on its
    own (stratified) and every group with ≥ 2 ids gets ≥ 1 validation id when
    ``val_fraction > 0``.

    Returns:
        (train_ids, val_ids), each sorted like the input ordering rule.
    """
    if not 0.0 <= val_fraction <= 1.0:
        raise ValueError(f"val_fraction must be in [0, 1], got {val_fraction}")
    ids = sorted(set(ids), key=str)
    by_group: Dict[Hashable, List] = {}
    for i in ids:
        by_group.setdefault(groups.get(i) if groups else None, []).append(i)
    rng = np.random.default_rng(seed)
    val: set = set()
    for g in sorted(by_group, key=str):
        members = by_group[g]
        n_val = int(round(len(members) * val_fraction))
        if groups and val_fraction > 0 and len(members) >= 2:
            n_val = max(n_val, 1)
        order = rng.permutation(len(members))
        val.update(members[k] for k in order[:n_val])
    return [i for i in ids if i not in val], [i for i in ids if i in val]


def select_subset(ids: Sequence[Hashable], subset: Optional[str], val_fraction: float, seed: int,
                  groups: Optional[Dict[Hashable, Hashable]] = None) -> set:
    """The ids to keep for ``subset`` ``None``/``"all"`` (all), ``"train"`` or ``"val"``."""
    if subset in (None, "all"):
        return set(ids)
    if subset not in ("train", "val"):
        raise ValueError(f"subset must be None, 'all', 'train' or 'val', got {subset!r}")
    train, val = split_ids(ids, val_fraction, seed, groups)
    return set(train if subset == "train" else val)


def image_size(path: str) -> Tuple[int, int]:
    """``(height, width)`` of an image file from its header (pixels are not decoded).

    Raises:
        OSError: missing file or not an image, naming ``path``.
    """
    from PIL import Image
    try:
        with Image.open(path) as im:
            return im.height, im.width
    except FileNotFoundError:
        raise FileNotFoundError(f"image file not found: {path!r}") from None
    except OSError as e:
        raise OSError(f"cannot read image header of {path!r}: {e}") from e


def finite_number(value: Any) -> bool:
    try:
        return math.isfinite(float(value))
    except (TypeError, ValueError):
        return False
