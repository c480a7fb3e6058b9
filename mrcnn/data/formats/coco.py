"""COCO instances JSON (polygons, uncompressed RLE, compressed RLE) → :class:`CocoDataset`.

Behaviour follows Matterport's ``samples/coco/coco.py`` ``CocoDataset``:
category ids stay the source ids of source ``"coco"`` and are mapped to
internal ids by :meth:`Dataset.prepare`; ``iscrowd`` annotations come back
with **negative** class ids (training ignores anchors over them); masks with
no pixel are dropped; a crowd RLE whose size differs from the image becomes
an all-ones mask. Differences, on purpose: images are sorted by id; images
without (kept) annotations are skipped by default with a count (Matterport
dropped them silently), and an image with no instance gives an empty
``[H, W, 0]`` mask instead of the base class's ``[0, 0, 0]``; malformed
annotations are skipped with a message instead of crashing mid-training.

    ds = CocoDataset()
    report = ds.load_coco("annotations/instances_val2017.json", "val2017")
    ds.prepare()
    masks, class_ids = ds.load_mask(0)     # bool [H, W, N], int32 [N]

Matterport's call ``load_coco(dataset_dir, subset, year=...)`` also works: when
the first argument is a folder, the second is read as the subset and the files
as ``<dir>/annotations/instances_<subset><year>.json`` and ``<dir>/<subset><year>/``
(``minival``/``valminusminival`` images live in ``val<year>``).
"""
from __future__ import annotations

import contextlib
import io
import json
import os
import warnings
from typing import Any, Dict, Iterable, List, Optional, Tuple, Union

import numpy as np

from mrcnn.data.dataset import Dataset, stack_masks
from mrcnn.data.formats.common import LoadReport

__all__ = ["CocoDataset", "BACKGROUND_CATEGORY_NAMES", "ann_to_rle", "ann_to_mask", "matterport_layout"]

# labelme2coco and similar converters emit a background category (id 0); it is not an object class.
BACKGROUND_CATEGORY_NAMES = ("_background_", "__background__", "background", "BG", "__ignore__")


def ann_to_rle(ann: Dict[str, Any], height: int, width: int) -> Dict[str, Any]:
    """A COCO annotation's segmentation as a compressed RLE (pycocotools).

    Polygon lists are merged into one RLE; an uncompressed RLE (``counts`` is
    a list) is compressed at its own ``size``; a compressed RLE is returned as is
    (a ``str`` ``counts`` is encoded to bytes for pycocotools).
    """
    from pycocotools import mask as mask_utils

    segm = ann["segmentation"]
    if isinstance(segm, list):
        return mask_utils.merge(mask_utils.frPyObjects(segm, height, width))
    if isinstance(segm["counts"], list):
        return mask_utils.frPyObjects(segm, *segm["size"])
    counts = segm["counts"]
    return {"size": list(segm["size"]),
            "counts": counts.encode("ascii") if isinstance(counts, str) else counts}


def ann_to_mask(ann: Dict[str, Any], height: int, width: int) -> np.ndarray:
    """Decode an annotation to a ``bool`` mask (the RLE's own size for RLE input)."""
    from pycocotools import mask as mask_utils
    rle = ann_to_rle(ann, height, width)
    with warnings.catch_warnings():  # pycocotools 2.0.x warns about NumPy 2's copy keyword
        warnings.simplefilter("ignore", DeprecationWarning)
        return mask_utils.decode(rle).astype(bool)


def matterport_layout(dataset_dir: str, subset: Optional[str], year: Optional[str]) -> Tuple[str, str]:
    """(annotation file, image folder) of Matterport's COCO folder layout."""
    if not subset:
        raise ValueError(f"{dataset_dir!r} is a folder: give the subset (e.g. 'train', 'val') "
                         "as second argument, Matterport-style, or pass the annotation JSON itself")
    year = str(year or "2014")
    image_subset = "val" if subset in ("minival", "valminusminival") else subset
    return (os.path.join(dataset_dir, "annotations", f"instances_{subset}{year}.json"),
            os.path.join(dataset_dir, f"{image_subset}{year}"))


def _valid_polygon(part: Any) -> bool:
    if not isinstance(part, (list, tuple)) or len(part) < 6 or len(part) % 2:
        return False
    try:
        return bool(np.isfinite(np.asarray(part, dtype=np.float64)).all())
    except (TypeError, ValueError):
        return False


