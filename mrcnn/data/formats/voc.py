"""PASCAL VOC (XML boxes and SegmentationObject PNGs) → :class:`VocDataset`.

Layout (``root`` = e.g. ``VOCdevkit/VOC2012``)::

    Annotations/<id>.xml             boxes (1-based, inclusive pixel corners)
    JPEGImages/<id>.jpg
    SegmentationObject/<id>.png      instance ids 1..N, 0 background, 255 void border
    SegmentationClass/<id>.png       class index per pixel (1..20), 255 void
    ImageSets/Segmentation/<set>.txt or ImageSets/Main/<set>.txt

Masks come from one of two places (``mask_mode``):

- ``"segmentation"``: the instance PNG. The void value 255 (the border band
  VOC draws around objects) belongs to no instance. The class of instance k is
  the most frequent non-void value of the SegmentationClass PNG under it; without
  that PNG, the k-th ``<object>`` of the XML (VOC numbers instances in object order).
  Images without an instance PNG are skipped with a count.
- ``"boxes"``: every XML box becomes a **filled rectangle** mask: VOC's
  ``xmin..xmax`` are 1-based inclusive, so pixel columns ``xmin-1 .. xmax-1``
  are set. Box masks are coarse: fine for a detector, poor for mask training.
- ``"auto"`` (default): the instance PNG where there is one, boxes elsewhere;
  ``image_info[i]["mask_source"]`` says which.

Boxes reaching past the image are clipped (counted), boxes entirely outside or
empty are skipped with a message. ``difficult`` objects are kept unless
``skip_difficult``.
"""
from __future__ import annotations

import os
import xml.etree.ElementTree as ET
from typing import Any, Dict, List, Optional, Sequence, Tuple

import numpy as np

from mrcnn.data.dataset import Dataset, stack_masks
from mrcnn.data.formats.common import ClassTable, LoadReport, box_mask, image_size

__all__ = ["VocDataset", "VOC_CLASSES", "parse_voc_xml", "read_class_names"]

VOC_CLASSES = ("aeroplane", "bicycle", "bird", "boat", "bottle", "bus", "car", "cat", "chair", "cow",
               "diningtable", "dog", "horse", "motorbike", "person", "pottedplant", "sheep", "sofa",
               "train", "tvmonitor")
VOID = 255
MASK_MODES = ("auto", "segmentation", "boxes")
IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp")


def read_class_names(path: str) -> List[str]:
    """Class names from a text file, one a line (e.g. labelme2voc's ``class_names.txt``).

    The background/ignore entries (``_background_``, ``__ignore__``, ``background``)
    are dropped, so the result is the foreground classes in PNG index order 1..K.
    """
    with open(path, encoding="utf-8") as f:
        names = [line.strip() for line in f if line.strip()]
    return [n for n in names if n not in ("_background_", "__ignore__", "background", "__background__")]


def parse_voc_xml(path: str) -> Dict[str, Any]:
    """Read a VOC annotation: ``{"filename", "width", "height", "objects": [...]}``.

    Each object is ``{"name", "difficult", "truncated", "box": (xmin, ymin, xmax, ymax)}``
    with the file's own numbers (floats allowed, element order free). Missing
    size → ``width``/``height`` None.

    Raises:
        ValueError: unparsable XML or an object without a usable ``bndbox``, naming the file.
    """
    try:
        root = ET.parse(path).getroot()
    except ET.ParseError as e:
        raise ValueError(f"{path}: not valid XML ({e})") from e
    size = root.find("size")

    def number(node, tag):
        text = node.findtext(tag) if node is not None else None
        return float(text) if text not in (None, "") else None

    width, height = number(size, "width"), number(size, "height")
    objects = []
    for k, obj in enumerate(root.findall("object")):
        name = (obj.findtext("name") or "").strip()
        box = obj.find("bndbox")
        try:
            coords = tuple(number(box, t) for t in ("xmin", "ymin", "xmax", "ymax"))
        except ValueError as e:
            raise ValueError(f"{path}: object {k} ({name!r}) has a non-numeric bndbox ({e})") from e
        objects.append({"name": name, "difficult": int(number(obj, "difficult") or 0),
                        "truncated": int(number(obj, "truncated") or 0),
                        "box": None if box is None or None in coords else coords})
    return {"filename": (root.findtext("filename") or "").strip(),
            "width": int(width) if width else None, "height": int(height) if height else None,
            "objects": objects}


