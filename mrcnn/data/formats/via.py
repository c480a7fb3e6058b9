"""VGG Image Annotator (VIA) JSON → :class:`ViaDataset` (Matterport's balloon format and more).

Accepted files:

- VIA 1.x export: ``{key: {"filename", "size", "regions": {"0": region, ...}, ...}}``;
- VIA 2.x export: the same with ``"regions": [region, ...]``;
- a VIA 2.x project file: the dict above under ``"_via_img_metadata"``.

A region is ``{"shape_attributes": {...}, "region_attributes": {...}}``. Shapes:
``polygon`` (``all_points_x``/``all_points_y``, Matterport's balloon), ``rect``
(``x, y, width, height``), ``circle`` (``cx, cy, r``), ``ellipse`` (``cx, cy,
rx, ry`` and optional ``theta``). ``point`` and ``polyline`` regions have no
area and are ignored with a count.

Class of a region: the value of ``region_attributes[class_attribute]`` — a string,
or a checkbox dict ``{"balloon": true}`` with exactly one true key. With
``class_attribute=None`` every region is ``single_class``. Class names are given
or discovered (sorted). VIA does not store image sizes, so each image's header
is read at load time (as Matterport did, but without decoding the pixels);
images without regions are skipped, as Matterport's balloon loader did.
"""
from __future__ import annotations

import json
import os
from typing import Any, Dict, Optional, Sequence, Tuple

import numpy as np

from mrcnn.data.dataset import Dataset, stack_masks
from mrcnn.data.formats.common import (ClassTable, LoadReport, box_mask, ellipse_mask,
                                       finite_number, image_size, polygon_mask, select_subset)

__all__ = ["ViaDataset"]

NO_AREA_SHAPES = ("point", "polyline")
SHAPE_FIELDS = {"polygon": ("all_points_x", "all_points_y"), "rect": ("x", "y", "width", "height"),
                "circle": ("cx", "cy", "r"), "ellipse": ("cx", "cy", "rx", "ry")}


def _read_via(json_path: str) -> Dict[str, Any]:
    try:
        with open(json_path, encoding="utf-8") as f:
            data = json.load(f)
    except FileNotFoundError:
        raise FileNotFoundError(f"VIA annotation file not found: {json_path!r}") from None
    except json.JSONDecodeError as e:
        raise ValueError(f"VIA file {json_path!r} is not valid JSON: {e}") from e
    if isinstance(data, dict) and "_via_img_metadata" in data:
        data = data["_via_img_metadata"]
    if isinstance(data, dict) and ("project" in data and "metadata" in data and "file" in data):
        raise ValueError(f"{json_path!r} is a VIA 3.x project; export it as VIA 2 JSON or COCO")
    if not isinstance(data, dict) or not all(isinstance(v, dict) and "filename" in v for v in data.values()):
        raise ValueError(f"{json_path!r} is not a VIA 1.x/2.x annotation export "
                         "(expected {{key: {{'filename', 'regions', ...}}}})")
    return data


