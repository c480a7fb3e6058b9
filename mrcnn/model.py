"""Matterport's ``mrcnn.model``: the public names, re-exported from the internal modules.

``import mrcnn.model as modellib`` then ``modellib.MaskRCNN(mode, config, model_dir)``
works as in Matterport. The graph pieces live in :mod:`mrcnn.modeling`, the numpy data
path in :mod:`mrcnn.data`, training in :mod:`mrcnn.engine`.
"""
import importlib as _importlib

from mrcnn.core.anchors import compute_backbone_shapes  # noqa: F401
from mrcnn.core.image import compose_image_meta, mold_image, parse_image_meta, unmold_image  # noqa: F401
from mrcnn.core.log import log  # noqa: F401
from mrcnn.data.loader import data_generator, load_image_gt  # noqa: F401
from mrcnn.data.targets import build_detection_targets, build_rpn_targets, generate_random_rois  # noqa: F401
from mrcnn.engine.callbacks import NaNLossError  # noqa: F401
from mrcnn.modeling.maskrcnn import (INFERENCE_OUTPUTS, LAYER_REGEX, TRAINING_OUTPUTS,  # noqa: F401
                                     ImageInputError, MaskRCNN, MaskRCNNTrainingModel)

# Graph pieces, by the module that defines them (Matterport kept them all in model.py).
_GRAPH_NAMES = {
    "mrcnn.modeling.backbone": ["BatchNorm", "identity_block", "conv_block", "resnet_graph", "build_backbone",
                                "fpn_graph"],
    "mrcnn.modeling.rpn": ["rpn_graph", "build_rpn_model", "rpn_outputs"],
    "mrcnn.modeling.heads": ["fpn_classifier_graph", "build_fpn_mask_graph", "TimeDistributed"],
    "mrcnn.modeling.export": ["export_saved_model"],
    "mrcnn.modeling.introspection": ["get_intermediates", "run_graph"],
    "mrcnn.modeling.proposal": ["ProposalLayer"],
    "mrcnn.modeling.roi_align": ["PyramidROIAlign"],
    "mrcnn.modeling.detection_targets": ["DetectionTargetLayer", "detection_targets_graph"],
    "mrcnn.modeling.detection": ["DetectionLayer", "refine_detections_graph"],
    "mrcnn.modeling.losses": ["smooth_l1_loss", "rpn_class_loss_graph", "rpn_bbox_loss_graph",
                              "mrcnn_class_loss_graph", "mrcnn_bbox_loss_graph", "mrcnn_mask_loss_graph"],
    "mrcnn.modeling.graph_ops": ["apply_box_deltas_graph", "clip_boxes_graph", "overlaps_graph",
                                 "box_refinement_graph", "norm_boxes_graph", "denorm_boxes_graph",
                                 "trim_zeros_graph", "batch_pack_graph", "parse_image_meta_graph",
                                 "log2_graph", "batch_slice"],
    "mrcnn.modeling.weights": ["WeightsError", "WeightsFileError", "WeightsMismatchError", "LoadReport",
                               "load_weights", "save_weights"],
}
for _module, _names in _GRAPH_NAMES.items():
    _mod = _importlib.import_module(_module)
    for _name in _names:
        if hasattr(_mod, _name):
            globals()[_name] = getattr(_mod, _name)
del _module, _names, _mod, _name
