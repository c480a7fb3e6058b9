"""Matterport's public names exist in the public modules."""
import importlib

import pytest

UTILS = ["extract_bboxes", "compute_iou", "compute_overlaps", "compute_overlaps_masks", "non_max_suppression",
         "apply_box_deltas", "box_refinement", "box_refinement_graph", "Dataset", "resize_image", "resize_mask",
         "minimize_mask", "expand_mask", "mold_mask", "unmold_mask", "generate_anchors", "generate_pyramid_anchors",
         "trim_zeros", "compute_matches", "compute_ap", "compute_ap_range", "compute_recall", "batch_slice",
         "download_trained_weights", "norm_boxes", "denorm_boxes", "resize", "COCO_MODEL_URL"]
MODEL = ["MaskRCNN", "BatchNorm", "identity_block", "conv_block", "resnet_graph", "ProposalLayer",
         "PyramidROIAlign", "DetectionTargetLayer", "DetectionLayer", "rpn_graph", "build_rpn_model",
         "fpn_classifier_graph", "build_fpn_mask_graph", "smooth_l1_loss", "rpn_class_loss_graph",
         "rpn_bbox_loss_graph", "mrcnn_class_loss_graph", "mrcnn_bbox_loss_graph", "mrcnn_mask_loss_graph",
         "load_image_gt", "build_detection_targets", "build_rpn_targets", "generate_random_rois",
         "data_generator", "compose_image_meta", "parse_image_meta", "parse_image_meta_graph", "mold_image",
         "unmold_image", "trim_zeros_graph", "batch_pack_graph", "norm_boxes_graph", "denorm_boxes_graph",
         "apply_box_deltas_graph", "clip_boxes_graph", "overlaps_graph", "detection_targets_graph",
         "refine_detections_graph", "log2_graph", "compute_backbone_shapes", "log"]
VISUALIZE = ["display_images", "random_colors", "apply_mask", "display_instances", "display_differences",
             "draw_rois", "draw_box", "display_top_masks", "plot_precision_recall", "plot_overlaps", "draw_boxes",
             "display_table", "display_weight_stats"]


@pytest.mark.parametrize("module,names", [("mrcnn.utils", UTILS), ("mrcnn.model", MODEL),
                                          ("mrcnn.visualize", VISUALIZE)])
def test_matterport_names(module, names):
    mod = importlib.import_module(module)
    missing = [n for n in names if not hasattr(mod, n)]
    assert not missing, f"{module} lacks {missing}"


def test_config_import():
    from mrcnn.config import Config

    class MyConfig(Config):
        NAME = "mine"
        NUM_CLASSES = 3

    assert MyConfig().BATCH_SIZE == 2