class ViaDataset(Dataset):
    """VIA polygon/rect/circle/ellipse annotations (source ``"via"`` by default)."""

    def load_via(self, json_path: str, image_dir: Optional[str] = None,
                 class_attribute: Optional[str] = "name", class_names: Optional[Sequence[str]] = None,
                 single_class: str = "object", source: str = "via", subset: Optional[str] = None,
                 val_fraction: float = 0.2, seed: int = 0) -> LoadReport:
        """Add the images and regions of a VIA export.

        Args:
            json_path: the VIA JSON (e.g. Matterport's ``via_region_data.json``).
            image_dir: folder of the images (default: the JSON's folder).
            class_attribute: region attribute holding the class name; ``None`` for one class.
            class_names: classes to keep in id order (default: discovered, sorted).
            single_class: the class name when ``class_attribute`` is ``None``.
            subset: ``None``/``"all"``, ``"train"`` or ``"val"`` (seeded split by file name).

        Returns:
            The :class:`LoadReport` (also in ``self.load_report``).
        """
        data = _read_via(json_path)
        image_dir = image_dir if image_dir is not None else os.path.dirname(os.path.abspath(json_path))
        report = LoadReport(f"via {json_path}")
        table = ClassTable([single_class] if class_attribute is None and class_names is None
                           else class_names)
        records = []
        for key, entry in data.items():
            record = self._parse_entry(key, entry, image_dir, json_path, class_attribute,
                                       single_class, report)
            if record is None:
                continue
            for r in record["regions"]:
                table.see(r["label"])
            records.append(record)
        table.freeze()
        table.register(self, source)
        keep = select_subset([r["filename"] for r in records], subset, val_fraction, seed)
        for record in records:
            if record["filename"] not in keep:
                continue
            regions = []
            for r in record["regions"]:
                cid = table.id_of(r["label"])
                if cid is None:
                    report.skip("unknown class", f"{json_path}: {record['filename']} region {r['index']} "
                                f"class {r['label']!r} is not in class_names")
                    continue
                regions.append(dict(r, class_id=cid))
            if not regions:
                report.skip("image without regions",
                            f"{json_path}: {record['filename']} has no usable region")
                continue
            self.add_image(source, image_id=record["filename"], path=record["path"],
                           width=record["width"], height=record["height"], regions=regions)
            report.keep("images")
            report.keep("instances", len(regions))
        report.log()
        self.load_report = report
        return report

    def _parse_entry(self, key: str, entry: Dict[str, Any], image_dir: str, json_path: str,
                     class_attribute: Optional[str], single_class: str,
                     report: LoadReport) -> Optional[Dict[str, Any]]:
        filename = entry["filename"]
        raw = entry.get("regions") or []
        regions = list(raw.values()) if isinstance(raw, dict) else list(raw)  # 1.x dict, 2.x list
        if not regions:
            report.ignore("images without regions")
            return None
        path = os.path.join(image_dir, filename)
        try:
            height, width = image_size(path)
        except FileNotFoundError:
            report.skip("missing image file", f"{json_path}: {key}: image file not found {path!r}")
            return None
        except OSError as e:
            report.skip("unreadable image", f"{json_path}: {key}: cannot read {path!r} ({e})")
            return None
        parsed = []
        for index, region in enumerate(regions):
            where = f"{json_path}: {filename} region {index}"
            r = _parse_region(region, where, height, width, report)
            if r is None:
                continue
            label = _region_class(region, class_attribute, single_class, where, report)
            if label is None:
                continue
            parsed.append(dict(r, label=label, index=index))
        return {"filename": filename, "path": path, "height": height, "width": width, "regions": parsed}

    # -- Dataset API ----------------------------------------------------------------------------
    def load_mask(self, image_id: int) -> Tuple[np.ndarray, np.ndarray]:
        """One mask per region: ``bool [H, W, N]``, class ids ``int32 [N]``."""
        info = self.image_info[image_id]
        if "regions" not in info:
            return super().load_mask(image_id)
        shape = (info["height"], info["width"])
        masks, ids = [], []
        for r in info["regions"]:
            m = _rasterise(r, shape)
            if not m.any():
                continue
            masks.append(m)
            ids.append(self.map_source_class_id(f"{info['source']}.{r['class_id']}"))
        return stack_masks(masks, ids, *shape)

    def image_reference(self, image_id: int) -> str:
        return str(self.image_info[image_id]["path"])


