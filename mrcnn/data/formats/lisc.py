"""LISC leukocyte database layout → :class:`LiscDataset`.

LISC (Rezatofighi & Soltanian-Zadeh) is distributed as::

    <root>/Main Dataset/{Baso,eosi,lymp,mixt,mono,neut}/<n>.bmp
    <root>/Ground Truth Segmentation/{...}/areaforexpert1/<n>_expert.bmp

Each expert image paints a cell's nucleus and cytoplasm in grey levels on a
black background. This loader:

- maps folders to five classes by their first four letters, case-insensitive:
  basophil, eosinophil, lymphocyte, monocyte, neutrophil (source ids 1..5 in
  this order); an image's cells all get its folder's class.
- makes instances from the connected components (8-connected) of the
  ``region``: ``"cell"`` = grey > ``foreground_threshold`` (nucleus + cytoplasm),
  ``"nucleus"`` = grey ≥ ``nucleus_threshold``. Components smaller than
  ``min_area`` pixels are dropped as specks (stray annotation pixels exist in
  real expert masks) and counted.
- **skips ``mixt`` by default** (counted): those images hold several cells of
  different classes and LISC gives no class per cell. ``include_mixt=True``
  loads them with a sixth class ``"mixed"`` — only sensible for class-agnostic
  use (detection of any leukocyte).
- handles expert masks whose size differs from the image (some LISC masks are a
  few pixels smaller): ``size_mismatch="pad"`` (default) pads with background at
  the bottom/right, or crops there if the mask is larger, keeping the top-left
  registration exact; ``"resize"`` scales the mask to the image (nearest). Padding
  is the default because scaling a mask that was merely cut short would shift
  every boundary by up to the size difference.
- ``subset`` ``"train"``/``"val"``: a seeded split stratified by class, so rare
  classes (basophils) appear on both sides.
"""
from __future__ import annotations

import os
import re
from typing import Any, Dict, List, Optional, Tuple

import numpy as np

from mrcnn.data.dataset import Dataset, stack_masks
from mrcnn.data.formats.common import LoadReport, image_size, select_subset

__all__ = ["LiscDataset", "LISC_CLASSES", "FOLDER_CLASSES"]

LISC_CLASSES = ("basophil", "eosinophil", "lymphocyte", "monocyte", "neutrophil")
FOLDER_CLASSES = {"baso": "basophil", "eosi": "eosinophil", "lymp": "lymphocyte",
                  "mono": "monocyte", "neut": "neutrophil", "mixt": "mixed"}
MIXED = "mixed"
IMAGE_DIR = "Main Dataset"
TRUTH_DIR = "Ground Truth Segmentation"
_NUMBER = re.compile(r"^(\d+)\.bmp$", re.IGNORECASE)


