"""LabelMe JSON (one file per image) → :class:`LabelMeDataset`.

Rules, as LabelMe's own ``labelme2coco``/``labelme2voc`` converters apply them:

- ``polygon`` (also shapes without ``shape_type``, from LabelMe < 3.0), ``rectangle``
  (two opposite corners), ``circle`` (centre + a point on the circle) and
  ``mask`` (LabelMe ≥ 5.3: a base64 PNG placed at the first point) become masks;
  ``line``, ``linestrip``, ``point`` and ``points`` shapes carry no area and are
  ignored with a count.
- Shapes with the same ``label`` **and** the same non-null ``group_id`` are one
  instance (their union); every shape with a null ``group_id`` is its own instance.
- Shapes labelled ``__ignore__`` are dropped.
- ``imagePath`` is relative to the JSON file; when that file is absent the
  embedded base64 ``imageData`` is used.
- Classes: given as ``class_names`` (other labels skipped with a message), or
  discovered from the files and sorted by name. Source class ids are 1..K in
  that order.

Shapes partly outside the image are clipped; shapes entirely outside, polygons
with fewer than 3 points and unknown labels are skipped with a message naming
the JSON file and the shape index.
"""
from __future__ import annotations

import base64
import glob
import io
import json
import os
from typing import Any, Dict, List, Optional, Sequence, Tuple, Union

import numpy as np

from mrcnn.data.dataset import Dataset, ImageLoadError, stack_masks, to_rgb_uint8
from mrcnn.data.formats.common import (ClassTable, LoadReport, circle_mask, polygon_mask,
                                       select_subset)

__all__ = ["LabelMeDataset", "IGNORE_LABEL"]

IGNORE_LABEL = "__ignore__"
AREA_SHAPES = ("polygon", "rectangle", "circle", "mask")
LINE_SHAPES = ("line", "linestrip", "point", "points")


def _json_files(path_or_paths: Union[str, Sequence[str]], recursive: bool) -> List[str]:
    if isinstance(path_or_paths, (str, os.PathLike)):
        path = str(path_or_paths)
        if os.path.isdir(path):
            pattern = os.path.join(path, "**", "*.json") if recursive else os.path.join(path, "*.json")
            return sorted(glob.glob(pattern, recursive=recursive))
        if not os.path.isfile(path):
            raise FileNotFoundError(f"LabelMe path not found: {path!r}")
        return [path]
    return [str(p) for p in path_or_paths]


def _decode_png_b64(data: str) -> np.ndarray:
    from PIL import Image
    with Image.open(io.BytesIO(base64.b64decode(data))) as im:
        return np.asarray(im)


