"""Loaders for common annotation formats, each a :class:`mrcnn.data.dataset.Dataset` subclass.

| format | class | method |
|---|---|---|
| COCO JSON (polygons, RLE, compressed RLE) | :class:`CocoDataset` | ``load_coco`` |
| LabelMe JSON | :class:`LabelMeDataset` | ``load_labelme`` |
| VIA 1.x / 2.x JSON (Matterport balloon) | :class:`ViaDataset` | ``load_via`` |
| PASCAL VOC XML + SegmentationObject PNG | :class:`VocDataset` | ``load_voc`` |
| ``openimages`` package layout; Open Images segmentation CSV | :class:`OpenImagesDataset` | ``load_openimages``, ``load_openimages_segmentation`` |
| LISC leukocytes | :class:`LiscDataset` | ``load_lisc`` |

Every ``load_*`` method returns a :class:`LoadReport` (kept / skipped / ignored
counts and one message per skipped item) and stores it in ``dataset.load_report``.
Call ``dataset.prepare()`` afterwards, as with any Matterport dataset.
"""
from mrcnn.data.formats.coco import CocoDataset
from mrcnn.data.formats.common import LoadReport, split_ids
from mrcnn.data.formats.labelme import LabelMeDataset
from mrcnn.data.formats.lisc import LISC_CLASSES, LiscDataset
from mrcnn.data.formats.openimages import OpenImagesDataset
from mrcnn.data.formats.via import ViaDataset
from mrcnn.data.formats.voc import VOC_CLASSES, VocDataset

__all__ = ["CocoDataset", "LabelMeDataset", "ViaDataset", "VocDataset", "OpenImagesDataset",
           "LiscDataset", "LoadReport", "split_ids", "VOC_CLASSES", "LISC_CLASSES"]
