"""Open Images → :class:`OpenImagesDataset`: the ``openimages`` package's download layout, and
the official instance-segmentation CSV + mask PNGs.

1. :meth:`OpenImagesDataset.load_openimages` reads what ``openimages.download.download_dataset(
   dest_dir, class_labels, annotation_format="pascal")`` writes::

       <root>/<label>/images/<ImageID>.jpg
       <root>/<label>/pascal/<ImageID>.xml

   These are **boxes only**: every mask is the filled box (coarse; fine for a
   detector, poor for training a mask head). The package writes 0-based corner
   pixels (``int(fraction * size)`` clipped to ``size - 1``), read as inclusive.
   An image downloaded for several labels sits in several folders, each XML
   holding only that label's boxes; it becomes **one** image with all the boxes.

2. :meth:`OpenImagesDataset.load_openimages_segmentation` reads the Open Images
   segmentation CSV (``train-annotations-object-segmentation.csv``: ``MaskPath,
   ImageID, LabelName, BoxID, BoxXMin, BoxXMax, BoxYMin, BoxYMax, ...``) with its
   mask PNGs (one binary PNG per instance, often at a size other than the image:
   resized to the image with nearest-neighbour). ``LabelName`` is a MID
   (``/m/01g317``); with ``class_descriptions`` (``class-descriptions-boxable.csv``,
   ``MID,DisplayName`` without header) classes get display names.
"""
from __future__ import annotations

import csv
import os
from typing import Any, Dict, List, Optional, Sequence, Tuple

import numpy as np

from mrcnn.data.dataset import Dataset, stack_masks
from mrcnn.data.formats.common import ClassTable, LoadReport, box_mask, image_size
from mrcnn.data.formats.voc import VocDataset, parse_voc_xml

__all__ = ["OpenImagesDataset", "read_class_descriptions"]

SEGMENTATION_COLUMNS = ("MaskPath", "ImageID", "LabelName")


def read_class_descriptions(path: str) -> Dict[str, str]:
    """MID → display name from ``class-descriptions-boxable.csv`` (``MID,Name`` rows, no header)."""
    with open(path, newline="", encoding="utf-8") as f:
        return {row[0]: row[1] for row in csv.reader(f) if len(row) >= 2 and row[0].startswith("/")}