def _parse_region(region: Any, where: str, height: int, width: int,
                  report: LoadReport) -> Optional[Dict[str, Any]]:
    sa = region.get("shape_attributes") if isinstance(region, dict) else None
    if not isinstance(sa, dict):
        report.skip("bad region", f"{where}: no shape_attributes")
        return None
    kind = sa.get("name")
    if kind in NO_AREA_SHAPES:
        report.ignore(f"{kind} regions")
        return None
    if kind not in SHAPE_FIELDS:
        report.skip("unknown shape", f"{where}: unknown shape {kind!r}")
        return None
    missing = [k for k in SHAPE_FIELDS[kind] if k not in sa]
    if missing:
        report.skip("bad region", f"{where}: {kind} lacks {missing}")
        return None
    if kind == "polygon":
        xs, ys = sa["all_points_x"], sa["all_points_y"]
        if not (isinstance(xs, list) and isinstance(ys, list)) or len(xs) != len(ys) \
                or not all(finite_number(v) for v in xs + ys):
            report.skip("bad region", f"{where}: polygon x/y lists differ in length or are not numbers")
            return None
        if len(xs) < 3:
            report.skip("polygon with < 3 points", f"{where}: polygon has {len(xs)} point(s)")
            return None
        lo, hi = (min(xs), min(ys)), (max(xs), max(ys))
        params = {"xs": [float(v) for v in xs], "ys": [float(v) for v in ys]}
    else:
        values = {k: sa[k] for k in SHAPE_FIELDS[kind]}
        if not all(finite_number(v) for v in values.values()):
            report.skip("bad region", f"{where}: {kind} has non-numeric values {values}")
            return None
        params = {k: float(v) for k, v in values.items()}
        if kind == "ellipse":
            params["theta"] = float(sa.get("theta", 0.0) or 0.0)
        lo, hi = _extent(kind, params)
        if (hi[0] - lo[0]) <= 0 or (hi[1] - lo[1]) <= 0:
            report.skip("empty shape", f"{where}: {kind} has zero size {values}")
            return None
    if hi[0] < 0 or hi[1] < 0 or lo[0] > width - 1 or lo[1] > height - 1:
        report.skip("shape outside the image", f"{where}: {kind} spans x {lo[0]:.1f}..{hi[0]:.1f}, "
                    f"y {lo[1]:.1f}..{hi[1]:.1f}; image is {width}x{height}")
        return None
    if lo[0] < 0 or lo[1] < 0 or hi[0] > width or hi[1] > height:
        report.ignore("shapes clipped to the image")
    return {"shape": kind, **params}


def _extent(kind: str, p: Dict[str, float]) -> Tuple[Tuple[float, float], Tuple[float, float]]:
    if kind == "rect":
        return (p["x"], p["y"]), (p["x"] + p["width"], p["y"] + p["height"])
    rx, ry = (p["r"], p["r"]) if kind == "circle" else (p["rx"], p["ry"])
    r = max(rx, ry)  # loose bound for a rotated ellipse
    return (p["cx"] - r, p["cy"] - r), (p["cx"] + r, p["cy"] + r)


def _region_class(region: Dict[str, Any], class_attribute: Optional[str], single_class: str,
                  where: str, report: LoadReport) -> Optional[str]:
    if class_attribute is None:
        return single_class
    attrs = region.get("region_attributes") or {}
    value = attrs.get(class_attribute)
    if isinstance(value, dict):  # checkbox / multi-select attribute
        chosen = [k for k, v in value.items() if v]
        if len(chosen) == 1:
            return str(chosen[0])
        report.skip("ambiguous class", f"{where}: attribute {class_attribute!r} selects {chosen}")
        return None
    if value is None or (isinstance(value, str) and not value.strip()):
        report.skip("missing class", f"{where}: no region attribute {class_attribute!r} "
                    f"(has {sorted(attrs)})")
        return None
    return str(value).strip()


def _rasterise(r: Dict[str, Any], shape: Tuple[int, int]) -> np.ndarray:
    kind = r["shape"]
    if kind == "polygon":
        return polygon_mask(r["xs"], r["ys"], shape)
    if kind == "rect":
        return box_mask(r["y"], r["x"], r["y"] + r["height"], r["x"] + r["width"], shape)
    if kind == "circle":
        return ellipse_mask(r["cx"], r["cy"], r["r"], r["r"], 0.0, shape)
    return ellipse_mask(r["cx"], r["cy"], r["rx"], r["ry"], r["theta"], shape)