def _check_segmentation(ann: Dict[str, Any], height: int, width: int
                        ) -> Tuple[Optional[Any], Optional[str]]:
    """Validated segmentation (bad polygon parts removed) or an error text."""
    segm = ann.get("segmentation")
    if isinstance(segm, list):
        good = [p for p in segm if _valid_polygon(p)]
        if not good:
            return None, ("no polygon with >= 3 points" if segm else "empty segmentation")
        xy = np.concatenate([np.asarray(p, dtype=np.float64) for p in good])
        xs, ys = xy[0::2], xy[1::2]
        if xs.max() < 0 or ys.max() < 0 or xs.min() > width or ys.min() > height:
            return None, (f"polygon spans x {xs.min():.1f}..{xs.max():.1f}, y {ys.min():.1f}.."
                          f"{ys.max():.1f}: outside the {width}x{height} image")
        # pycocotools treats a 4-number list as a box, so short parts must go before decoding
        return good, None if len(good) == len(segm) else "dropped polygon part(s) with < 3 points"
    if isinstance(segm, dict) and "counts" in segm and "size" in segm:
        size = segm["size"]
        if not (isinstance(size, (list, tuple)) and len(size) == 2):
            return None, f"RLE size is {size!r}"
        return segm, None
    return None, f"unknown segmentation type {type(segm).__name__}"