class LiscDataset(Dataset):
    """LISC white-blood-cell instance segmentation (source ``"lisc"`` by default)."""

    def load_lisc(self, root: str, subset: Optional[str] = None, val_fraction: float = 0.2,
                  seed: int = 0, min_area: int = 50, region: str = "cell",
                  foreground_threshold: int = 0, nucleus_threshold: int = 192,
                  include_mixt: bool = False, expert: str = "areaforexpert1",
                  size_mismatch: str = "pad", source: str = "lisc") -> LoadReport:
        """Add LISC images that have an expert mask.

        Args:
            root: the folder holding ``Main Dataset`` and ``Ground Truth Segmentation``.
            subset: ``None``/``"all"``, ``"train"`` or ``"val"`` (stratified seeded split).
            min_area: components with fewer pixels are dropped.
            region: ``"cell"`` or ``"nucleus"``; thresholds as in the module docstring.
            include_mixt: load ``mixt`` images with class ``"mixed"``.
            expert: ground-truth subfolder (``areaforexpert1`` or ``areaforexpert2``).
            size_mismatch: ``"pad"`` or ``"resize"``.

        Returns:
            The :class:`LoadReport` (also in ``self.load_report``).
        """
        if region not in ("cell", "nucleus"):
            raise ValueError(f"region must be 'cell' or 'nucleus', got {region!r}")
        if size_mismatch not in ("pad", "resize"):
            raise ValueError(f"size_mismatch must be 'pad' or 'resize', got {size_mismatch!r}")
        image_root = os.path.join(root, IMAGE_DIR)
        if not os.path.isdir(image_root):
            raise FileNotFoundError(f"{root!r} is not a LISC folder: no {IMAGE_DIR!r} inside")
        report = LoadReport(f"lisc {root}")
        names = list(LISC_CLASSES) + ([MIXED] if include_mixt else [])
        for i, name in enumerate(names, start=1):
            self.add_class(source, i, name)
        options = {"min_area": min_area, "region": region, "foreground_threshold": foreground_threshold,
                   "nucleus_threshold": nucleus_threshold, "size_mismatch": size_mismatch}
        candidates = self._candidates(root, image_root, expert, include_mixt, report)
        keep = select_subset([c["key"] for c in candidates], subset, val_fraction, seed,
                             groups={c["key"]: c["class"] for c in candidates})
        for c in candidates:
            if c["key"] not in keep:
                continue
            self._add(c, names.index(c["class"]) + 1, options, source, report)
        report.log()
        self.load_report = report
        return report

    @staticmethod
    def _candidates(root: str, image_root: str, expert: str, include_mixt: bool,
                    report: LoadReport) -> List[Dict[str, Any]]:
        found = []
        for folder in sorted(os.listdir(image_root)):
            if not os.path.isdir(os.path.join(image_root, folder)):
                continue
            cls = FOLDER_CLASSES.get(folder[:4].lower())
            files = sorted((f for f in os.listdir(os.path.join(image_root, folder)) if _NUMBER.match(f)),
                           key=lambda f: int(_NUMBER.match(f).group(1)))
            if cls is None:
                report.skip("unknown folder", f"{os.path.join(image_root, folder)}: folder name is not "
                            f"one of {sorted(FOLDER_CLASSES)}", n=len(files))
                continue
            if cls == MIXED and not include_mixt:
                report.ignore("mixt images (class per cell unknown)", len(files))
                continue
            for f in files:
                n = _NUMBER.match(f).group(1)
                truth = os.path.join(root, TRUTH_DIR, folder, expert, f"{n}_expert.bmp")
                found.append({"key": f"{folder}/{n}", "class": cls,
                              "image": os.path.join(image_root, folder, f), "truth": truth})
        return found

    def _add(self, c: Dict[str, Any], class_id: int, options: Dict[str, Any], source: str,
             report: LoadReport) -> None:
        if not os.path.isfile(c["truth"]):
            report.skip("missing ground truth", f"{c['image']}: no expert mask {c['truth']}")
            return
        try:
            height, width = image_size(c["image"])
            labels, dropped, resized = _components(c["truth"], height, width, **options)
        except OSError as e:
            report.skip("unreadable file", f"{c['key']}: {e}")
            return
        if resized:
            report.ignore(f"masks of other size than the image ({options['size_mismatch']})")
        if dropped:
            report.ignore(f"specks < {options['min_area']} px", dropped)
        n = int(labels.max(initial=0))
        if n == 0:
            report.skip("no cell in mask", f"{c['truth']}: no component of >= {options['min_area']} px")
            return
        self.add_image(source, image_id=c["key"], path=c["image"], truth_path=c["truth"],
                       width=width, height=height, class_name=c["class"], lisc_class_id=class_id,
                       num_instances=n, mask_options=options)
        report.keep("images")
        report.keep("instances", n)

    # -- Dataset API ----------------------------------------------------------------------------
    def load_mask(self, image_id: int) -> Tuple[np.ndarray, np.ndarray]:
        """One mask per connected cell, ``bool [H, W, N]``; all with the image's class, ``int32 [N]``."""
        info = self.image_info[image_id]
        if "truth_path" not in info:
            return super().load_mask(image_id)
        h, w = info["height"], info["width"]
        labels, _, _ = _components(info["truth_path"], h, w, **info["mask_options"])
        n = int(labels.max(initial=0))
        cid = self.map_source_class_id(f"{info['source']}.{info['lisc_class_id']}")
        return stack_masks([labels == k for k in range(1, n + 1)], [cid] * n, h, w)

    def image_reference(self, image_id: int) -> str:
        return str(self.image_info[image_id]["path"])


def _components(truth_path: str, height: int, width: int, min_area: int, region: str,
                foreground_threshold: int, nucleus_threshold: int,
                size_mismatch: str) -> Tuple[np.ndarray, int, bool]:
    """Label image (0 background, 1..N cells ordered top-left first), specks dropped, resized flag."""
    import scipy.ndimage as ndi
    from PIL import Image

    with Image.open(truth_path) as im:
        grey = np.asarray(im.convert("L"))
    resized = grey.shape != (height, width)
    if resized:
        grey = _fit(grey, height, width, size_mismatch)
    fg = grey >= nucleus_threshold if region == "nucleus" else grey > foreground_threshold
    labels, n = ndi.label(fg, structure=np.ones((3, 3), dtype=bool))
    if n == 0:
        return labels, 0, resized
    areas = np.bincount(labels.ravel(), minlength=n + 1)
    big = np.flatnonzero(areas >= max(min_area, 1))
    big = big[big > 0]
    remap = np.zeros(n + 1, dtype=np.int32)
    remap[big] = np.arange(1, len(big) + 1)
    return remap[labels], int(n - len(big)), resized


def _fit(grey: np.ndarray, height: int, width: int, mode: str) -> np.ndarray:
    if mode == "resize":
        from PIL import Image
        return np.asarray(Image.fromarray(grey).resize((width, height), Image.NEAREST))
    out = np.zeros((height, width), dtype=grey.dtype)
    h, w = min(height, grey.shape[0]), min(width, grey.shape[1])
    out[:h, :w] = grey[:h, :w]
    return out