class OpenImagesDataset(Dataset):
    """Open Images boxes (as box masks) or segmentation masks (source ``"openimages"``)."""

    # -- 1. openimages package layout -------------------------------------------------------------
    def load_openimages(self, root: str, labels: Optional[Sequence[str]] = None,
                        source: str = "openimages") -> LoadReport:
        """Add ``<root>/<label>/{images,pascal}`` folders written by the ``openimages`` package.

        Args:
            labels: label folders to read, case-insensitive (default: every folder with
                a ``pascal`` subfolder, sorted). Classes are these labels, in this order
                (the package writes lower-case names).

        Returns:
            The :class:`LoadReport` (also in ``self.load_report``).
        """
        if not os.path.isdir(root):
            raise FileNotFoundError(f"Open Images root not found: {root!r}")
        folders = sorted(d for d in os.listdir(root) if os.path.isdir(os.path.join(root, d, "pascal")))
        if labels is not None:
            wanted = [str(label).lower() for label in labels]
            missing = [label for label in wanted if label not in {f.lower() for f in folders}]
            if missing:
                raise FileNotFoundError(f"{root!r} has no <label>/pascal folder for {missing}; "
                                        f"found {folders}")
            folders = [f for w in wanted for f in folders if f.lower() == w]
        if not folders:
            raise FileNotFoundError(f"{root!r} has no <label>/pascal folders (openimages layout)")
        report = LoadReport(f"openimages {root}")
        table = ClassTable([f.lower() for f in folders])
        table.register(self, source)
        merged: Dict[str, Dict[str, Any]] = {}
        for folder in folders:
            self._read_label_folder(os.path.join(root, folder), merged, report)
        for image_key in sorted(merged):
            self._add_box_image(image_key, merged[image_key], table, source, report)
        report.log()
        self.load_report = report
        return report

    @staticmethod
    def _read_label_folder(folder: str, merged: Dict[str, Dict[str, Any]], report: LoadReport) -> None:
        xml_dir, image_dir = os.path.join(folder, "pascal"), os.path.join(folder, "images")
        for name in sorted(f for f in os.listdir(xml_dir) if f.endswith(".xml")):
            xml_path = os.path.join(xml_dir, name)
            key = os.path.splitext(name)[0]
            try:
                ann = parse_voc_xml(xml_path)
            except ValueError as e:
                report.skip("bad xml", str(e))
                continue
            image_path = VocDataset._find_image(key, ann["filename"], image_dir)
            entry = merged.setdefault(key, {"path": None, "objects": [], "xml": []})
            entry["path"] = entry["path"] or image_path
            entry["xml"].append(xml_path)
            entry["objects"].extend(dict(o, xml=xml_path, index=k) for k, o in enumerate(ann["objects"]))

    def _add_box_image(self, key: str, entry: Dict[str, Any], table: ClassTable, source: str,
                       report: LoadReport) -> None:
        if entry["path"] is None:
            report.skip("missing image file", f"image {key}: no image file next to {entry['xml']}")
            return
        try:
            height, width = image_size(entry["path"])
        except OSError as e:
            report.skip("unreadable image", f"image {key}: {e}")
            return
        instances = []
        for obj in entry["objects"]:
            record = {"xml": obj["xml"], "objects": [obj]}
            found = VocDataset._box_instances(record, table, height, width, False, False, report)
            instances.extend(dict(i, object_index=obj["index"]) for i in found)
        self.add_image(source, image_id=key, path=entry["path"], width=width, height=height,
                       xml_paths=entry["xml"], mask_source="boxes", instances=instances)
        report.keep("images")
        report.keep("instances", len(instances))

    # -- 2. segmentation CSV + mask PNGs ----------------------------------------------------------
    def load_openimages_segmentation(self, csv_path: str, image_dir: str, mask_dir: str,
                                     class_descriptions: Optional[str] = None,
                                     class_names: Optional[Sequence[str]] = None,
                                     image_ids: Optional[Sequence[str]] = None,
                                     source: str = "openimages") -> LoadReport:
        """Add images and instance masks from an Open Images segmentation CSV.

        Args:
            csv_path: the segmentation CSV (header row with at least MaskPath, ImageID, LabelName).
            image_dir: folder of ``<ImageID>.jpg``.
            mask_dir: folder (searched recursively) holding the ``MaskPath`` PNGs.
            class_descriptions: ``class-descriptions-boxable.csv`` for display names.
            class_names: classes to keep (display names if descriptions are given, else MIDs),
                case-insensitive; default: all, sorted.
            image_ids: ImageIDs to keep (default all).

        Returns:
            The :class:`LoadReport` (also in ``self.load_report``).
        """
        names = read_class_descriptions(class_descriptions) if class_descriptions else {}
        rows = self._read_segmentation_csv(csv_path)
        masks_by_name = _index_files(mask_dir, ".png")
        report = LoadReport(f"openimages segmentation {csv_path}")
        wanted_ids = set(image_ids) if image_ids is not None else None
        lower = {n.lower(): n for n in class_names} if class_names is not None else None
        table = ClassTable(class_names)
        per_image: Dict[str, List[Dict[str, Any]]] = {}
        for line, row in rows:
            image_id = row["ImageID"]
            if wanted_ids is not None and image_id not in wanted_ids:
                continue
            where = f"{csv_path} line {line} ({row['MaskPath']})"
            label = names.get(row["LabelName"], row["LabelName"])
            if lower is not None:
                if label.lower() not in lower:
                    report.skip("unknown class", f"{where}: class {label!r} not in class_names")
                    continue
                label = lower[label.lower()]
            mask_path = masks_by_name.get(os.path.basename(row["MaskPath"]))
            if mask_path is None:
                report.skip("missing mask file", f"{where}: {row['MaskPath']} not found under {mask_dir}")
                continue
            table.see(label)
            per_image.setdefault(image_id, []).append({"label": label, "mask_path": mask_path,
                                                       "box_id": row.get("BoxID")})
        table.freeze()
        table.register(self, source)
        for image_id in sorted(per_image):
            path = os.path.join(image_dir, image_id + ".jpg")
            if not os.path.isfile(path):
                report.skip("missing image file", f"image {image_id}: not found {path!r}")
                continue
            try:
                height, width = image_size(path)
            except OSError as e:
                report.skip("unreadable image", f"image {image_id}: {e}")
                continue
            instances = [dict(i, class_id=table.id_of(i["label"])) for i in per_image[image_id]]
            self.add_image(source, image_id=image_id, path=path, width=width, height=height,
                           mask_source="png", instances=instances)
            report.keep("images")
            report.keep("instances", len(instances))
        report.log()
        self.load_report = report
        return report

    @staticmethod
    def _read_segmentation_csv(csv_path: str) -> List[Tuple[int, Dict[str, str]]]:
        with open(csv_path, newline="", encoding="utf-8") as f:
            reader = csv.DictReader(f)
            missing = [c for c in SEGMENTATION_COLUMNS if c not in (reader.fieldnames or [])]
            if missing:
                raise ValueError(f"{csv_path}: missing column(s) {missing}; header is {reader.fieldnames}")
            return [(k + 2, row) for k, row in enumerate(reader)]

    # -- Dataset API ----------------------------------------------------------------------------
    def load_mask(self, image_id: int) -> Tuple[np.ndarray, np.ndarray]:
        """Masks ``bool [H, W, N]`` (filled boxes or resized PNGs) and class ids ``int32 [N]``."""
        info = self.image_info[image_id]
        if "instances" not in info:
            return super().load_mask(image_id)
        h, w = info["height"], info["width"]
        masks, ids = [], []
        for inst in info["instances"]:
            if info["mask_source"] == "boxes":
                m = box_mask(*inst["box"], (h, w))
            else:
                m = _read_mask_png(inst["mask_path"], h, w)
            if not m.any():
                continue
            masks.append(m)
            ids.append(self.map_source_class_id(f"{info['source']}.{inst['class_id']}"))
        return stack_masks(masks, ids, h, w)

    def image_reference(self, image_id: int) -> str:
        return str(self.image_info[image_id]["path"])


def _index_files(folder: str, ext: str) -> Dict[str, str]:
    if not os.path.isdir(folder):
        raise FileNotFoundError(f"mask folder not found: {folder!r}")
    found = {}
    for dirpath, _, files in os.walk(folder):
        for f in files:
            if f.lower().endswith(ext):
                found.setdefault(f, os.path.join(dirpath, f))
    return found


def _read_mask_png(path: str, height: int, width: int) -> np.ndarray:
    """A binary mask PNG as ``bool [height, width]``; other sizes are resized (nearest)."""
    from PIL import Image
    with Image.open(path) as im:
        im = im.convert("L")
        if im.size != (width, height):
            im = im.resize((width, height), Image.NEAREST)
        return np.asarray(im) > 0
