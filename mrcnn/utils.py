"""Matterport's ``mrcnn.utils``: the public names, re-exported from the internal modules.

Numpy functions give Matterport's results; TensorFlow helpers (``batch_slice``,
``box_refinement_graph``) are imported on first use so that ``from mrcnn import
utils`` stays light.
"""
from mrcnn.core.anchors import generate_anchors, generate_pyramid_anchors  # noqa: F401
from mrcnn.core.boxes import (apply_box_deltas, box_refinement, compute_iou, compute_overlaps,  # noqa: F401
                              denorm_boxes, extract_bboxes, non_max_suppression, norm_boxes, trim_zeros)
from mrcnn.core.image import resize, resize_image  # noqa: F401
from mrcnn.core.masks import (compute_overlaps_masks, expand_mask, minimize_mask, mold_mask, resize_mask,  # noqa: F401
                              unmold_mask, unmold_masks)
from mrcnn.data.dataset import Dataset  # noqa: F401
from mrcnn.evaluation.voc import compute_ap, compute_ap_range, compute_matches, compute_recall  # noqa: F401
from mrcnn.io.download import COCO_MODEL_URL, download_trained_weights  # noqa: F401

_LAZY = {
    "batch_slice": "mrcnn.modeling.graph_ops",
    "box_refinement_graph": "mrcnn.modeling.graph_ops",
}


def __getattr__(name):
    if name in _LAZY:
        import importlib

        value = getattr(importlib.import_module(_LAZY[name]), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'mrcnn.utils' has no attribute {name!r}")