class LabelMeDataset(Dataset):
    """LabelMe polygon/rectangle/circle annotations (source ``"labelme"`` by default)."""

    def load_labelme(self, path_or_paths: Union[str, Sequence[str]],
                     class_names: Optional[Sequence[str]] = None, source: str = "labelme",
                     subset: Optional[str] = None, val_fraction: float = 0.2, seed: int = 0,
                     recursive: bool = False, skip_empty: bool = False) -> LoadReport:
        """Add LabelMe JSON files: a folder of them, one file, or a list of files.

        Args:
            class_names: the classes to keep, in id order (default: discovered, sorted).
            subset: ``None``/``"all"``, ``"train"`` or ``"val"`` — a seeded split by
                image id (:func:`~mrcnn.data.formats.common.split_ids`).
            skip_empty: skip images left with no instance.

        Returns:
            The :class:`LoadReport` (also in ``self.load_report``).
        """
        files = _json_files(path_or_paths, recursive)
        report = LoadReport(f"labelme {path_or_paths if isinstance(path_or_paths, str) else '<files>'}")
        root = str(path_or_paths) if isinstance(path_or_paths, str) and os.path.isdir(path_or_paths) else None
        table = ClassTable(class_names)
        parsed = []
        for f in files:
            record = self._parse_file(f, report)
            if record is None:
                continue
            record["key"] = os.path.splitext(os.path.relpath(f, root) if root else os.path.basename(f))[0]
            for inst in record["instances"]:
                table.see(inst["label"])
            parsed.append(record)
        _unique_keys(parsed)
        table.freeze()
        table.register(self, source)
        keep = select_subset([r["key"] for r in parsed], subset, val_fraction, seed)
        for record in parsed:
            if record["key"] not in keep:
                continue
            instances = []
            for inst in record["instances"]:
                cid = table.id_of(inst["label"])
                if cid is None:
                    report.skip("unknown class", f"{record['json_path']}: shape(s) {inst['shape_index']} "
                                f"label {inst['label']!r} is not in class_names")
                    continue
                instances.append(dict(inst, class_id=cid))
            if skip_empty and not instances:
                report.skip("image without instances", f"{record['json_path']}: no instance left")
                continue
            self.add_image(source, image_id=record["key"], path=record["image_path"],
                           json_path=record["json_path"], height=record["height"],
                           width=record["width"], instances=instances)
            report.keep("images")
            report.keep("instances", len(instances))
        report.log()
        self.load_report = report
        return report

    # -- parsing --------------------------------------------------------------------------------
    def _parse_file(self, json_path: str, report: LoadReport) -> Optional[Dict[str, Any]]:
        try:
            with open(json_path, encoding="utf-8") as f:
                data = json.load(f)
        except (OSError, json.JSONDecodeError) as e:
            report.skip("unreadable json", f"{json_path}: cannot read LabelMe JSON ({e})")
            return None
        if not isinstance(data, dict) or "shapes" not in data:
            report.skip("not labelme", f"{json_path}: no 'shapes' key, not a LabelMe file")
            return None
        image_path = self._image_path(json_path, data)
        if image_path is None and not data.get("imageData"):
            report.skip("missing image file", f"{json_path}: image {data.get('imagePath')!r} not found "
                        "and no embedded imageData")
            return None
        try:
            height, width = self._size(data, image_path, json_path)
        except ImageLoadError as e:
            report.skip("unreadable image", f"{json_path}: {e}")
            return None
        groups: Dict[Any, Dict[str, Any]] = {}
        for index, shape in enumerate(data["shapes"]):
            parsed = self._parse_shape(shape, index, json_path, height, width, report)
            if parsed is None:
                continue
            label, group_id = shape["label"], shape.get("group_id")
            key = (label, group_id) if group_id is not None else ("#", index)
            inst = groups.setdefault(key, {"label": label, "shapes": [], "shape_index": []})
            inst["shapes"].append(parsed)
            inst["shape_index"].append(index)
        return {"json_path": json_path, "image_path": image_path, "height": height, "width": width,
                "instances": list(groups.values())}

    @staticmethod
    def _image_path(json_path: str, data: Dict[str, Any]) -> Optional[str]:
        rel = data.get("imagePath")
        if not rel:
            return None
        # LabelMe on Windows writes backslashes
        path = os.path.normpath(os.path.join(os.path.dirname(json_path), rel.replace("\\", "/")))
        return path if os.path.isfile(path) else None

    @staticmethod
    def _size(data: Dict[str, Any], image_path: Optional[str], json_path: str) -> Tuple[int, int]:
        h, w = data.get("imageHeight"), data.get("imageWidth")
        if h and w:
            return int(h), int(w)
        if image_path:
            from PIL import Image
            try:
                with Image.open(image_path) as im:
                    return im.height, im.width
            except OSError as e:
                raise ImageLoadError(f"cannot read size of {image_path!r}: {e}") from e
        image = _embedded_image(data, json_path)
        return image.shape[0], image.shape[1]

    @staticmethod
    def _parse_shape(shape: Dict[str, Any], index: int, json_path: str, height: int, width: int,
                     report: LoadReport) -> Optional[Dict[str, Any]]:
        where = f"{json_path}: shape {index} ({shape.get('label')!r}, {shape.get('shape_type')})"
        label = shape.get("label")
        if label == IGNORE_LABEL:
            report.ignore("__ignore__ shapes")
            return None
        kind = shape.get("shape_type") or "polygon"
        if kind in LINE_SHAPES:
            report.ignore(f"{kind} shapes")
            return None
        if kind not in AREA_SHAPES:
            report.skip("unknown shape type", f"{where}: unknown shape_type {kind!r}")
            return None
        if not isinstance(label, str) or not label:
            report.skip("missing label", f"{where}: no label")
            return None
        try:
            pts = np.asarray(shape.get("points") or [], dtype=np.float64).reshape(-1, 2)
        except ValueError:
            report.skip("bad points", f"{where}: points are not [[x, y], ...]")
            return None
        if not np.isfinite(pts).all():
            report.skip("bad points", f"{where}: non-finite coordinates")
            return None
        need = 3 if kind == "polygon" else (1 if kind == "mask" else 2)
        if len(pts) < need:
            report.skip(f"{kind} with too few points",
                        f"{where}: {len(pts)} point(s), a {kind} needs {need}")
            return None
        if kind == "circle":
            radius = float(np.hypot(*(pts[1] - pts[0])))
            if radius <= 0:
                report.skip("circle with zero radius", f"{where}: radius 0")
                return None
            lo, hi = pts[0] - radius, pts[0] + radius
        else:
            lo, hi = pts.min(axis=0), pts.max(axis=0)
        if kind == "mask" and not shape.get("mask"):
            report.skip("mask without data", f"{where}: no 'mask' data")
            return None
        if hi[0] < 0 or hi[1] < 0 or lo[0] > width - 1 or lo[1] > height - 1:
            report.skip("shape outside the image", f"{where}: spans x {lo[0]:.1f}..{hi[0]:.1f}, "
                        f"y {lo[1]:.1f}..{hi[1]:.1f}, image is {width}x{height}")
            return None
        if lo[0] < 0 or lo[1] < 0 or hi[0] > width or hi[1] > height:
            report.ignore("shapes clipped to the image")
        out = {"type": kind, "points": pts.tolist()}
        if kind == "mask":
            out["mask"] = shape["mask"]
        return out

    # -- Dataset API ----------------------------------------------------------------------------
    def load_image(self, image_id: int) -> np.ndarray:
        """The image file, or the JSON's embedded ``imageData`` when the file is absent."""
        info = self.image_info[image_id]
        if info.get("path"):
            return super().load_image(image_id)
        with open(info["json_path"], encoding="utf-8") as f:
            return _embedded_image(json.load(f), info["json_path"], image_id)

    def load_mask(self, image_id: int) -> Tuple[np.ndarray, np.ndarray]:
        """Masks ``bool [H, W, N]`` (union of each instance's shapes) and class ids ``int32 [N]``."""
        info = self.image_info[image_id]
        if "instances" not in info:
            return super().load_mask(image_id)
        shape = (info["height"], info["width"])
        masks, ids = [], []
        for inst in info["instances"]:
            m = np.zeros(shape, dtype=bool)
            for s in inst["shapes"]:
                m |= _rasterise(s, shape)
            if not m.any():
                continue  # e.g. a sliver thinner than a pixel centre
            masks.append(m)
            ids.append(self.map_source_class_id(f"{info['source']}.{inst['class_id']}"))
        return stack_masks(masks, ids, *shape)

    def image_reference(self, image_id: int) -> str:
        info = self.image_info[image_id]
        return str(info.get("path") or info["json_path"])


