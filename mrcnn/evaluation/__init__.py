"""Evaluation: VOC-style mask AP (Matterport's metrics), COCO box/mask AP
through pycocotools, and training-curve plots.

``voc`` needs only NumPy; ``coco`` imports pycocotools on use; ``curves``
imports TensorFlow only to read TensorBoard event files.
"""
from mrcnn.evaluation.voc import (DEFAULT_IOU_THRESHOLDS, DatasetEvaluation, ImageResult,
                                  compute_ap, compute_ap_range, compute_matches,
                                  compute_recall, evaluate_dataset, evaluate_model, trim_zeros)
from mrcnn.evaluation.coco import (STAT_NAMES, build_coco_results, encode_masks, evaluate_coco,
                                   evaluate_model_coco)
from mrcnn.evaluation.curves import (history_to_series, plot_training_curves,
                                     read_tensorboard_scalars)

__all__ = [
    "DEFAULT_IOU_THRESHOLDS", "DatasetEvaluation", "ImageResult", "compute_ap",
    "compute_ap_range", "compute_matches", "compute_recall", "evaluate_dataset",
    "evaluate_model", "trim_zeros", "STAT_NAMES", "build_coco_results", "encode_masks",
    "evaluate_coco", "evaluate_model_coco", "history_to_series", "plot_training_curves",
    "read_tensorboard_scalars",
]