class CocoDataset(Dataset):
    """COCO-format instance segmentation dataset (source ``"coco"`` by default)."""

    def load_coco(self, annotation_file: Union[str, Dict[str, Any]], image_dir: Optional[str] = None,
                  class_ids: Optional[Iterable[int]] = None, image_ids: Optional[Iterable[int]] = None,
                  limit: Optional[int] = None, skip_empty: bool = True, check_files: bool = True,
                  return_coco: bool = False, source: str = "coco", year: Optional[str] = None,
                  class_map: Any = None) -> Any:
        """Add the classes and images of a COCO instances file.

        Args:
            annotation_file: path to the JSON, or the already-parsed dict.
            image_dir: folder that ``file_name`` is relative to (default: the JSON's folder).
            class_ids: COCO category ids to keep (default: all except background-like
                categories such as labelme2coco's ``_background_``).
            image_ids: COCO image ids to keep (default: all).
            limit: keep at most this many images (after sorting by id).
            skip_empty: skip images with no kept annotation (Matterport's behaviour).
            check_files: skip images whose file is missing (with a message).
            return_coco: return the ``pycocotools.coco.COCO`` object instead of the report.
            source: source name for classes and images.
            year: with a COCO root folder as first argument (Matterport's form), the
                year of the files (default ``"2014"``, Matterport's default).
            class_map: accepted for Matterport compatibility; unused (as there).

        Returns:
            The :class:`LoadReport` (also in ``self.load_report``), or the COCO object.
        """
        if isinstance(annotation_file, (str, os.PathLike)) and os.path.isdir(annotation_file):
            annotation_file, image_dir = matterport_layout(str(annotation_file), image_dir, year)
        coco, path = self._open(annotation_file)
        if image_dir is None:
            image_dir = os.path.dirname(os.path.abspath(path)) if path else ""
        report = LoadReport(f"coco {path or '<dict>'}")
        cat_ids = self._select_categories(coco, class_ids, report)
        for cid in cat_ids:
            self.add_class(source, cid, coco.cats[cid]["name"])

        wanted = sorted(coco.imgs) if image_ids is None else sorted(set(image_ids))
        cat_set = set(cat_ids)
        added = 0
        for img_id in wanted:
            if limit is not None and added >= limit:
                break
            if img_id not in coco.imgs:
                report.skip("unknown image id", f"image id {img_id} is not in {path}")
                continue
            img = coco.imgs[img_id]
            anns = self._image_annotations(coco, img, cat_set, report, path)
            if skip_empty and not anns:
                report.skip("image without annotations",
                            f"image {img_id} ({img.get('file_name')}) has no kept annotation")
                continue
            file_path = os.path.join(image_dir, img["file_name"])
            if check_files and not os.path.isfile(file_path):
                report.skip("missing image file", f"image {img_id}: file not found {file_path!r}")
                continue
            self.add_image(source, image_id=img_id, path=file_path, width=int(img["width"]),
                           height=int(img["height"]), annotations=anns)
            report.keep("images")
            report.keep("instances", sum(1 for a in anns if not a.get("iscrowd")))
            report.keep("crowd regions", sum(1 for a in anns if a.get("iscrowd")))
            added += 1
        report.log()
        self.load_report = report
        return coco if return_coco else report

    @staticmethod
    def _open(annotation_file: Union[str, Dict[str, Any]]):
        from pycocotools.coco import COCO

        path = annotation_file if isinstance(annotation_file, (str, os.PathLike)) else None
        if path is not None:
            try:
                with open(path) as f:
                    data = json.load(f)
            except FileNotFoundError:
                raise FileNotFoundError(f"COCO annotation file not found: {path!r}") from None
            except json.JSONDecodeError as e:
                raise ValueError(f"COCO annotation file {path!r} is not valid JSON: {e}") from e
        else:
            data = annotation_file
        for key in ("images", "annotations", "categories"):
            if key not in data:
                raise ValueError(f"{path or 'COCO dict'} has no {key!r} key: not a COCO instances file")
        coco = COCO()
        coco.dataset = data
        with contextlib.redirect_stdout(io.StringIO()):  # pycocotools prints progress lines
            coco.createIndex()
        return coco, path

    @staticmethod
    def _select_categories(coco, class_ids, report: LoadReport) -> List[int]:
        if class_ids is not None:
            class_ids = sorted(set(class_ids))
            unknown = [c for c in class_ids if c not in coco.cats]
            if unknown:
                raise ValueError(f"class_ids {unknown} are not categories of the COCO file")
            return class_ids
        keep = []
        for cid in sorted(coco.cats):
            if coco.cats[cid].get("name") in BACKGROUND_CATEGORY_NAMES:
                report.ignore("background categories")
                continue
            keep.append(cid)
        return keep

    @staticmethod
    def _image_annotations(coco, img, cat_set, report: LoadReport, path) -> List[Dict[str, Any]]:
        kept = []
        for ann in coco.imgToAnns.get(img["id"], []):
            where = f"annotation {ann.get('id')} of image {img['id']} ({img.get('file_name')})"
            cid = ann.get("category_id")
            if cid not in coco.cats:
                report.skip("unknown category", f"{where}: category_id {cid} is not in categories")
                continue
            if cid not in cat_set:
                continue  # filtered out on request, not an error
            segm, problem = _check_segmentation(ann, int(img["height"]), int(img["width"]))
            if segm is None:
                report.skip("bad segmentation", f"{where}: {problem}")
                continue
            if problem:
                report.skip("bad polygon part", f"{where}: {problem}")
            if segm is not ann["segmentation"]:
                ann = dict(ann, segmentation=segm)
            kept.append(ann)
        return kept

    # -- Dataset API ----------------------------------------------------------------------------
    def load_mask(self, image_id: int) -> Tuple[np.ndarray, np.ndarray]:
        """Instance masks ``bool [H, W, N]`` and internal class ids ``int32 [N]`` (crowd → negative)."""
        info = self.image_info[image_id]
        if "annotations" not in info:
            return super().load_mask(image_id)
        h, w = info["height"], info["width"]
        masks, ids = [], []
        for ann in info["annotations"]:
            class_id = self.map_source_class_id(f"{info['source']}.{ann['category_id']}")
            m = ann_to_mask(ann, h, w)
            if m.max(initial=False) < 1:
                continue  # objects smaller than a pixel vanish when rasterised
            if ann.get("iscrowd"):
                class_id *= -1
                if m.shape != (h, w):
                    m = np.ones([h, w], dtype=bool)
            elif m.shape != (h, w):
                raise ValueError(f"image {image_id} ({info['path']}): annotation {ann.get('id')} mask "
                                 f"is {m.shape}, image is {(h, w)}")
            masks.append(m)
            ids.append(class_id)
        return stack_masks(masks, ids, h, w)

    def image_reference(self, image_id: int) -> str:
        """The cocodataset.org explorer link for source ``"coco"``, else the path."""
        info = self.image_info[image_id]
        if info["source"] == "coco":
            return f"http://cocodataset.org/#explore?id={info['id']}"
        return str(info["path"])