def _unique_keys(records: List[Dict[str, Any]]) -> None:
    """Files from different folders may share a name; those get their full path as id."""
    counts: Dict[str, int] = {}
    for r in records:
        counts[r["key"]] = counts.get(r["key"], 0) + 1
    for r in records:
        if counts[r["key"]] > 1:
            r["key"] = os.path.splitext(os.path.abspath(r["json_path"]))[0]


def _embedded_image(data: Dict[str, Any], json_path: str, image_id: Any = None) -> np.ndarray:
    if not data.get("imageData"):
        raise ImageLoadError(f"image {image_id}: {json_path} has no image file and no imageData")
    try:
        return to_rgb_uint8(_decode_png_b64(data["imageData"]))
    except Exception as e:  # noqa: BLE001 — bad base64 or undecodable bytes
        raise ImageLoadError(f"image {image_id}: embedded imageData of {json_path} "
                             f"cannot be decoded ({e})") from e


def _rasterise(shape: Dict[str, Any], image_shape: Tuple[int, int]) -> np.ndarray:
    pts = np.asarray(shape["points"], dtype=np.float64)
    kind = shape["type"]
    if kind == "polygon":
        return polygon_mask(pts[:, 0], pts[:, 1], image_shape)
    if kind == "rectangle":
        (x1, y1), (x2, y2) = pts[0], pts[1]
        return polygon_mask([x1, x2, x2, x1], [y1, y1, y2, y2], image_shape)
    if kind == "circle":
        return circle_mask(pts[0][0], pts[0][1], float(np.hypot(*(pts[1] - pts[0]))), image_shape)
    # "mask": a bool PNG covering the box that starts at the first point
    small = _decode_png_b64(shape["mask"]).astype(bool)
    if small.ndim == 3:
        small = small.any(axis=-1)
    out = np.zeros(image_shape, dtype=bool)
    x0, y0 = int(round(pts[0][0])), int(round(pts[0][1]))
    ys, xs = slice(max(y0, 0), min(y0 + small.shape[0], image_shape[0])), \
        slice(max(x0, 0), min(x0 + small.shape[1], image_shape[1]))
    out[ys, xs] = small[ys.start - y0:ys.stop - y0, xs.start - x0:xs.stop - x0]
    return out