class VocDataset(Dataset):
    """PASCAL VOC detection / instance segmentation (source ``"voc"`` by default)."""

    def load_voc(self, root: str, image_set: Optional[str] = None,
                 class_names: Optional[Sequence[str]] = VOC_CLASSES, mask_mode: str = "auto",
                 image_dir: Optional[str] = None, skip_difficult: bool = False,
                 one_based: bool = True, source: str = "voc") -> "LoadReport":
        """Add VOC images and objects.

        Args:
            root: the VOC year folder (holding ``Annotations``, ``JPEGImages``...).
            image_set: name of an ``ImageSets/{Segmentation,Main}/<name>.txt`` list, or a
                path to such a file; default: every XML in ``Annotations`` (or, without
                XMLs, every PNG in ``SegmentationObject``).
            class_names: foreground classes in SegmentationClass index order 1..K
                (default the 20 VOC classes); ``None`` discovers names from the XMLs.
            mask_mode: ``"auto"``, ``"segmentation"`` or ``"boxes"`` (module docstring).
            image_dir: image folder (default ``root/JPEGImages``).
            one_based: XML boxes are 1-based inclusive (VOC); ``False`` for 0-based
                inclusive corners (what the ``openimages`` package writes).

        Returns:
            The :class:`LoadReport` (also in ``self.load_report``).
        """
        if mask_mode not in MASK_MODES:
            raise ValueError(f"mask_mode must be one of {MASK_MODES}, got {mask_mode!r}")
        if not os.path.isdir(root):
            raise FileNotFoundError(f"VOC root not found: {root!r}")
        report = LoadReport(f"voc {root}")
        dirs = {"xml": os.path.join(root, "Annotations"), "obj": os.path.join(root, "SegmentationObject"),
                "cls": os.path.join(root, "SegmentationClass"),
                "img": image_dir or os.path.join(root, "JPEGImages")}
        ids = self._image_set(root, image_set, dirs)
        table = ClassTable(class_names)
        records = []
        for name in ids:
            record = self._read_record(name, dirs, mask_mode, report)
            if record is not None:
                for obj in record["objects"]:
                    table.see(obj["name"])
                records.append(record)
        table.freeze()
        table.register(self, source)
        for record in records:
            self._add_record(record, table, skip_difficult, one_based, source, report)
        report.log()
        self.load_report = report
        return report

    @staticmethod
    def _image_set(root: str, image_set: Optional[str], dirs: Dict[str, str]) -> List[str]:
        if image_set is not None:
            candidates = [image_set] + [os.path.join(root, "ImageSets", sub, image_set + ".txt")
                                        for sub in ("Segmentation", "Main")]
            for c in candidates:
                if os.path.isfile(c):
                    with open(c) as f:
                        return [line.split()[0] for line in f if line.strip()]
            raise FileNotFoundError(f"image set {image_set!r} not found (tried {candidates})")
        for key, ext in (("xml", ".xml"), ("obj", ".png")):
            if os.path.isdir(dirs[key]):
                names = sorted(os.path.splitext(f)[0] for f in os.listdir(dirs[key]) if f.endswith(ext))
                if names:
                    return names
        raise FileNotFoundError(f"{root!r} has no Annotations/*.xml nor SegmentationObject/*.png")

    @staticmethod
    def _find_image(name: str, filename: str, image_dir: str) -> Optional[str]:
        candidates = ([os.path.join(image_dir, filename)] if filename else []) + \
            [os.path.join(image_dir, name + ext) for ext in IMAGE_EXTENSIONS]
        return next((c for c in candidates if os.path.isfile(c)), None)

    def _read_record(self, name: str, dirs: Dict[str, str], mask_mode: str,
                     report: LoadReport) -> Optional[Dict[str, Any]]:
        xml_path = os.path.join(dirs["xml"], name + ".xml")
        ann = {"filename": "", "width": None, "height": None, "objects": []}
        if os.path.isfile(xml_path):
            try:
                ann = parse_voc_xml(xml_path)
            except ValueError as e:
                report.skip("bad xml", str(e))
                return None
        else:
            xml_path = None
        obj_png = os.path.join(dirs["obj"], name + ".png")
        cls_png = os.path.join(dirs["cls"], name + ".png")
        has_png = os.path.isfile(obj_png)
        if mask_mode == "segmentation" and not has_png:
            report.skip("no instance png", f"{name}: no {obj_png}")
            return None
        if not has_png and xml_path is None:
            report.skip("no annotation", f"{name}: neither XML nor instance PNG")
            return None
        image_path = self._find_image(name, ann["filename"], dirs["img"])
        if image_path is None:
            report.skip("missing image file", f"{name}: no image {ann['filename'] or name + '.*'} "
                        f"in {dirs['img']}")
            return None
        use_png = has_png and mask_mode != "boxes"
        return {"name": name, "xml": xml_path, "image_path": image_path, "ann": ann,
                "objects": ann["objects"], "use_png": use_png,
                "obj_png": obj_png if use_png else None,
                "cls_png": cls_png if use_png and os.path.isfile(cls_png) else None}

    def _add_record(self, record: Dict[str, Any], table: ClassTable, skip_difficult: bool,
                    one_based: bool, source: str, report: LoadReport) -> None:
        try:
            # the image itself is the truth: XML sizes are sometimes missing or swapped
            height, width = image_size(record["image_path"])
        except OSError as e:
            report.skip("unreadable image", f"{record['name']}: {e}")
            return
        if record["use_png"]:
            instances = self._png_instances(record, table, report)
            mask_source = "segmentation"
        else:
            instances = self._box_instances(record, table, height, width, skip_difficult,
                                            one_based, report)
            mask_source = "boxes"
        if instances is None:
            return
        self.add_image(source, image_id=record["name"], path=record["image_path"], width=width,
                       height=height, xml_path=record["xml"], mask_source=mask_source,
                       instances=instances, object_png=record["obj_png"], class_png=record["cls_png"])
        report.keep("images")
        report.keep(f"images with {mask_source} masks")
        report.keep("instances", len(instances))

    @staticmethod
    def _box_instances(record, table, height, width, skip_difficult, one_based, report):
        instances = []
        for k, obj in enumerate(record["objects"]):
            where = f"{record['xml']}: object {k} ({obj['name']!r})"
            if skip_difficult and obj["difficult"]:
                report.ignore("difficult objects")
                continue
            cid = table.id_of(obj["name"])
            if cid is None:
                report.skip("unknown class", f"{where}: not in class_names")
                continue
            if obj["box"] is None:
                report.skip("missing box", f"{where}: no complete bndbox")
                continue
            xmin, ymin, xmax, ymax = obj["box"]
            offset = 1.0 if one_based else 0.0
            # inclusive corner pixels → [y1, y2) in 0-based pixel indices
            y1, x1, y2, x2 = ymin - offset, xmin - offset, ymax - offset + 1, xmax - offset + 1
            if y2 <= y1 or x2 <= x1:
                report.skip("empty box", f"{where}: box {obj['box']} is empty")
                continue
            if y2 <= 0 or x2 <= 0 or y1 >= height or x1 >= width:
                report.skip("box outside the image", f"{where}: box {obj['box']} is outside "
                            f"the {width}x{height} image")
                continue
            if y1 < 0 or x1 < 0 or y2 > height or x2 > width:
                report.ignore("boxes clipped to the image")
            instances.append({"class_id": cid, "box": (y1, x1, y2, x2), "object_index": k})
        return instances

    @staticmethod
    def _png_instances(record, table, report):
        obj = _read_png(record["obj_png"])
        values = [int(v) for v in np.unique(obj) if v not in (0, VOID)]
        cls = _read_png(record["cls_png"]) if record["cls_png"] else None
        instances = []
        for v in values:
            where = f"{record['obj_png']}: instance {v}"
            if cls is not None:
                under = cls[(obj == v) & (cls != VOID) & (cls != 0)]
                if under.size == 0:
                    report.skip("instance without class", f"{where}: class PNG is 0/void under it")
                    continue
                index = int(np.bincount(under).argmax())
                name = table.names[index - 1] if 1 <= index <= len(table.names) else None
                if name is None:
                    report.skip("unknown class", f"{where}: class index {index} is outside class_names "
                                f"(1..{len(table.names)})")
                    continue
            else:
                if v > len(record["objects"]):
                    report.skip("instance without object", f"{where}: the XML has only "
                                f"{len(record['objects'])} objects and there is no class PNG")
                    continue
                name = record["objects"][v - 1]["name"]
            cid = table.id_of(name)
            if cid is None:
                report.skip("unknown class", f"{where}: class {name!r} not in class_names")
                continue
            instances.append({"class_id": cid, "png_value": v})
        return instances

    # -- Dataset API ----------------------------------------------------------------------------
    def load_mask(self, image_id: int) -> Tuple[np.ndarray, np.ndarray]:
        """Instance masks ``bool [H, W, N]`` (void pixels in none) and class ids ``int32 [N]``."""
        info = self.image_info[image_id]
        if "instances" not in info:
            return super().load_mask(image_id)
        h, w = info["height"], info["width"]
        obj = _read_png(info["object_png"]) if info["mask_source"] == "segmentation" else None
        if obj is not None and obj.shape != (h, w):
            raise ValueError(f"image {image_id}: {info['object_png']} is {obj.shape}, image is {(h, w)}")
        masks, ids = [], []
        for inst in info["instances"]:
            m = obj == inst["png_value"] if obj is not None else box_mask(*inst["box"], (h, w))
            masks.append(m)
            ids.append(self.map_source_class_id(f"{info['source']}.{inst['class_id']}"))
        return stack_masks(masks, ids, h, w)

    def image_reference(self, image_id: int) -> str:
        return str(self.image_info[image_id]["path"])


def _read_png(path: str) -> np.ndarray:
    """Index values of a VOC PNG (palette indices, not colours)."""
    from PIL import Image
    with Image.open(path) as im:
        if im.mode not in ("P", "L", "I", "I;16"):
            raise ValueError(f"{path}: expected a palette or grey index PNG, got mode {im.mode}")
        return np.asarray(im).astype(np.int64)
