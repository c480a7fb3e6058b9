"""The Mask R-CNN model: Matterport's ``MaskRCNN`` class on Keras 3.

``MaskRCNN(mode, config, model_dir)`` builds a functional Keras graph whose
layers keep Matterport's names (``input_image``, ``res4f_out``, ``fpn_p2``,
``rpn_model``, ``ROI``, ``proposal_targets``, ``mrcnn_detection``,
``mrcnn_mask``, the loss layers, ...), so weights load by name and
``keras_model.get_layer(...)`` works as in the notebooks.

Coordinates: the network works on normalised boxes ``(y1, x1, y2, x2)``
(``(0, 0, 1, 1)`` is the molded image); ``detect`` returns pixel boxes of the
original image with y2/x2 exclusive.
"""
from __future__ import annotations

import datetime
import logging
import os
import re
import threading
from typing import Any, Dict, List, Optional, Sequence, Tuple

import keras
import numpy as np
import tensorflow as tf
from keras import layers as KL
from keras import ops

from mrcnn.config import LOSS_NAMES
from mrcnn.core.anchors import get_anchors as _get_norm_anchors
from mrcnn.core.anchors import get_pixel_anchors
from mrcnn.core.boxes import denorm_boxes, norm_boxes
from mrcnn.core.image import compose_image_meta, mold_image, mold_table, resize_image
from mrcnn.core.masks import unmold_masks

from . import weights as _weights
from .backbone import build_backbone
from .detection import DetectionLayer
from .graph_ops import norm_boxes_graph, parse_image_meta_graph
from .heads import build_fpn_mask_graph, fpn_classifier_graph
from .losses import (mrcnn_bbox_loss_graph, mrcnn_class_loss_graph, mrcnn_mask_loss_graph,
                     rpn_bbox_loss_graph, rpn_class_loss_graph)
from .proposal import ProposalLayer
from .rpn import build_rpn_model, rpn_outputs

__all__ = ["MaskRCNN", "MaskRCNNTrainingModel", "mold_raw_inputs", "LAYER_REGEX", "INFERENCE_OUTPUTS",
           "TRAINING_OUTPUTS", "ImageInputError"]

logger = logging.getLogger("mrcnn.model")

# Matterport's presets for ``train(layers=...)``.
LAYER_REGEX = {
    "heads": r"(mrcnn\_.*)|(rpn\_.*)|(fpn\_.*)",
    "3+": r"(res3.*)|(bn3.*)|(res4.*)|(bn4.*)|(res5.*)|(bn5.*)|(mrcnn\_.*)|(rpn\_.*)|(fpn\_.*)",
    "4+": r"(res4.*)|(bn4.*)|(res5.*)|(bn5.*)|(mrcnn\_.*)|(rpn\_.*)|(fpn\_.*)",
    "5+": r"(res5.*)|(bn5.*)|(mrcnn\_.*)|(rpn\_.*)|(fpn\_.*)",
    "all": ".*",
}

INFERENCE_OUTPUTS = ["mrcnn_detection", "mrcnn_class", "mrcnn_bbox", "mrcnn_mask", "ROI",
                     "rpn_class", "rpn_bbox"]
TRAINING_OUTPUTS = ["rpn_class_logits", "rpn_class", "rpn_bbox", "mrcnn_class_logits",
                    "mrcnn_class", "mrcnn_bbox", "mrcnn_mask", "ROI", "output_rois"] + list(LOSS_NAMES)


class ImageInputError(ValueError):
    """An image given to ``detect``/``mold_inputs`` cannot be processed."""


# ----------------------------------------------------------------------------
# Small graph layers
# ----------------------------------------------------------------------------
class AnchorsLayer(KL.Layer):
    """Constant anchors ``[A, 4]`` broadcast to the batch of its input.

    Replaces Matterport's ``Lambda(lambda x: tf.Variable(anchors))``: the
    anchors are a constant of the graph, so they get no gradient, no weight
    decay and no entry in weight files.
    """

    def __init__(self, anchors: np.ndarray, **kwargs: Any) -> None:
        kwargs.setdefault("dtype", "float32")
        super().__init__(**kwargs)
        self.anchors = np.asarray(anchors, dtype=np.float32)

    def call(self, image):
        anchors = ops.convert_to_tensor(self.anchors, dtype="float32")
        batch = ops.shape(image)[0]  # a tensor under tf.function with a dynamic batch
        return ops.broadcast_to(anchors[None], (batch,) + self.anchors.shape)

    def compute_output_shape(self, input_shape):
        return (input_shape[0],) + self.anchors.shape


class NormBoxesLayer(KL.Layer):
    """Pixel boxes ``[B, N, 4]`` to normalised ones, using the image tensor's size."""

    def __init__(self, **kwargs: Any) -> None:
        kwargs.setdefault("dtype", "float32")
        super().__init__(**kwargs)

    def call(self, inputs):
        boxes, image = inputs
        return norm_boxes_graph(ops.cast(boxes, "float32"), _image_hw(image))

    def compute_output_shape(self, input_shape):
        return input_shape[0]


class MetaField(KL.Layer):
    """One field of the image-meta vector (``parse_image_meta_graph``)."""

    def __init__(self, field: str, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.field = field

    def call(self, meta):
        return parse_image_meta_graph(meta)[self.field]

    def get_config(self) -> dict:
        return {**super().get_config(), "field": self.field}


class DetectionBoxes(KL.Layer):
    """``[B, N, 6]`` detections → ``[B, N, 4]`` normalised boxes for the mask head.

    All ``N = DETECTION_MAX_INSTANCES`` rows, padding included: trimming to
    the real detections would give the mask head a data-dependent batch (a
    host sync and a recompile under XLA). Padding rows are zero boxes; their
    masks are never read (``unmold_detections`` stops at the first zero row).
    """

    def call(self, detections):
        return detections[..., :4]

    def compute_output_shape(self, input_shape):
        return tuple(input_shape[:-1]) + (4,)


class Identity(KL.Layer):
    """Pass-through with a name (Matterport's ``output_rois``)."""

    def call(self, x):
        return ops.copy(x)

    def compute_output_shape(self, input_shape):
        return input_shape


class LossLayer(KL.Layer):
    """Computes one named loss as a scalar output of the training graph."""

    def __init__(self, loss_fn, config=None, **kwargs: Any) -> None:
        kwargs.setdefault("dtype", "float32")
        super().__init__(**kwargs)
        self.loss_fn = loss_fn
        self.loss_config = config

    def call(self, inputs):
        if self.loss_config is not None:
            return self.loss_fn(self.loss_config, *inputs)
        return self.loss_fn(*inputs)

    def compute_output_shape(self, input_shape):
        return ()


# ----------------------------------------------------------------------------
# Training model
# ----------------------------------------------------------------------------
def mold_raw_inputs(inputs, config):
    """The training inputs with a raw image molded on the device, as ``mold_image`` does.

    The input pipeline (:meth:`mrcnn.data.pipeline.InputPipeline.dataset_fn`) sends the
    resized image as uint8 ``[B, H, W, C]`` and the anchor labels as int8 ``[B, A, 1]``:
    4x fewer bytes for the host to copy and to move to the accelerator than the molded
    float32 image and int32 labels. Here a uint8 image becomes ``float32(value - MEAN_PIXEL)``
    with the subtraction in float64, by a 256-entry table per channel, so the result is
    bit-identical to Matterport's ``mold_image`` (float32 image minus the float64 mean, fed
    as float32); int8 labels become int32. Float images (molded already, e.g. Matterport's
    ``data_generator``) and int32 labels pass unchanged.

    ``inputs``: the 7 training inputs as a list/tuple in ``INPUT_NAMES`` order or a dict by
    input name; returned in the same form.
    """
    if isinstance(inputs, dict):
        out = dict(inputs)
        if "input_image" in out:
            out["input_image"] = _mold_raw_image(out["input_image"], config)
        if "input_rpn_match" in out:
            out["input_rpn_match"] = _widen_labels(out["input_rpn_match"])
        return out
    if not isinstance(inputs, (list, tuple)) or len(inputs) < 3:
        return inputs
    out = [_mold_raw_image(inputs[0], config), inputs[1], _widen_labels(inputs[2])] + list(inputs[3:])
    return out if isinstance(inputs, list) else tuple(out)


def _mold_raw_image(image, config):
    if _dtype_name(image) != "uint8":
        return image
    channels = int(image.shape[-1])
    mean = np.asarray(config.MEAN_PIXEL, dtype=np.float64).reshape(-1)
    if mean.shape != (channels,):
        raise ValueError(f"MEAN_PIXEL has {mean.shape[0]} values for a {channels}-channel image")
    table = mold_table(mean).reshape(-1)  # flat index of (value v, channel c): v * C + c
    index = ops.cast(image, "int32") * channels + ops.arange(channels, dtype="int32")
    return ops.take(ops.convert_to_tensor(table), index)


def _dtype_name(x) -> Optional[str]:
    dtype = getattr(x, "dtype", None)
    return None if dtype is None else keras.backend.standardize_dtype(dtype)


def _widen_labels(labels):
    if _dtype_name(labels) != "int8":
        return labels
    return ops.cast(labels, "int32")


class MaskRCNNTrainingModel(keras.Model):
    """Functional training graph whose loss is the sum of its loss outputs.

    Keras 3 has no ``Functional.add_loss``; the five losses are outputs of the
    graph and :meth:`compute_loss` weights them with LOSS_WEIGHTS, adds
    Matterport's L2 weight decay and updates one ``Mean`` tracker per loss, so
    ``fit`` reports ``rpn_class_loss`` ... ``mrcnn_mask_loss`` beside ``loss``.
    """

    def __init__(self, inputs, outputs, mrcnn_config=None, name: str = "mask_rcnn",
                 **kwargs: Any) -> None:
        super().__init__(inputs=inputs, outputs=outputs, name=name, **kwargs)
        self.mrcnn_config = mrcnn_config
        self.loss_trackers = [keras.metrics.Mean(name=n) for n in LOSS_NAMES]
        self._folded_training = None  # fold.FoldedGraph of the training graph, built on first use
        # False: training steps run Keras' own executor (BatchNorm unfolded); set before compile().
        self.fold_frozen_batchnorm = True

    def call(self, inputs, training=None, mask=None, **kwargs):
        inputs = mold_raw_inputs(inputs, self.mrcnn_config)
        # On TensorFlow a training step runs the graph with each frozen BatchNorm folded
        # into the convolution before it (fold.FoldedGraph): same function of the same
        # variables, without the BatchNorm's passes over the feature maps forward and
        # backward. Other calls (inference-mode, masks, other backends) are Keras' own.
        no_mask = mask is None or all(m is None for m in keras.tree.flatten(mask))
        if training and no_mask and not kwargs and keras.backend.backend() == "tensorflow" \
                and self.fold_frozen_batchnorm:
            from .fold import FoldedGraph
            if getattr(self, "_folded_training", None) is None:
                self._folded_training = FoldedGraph(self, training=True)
            outputs = self._folded_training(self._standardize_inputs(inputs))
            return outputs[0] if len(outputs) == 1 else outputs
        return super().call(inputs, training=training, mask=mask, **kwargs)

    def loss_terms(self, y_pred) -> Dict[str, Any]:
        """The weighted losses by name (the last five outputs), float32 scalars."""
        weights = getattr(self.mrcnn_config, "LOSS_WEIGHTS", {}) or {}
        values = list(y_pred)[-len(LOSS_NAMES):]
        return {name: ops.mean(ops.cast(v, "float32")) * float(weights.get(name, 1.0))
                for name, v in zip(LOSS_NAMES, values)}

    def weight_decay(self):
        """Matterport's L2 term: ``WEIGHT_DECAY * sum(w**2) / size(w)`` per trainable
        weight, skipping BatchNorm gamma and beta (so kernels and biases decay)."""
        decay = float(getattr(self.mrcnn_config, "WEIGHT_DECAY", 0.0) or 0.0)
        weights = [w for w in self.trainable_weights if w.name not in ("gamma", "beta")]
        if keras.backend.backend() == "tensorflow":
            # TF's L2Loss (sum(w**2) / 2) reduces in one pass; square-then-sum writes a
            # weight-sized temporary for each of the ~44 M weights of a ResNet-50 FPN.
            return _add_n([(2.0 * decay / float(np.prod(w.shape))) * tf.nn.l2_loss(tf.cast(w, tf.float32))
                           for w in weights])
        return _add_n([decay * ops.sum(ops.square(ops.cast(w, "float32"))) / float(np.prod(w.shape))
                       for w in weights])

    def compute_loss(self, x=None, y=None, y_pred=None, sample_weight=None, training=True):
        terms = self.loss_terms(y_pred)
        for tracker, name in zip(self.loss_trackers, LOSS_NAMES):
            tracker.update_state(terms[name])
        total = _add_n(list(terms.values())) + self.weight_decay()
        if self.losses:
            total = total + _add_n([ops.cast(l, "float32") for l in self.losses])
        return total / float(_replicas_in_sync())

    @property
    def metrics(self):
        found = super().metrics
        return found + [t for t in self.loss_trackers if all(t is not m for m in found)]


def _add_n(terms):
    """Sum of a list of scalars, left to right; 0.0 for none (``keras.ops`` has no ``add_n``)."""
    total = ops.convert_to_tensor(0.0, dtype="float32")
    for t in terms:
        total = total + t
    return total


def _replicas_in_sync() -> int:
    """Replicas whose gradients Keras sums: > 1 only under a ``tf.distribute`` strategy.

    Under tf.distribute Keras sums the replicas' gradients and un-scales the
    reported loss, so each replica's ``compute_loss`` returns its share. Other
    backends train on one device here (``train()`` refuses strategies there).
    """
    if keras.backend.backend() != "tensorflow":
        return 1
    return tf.distribute.get_strategy().num_replicas_in_sync


def _image_hw(image):
    """``(height, width)`` of an ``[B, H, W, C]`` image batch for box normalisation.

    On TensorFlow a shape tensor even when the shape is static: with Python
    constants grappler turns the division into a reciprocal multiply, one ulp
    away from Matterport's boxes. Other backends see static shapes (jit traces
    per shape), and XLA keeps a true division.
    """
    if keras.backend.backend() == "tensorflow":
        return tf.shape(image)[1:3]
    return ops.shape(image)[1:3]


# ----------------------------------------------------------------------------
# MaskRCNN
# ----------------------------------------------------------------------------
class MaskRCNN(object):
    """Matterport's model wrapper: build, load weights, train, detect.

    Attributes kept from Matterport: ``keras_model``, ``mode``, ``config``,
    ``model_dir``, ``epoch``, ``log_dir``, ``checkpoint_path`` and, after
    :meth:`get_anchors`, ``anchors`` (pixel anchors of the last shape asked).
    """

    def __init__(self, mode: str, config, model_dir: str) -> None:
        if mode not in ("training", "inference"):
            raise ValueError(f"mode must be 'training' or 'inference', got {mode!r}")
        self.mode = mode
        self.config = config
        self.model_dir = model_dir
        self.set_log_dir()
        self._lock = threading.RLock()
        self._anchor_cache: Dict[tuple, np.ndarray] = {}
        self._predict_fn = None
        self._predict_key = None
        # detect() compiles its graph with XLA when True (jit_compile of tf.function).
        self.jit_compile = False
        self.keras_model = self.build(mode=mode, config=config)

    # ------------------------------------------------------------------
    # Graph
    # ------------------------------------------------------------------
    def build(self, mode: str, config) -> keras.Model:
        """Build the Keras graph for ``mode`` (see module docstring for names).

        Inference outputs (Matterport's order): ``detections [B, MAX_INST, 6]``
        (normalised y1, x1, y2, x2, class_id, score), ``mrcnn_class``,
        ``mrcnn_bbox``, ``mrcnn_mask``, ``rpn_rois``, ``rpn_class``, ``rpn_bbox``.
        Training outputs: see :data:`TRAINING_OUTPUTS`.
        """
        if mode not in ("training", "inference"):
            raise ValueError(f"mode must be 'training' or 'inference', got {mode!r}")
        h, w = int(config.IMAGE_SHAPE[0]), int(config.IMAGE_SHAPE[1])
        if h / 2 ** 6 != int(h / 2 ** 6) or w / 2 ** 6 != int(w / 2 ** 6):
            raise ValueError("Image size must be dividable by 2 at least 6 times to avoid "
                             "fractions when downscaling and upscaling. For example, use 256, "
                             f"320, 384, 448, 512, ... (got {h}x{w})")
        input_image = KL.Input(shape=[None, None, config.IMAGE_CHANNEL_COUNT], name="input_image")
        input_image_meta = KL.Input(shape=[config.IMAGE_META_SIZE], name="input_image_meta")
        if mode == "training":
            return self._build_training(config, input_image, input_image_meta)
        policy = getattr(config, "MIXED_PRECISION", None)
        if policy is None:
            return self._build_inference(config, input_image, input_image_meta)
        # Inference in reduced precision: conv and dense layers compute in the policy's
        # dtype, the box layers are float32 layers whatever the policy (weights stay float32
        # variables, so weight files load and save unchanged).
        from mrcnn.engine.distribute import policy_scope
        if policy == "mixed_bfloat16":
            from .fold import warn_if_no_native_bf16
            warn_if_no_native_bf16()
        elif not tf.config.list_logical_devices("GPU"):
            logger.warning("MIXED_PRECISION=%r at inference without a GPU: float16 convolutions "
                           "are emulated on CPUs and slower than float32", policy)
        with policy_scope(policy):
            model = self._build_inference(config, input_image, input_image_meta)
        # Class scores rank the detections: their softmax runs in float32.
        model.get_layer("mrcnn_class").dtype_policy = "float32"
        return model

    @staticmethod
    def _rpn(config, feature_maps):
        rpn = build_rpn_model(config.RPN_ANCHOR_STRIDE, len(config.RPN_ANCHOR_RATIOS),
                              config.TOP_DOWN_PYRAMID_SIZE,
                              getattr(config, "RPN_CONV_CHANNELS", 512))
        return rpn_outputs(rpn, feature_maps)

    def _build_inference(self, config, input_image, input_image_meta) -> keras.Model:
        input_anchors = KL.Input(shape=[None, 4], name="input_anchors")
        # Frozen BN at inference whatever TRAIN_BN says (Matterport would use
        # batch statistics with TRAIN_BN=True, which is never wanted here).
        train_bn = False
        p2, p3, p4, p5, p6 = build_backbone(input_image, config, train_bn=train_bn)
        mrcnn_feature_maps = [p2, p3, p4, p5]
        rpn_class_logits, rpn_class, rpn_bbox = self._rpn(config, [p2, p3, p4, p5, p6])
        rpn_rois = ProposalLayer(proposal_count=config.POST_NMS_ROIS_INFERENCE,
                                 nms_threshold=config.RPN_NMS_THRESHOLD, name="ROI",
                                 config=config)([rpn_class, rpn_bbox, input_anchors])
        mrcnn_class_logits, mrcnn_class, mrcnn_bbox = fpn_classifier_graph(
            rpn_rois, mrcnn_feature_maps, input_image_meta, config.POOL_SIZE, config.NUM_CLASSES,
            train_bn=train_bn, fc_layers_size=config.FPN_CLASSIF_FC_LAYERS_SIZE)
        detections = DetectionLayer(config, name="mrcnn_detection")(
            [rpn_rois, mrcnn_class, mrcnn_bbox, input_image_meta])
        detection_boxes = DetectionBoxes(name="detection_boxes")(detections)
        mrcnn_mask = build_fpn_mask_graph(detection_boxes, mrcnn_feature_maps, input_image_meta,
                                          config.MASK_POOL_SIZE, config.NUM_CLASSES,
                                          train_bn=train_bn,
                                          channels=getattr(config, "MASK_HEAD_CHANNELS", 256))
        return keras.Model([input_image, input_image_meta, input_anchors],
                           [detections, mrcnn_class, mrcnn_bbox, mrcnn_mask, rpn_rois,
                            rpn_class, rpn_bbox], name="mask_rcnn")

    def _build_training(self, config, input_image, input_image_meta) -> keras.Model:
        from .detection_targets import DetectionTargetLayer
        train_bn = config.TRAIN_BN
        input_rpn_match = KL.Input(shape=[None, 1], name="input_rpn_match", dtype="int32")
        input_rpn_bbox = KL.Input(shape=[None, 4], name="input_rpn_bbox", dtype="float32")
        input_gt_class_ids = KL.Input(shape=[None], name="input_gt_class_ids", dtype="int32")
        input_gt_boxes = KL.Input(shape=[None, 4], name="input_gt_boxes", dtype="float32")
        gt_boxes = NormBoxesLayer(name="norm_gt_boxes")([input_gt_boxes, input_image])
        if config.USE_MINI_MASK:
            mask_shape = [config.MINI_MASK_SHAPE[0], config.MINI_MASK_SHAPE[1], None]
        else:
            mask_shape = [int(config.IMAGE_SHAPE[0]), int(config.IMAGE_SHAPE[1]), None]
        input_gt_masks = KL.Input(shape=mask_shape, name="input_gt_masks", dtype="bool")

        p2, p3, p4, p5, p6 = build_backbone(input_image, config, train_bn=train_bn)
        mrcnn_feature_maps = [p2, p3, p4, p5]
        rpn_class_logits, rpn_class, rpn_bbox = self._rpn(config, [p2, p3, p4, p5, p6])
        anchors = AnchorsLayer(self.get_anchors(config.IMAGE_SHAPE), name="anchors")(input_image)
        rpn_rois = ProposalLayer(proposal_count=config.POST_NMS_ROIS_TRAINING,
                                 nms_threshold=config.RPN_NMS_THRESHOLD, name="ROI",
                                 config=config)([rpn_class, rpn_bbox, anchors])
        active_class_ids = MetaField("active_class_ids", name="active_class_ids")(input_image_meta)
        inputs = [input_image, input_image_meta, input_rpn_match, input_rpn_bbox,
                  input_gt_class_ids, input_gt_boxes, input_gt_masks]
        if config.USE_RPN_ROIS:
            target_rois = rpn_rois
        else:
            input_rois = KL.Input(shape=[config.POST_NMS_ROIS_TRAINING, 4], name="input_roi",
                                  dtype="int32")
            inputs.append(input_rois)
            target_rois = NormBoxesLayer(name="norm_input_roi")([input_rois, input_image])

        rois, target_class_ids, target_bbox, target_mask = DetectionTargetLayer(
            config, name="proposal_targets")([target_rois, input_gt_class_ids, gt_boxes,
                                              input_gt_masks])
        mrcnn_class_logits, mrcnn_class, mrcnn_bbox = fpn_classifier_graph(
            rois, mrcnn_feature_maps, input_image_meta, config.POOL_SIZE, config.NUM_CLASSES,
            train_bn=train_bn, fc_layers_size=config.FPN_CLASSIF_FC_LAYERS_SIZE)
        mask_rois, mask_targets, mask_class_ids = rois, target_mask, target_class_ids
        if getattr(config, "MASK_HEAD_POSITIVES_ONLY", False):
            from .sampling import FirstRows, positive_roi_count
            mask_rois, mask_targets, mask_class_ids = FirstRows(
                positive_roi_count(config), name="positive_rois")([rois, target_mask, target_class_ids])
        mrcnn_mask = build_fpn_mask_graph(mask_rois, mrcnn_feature_maps, input_image_meta,
                                          config.MASK_POOL_SIZE, config.NUM_CLASSES,
                                          train_bn=train_bn,
                                          channels=getattr(config, "MASK_HEAD_CHANNELS", 256))
        output_rois = Identity(name="output_rois")(rois)

        rpn_class_loss = LossLayer(rpn_class_loss_graph, name="rpn_class_loss")(
            [input_rpn_match, rpn_class_logits])
        rpn_bbox_loss = LossLayer(rpn_bbox_loss_graph, config=config, name="rpn_bbox_loss")(
            [input_rpn_bbox, input_rpn_match, rpn_bbox])
        class_loss = LossLayer(mrcnn_class_loss_graph, name="mrcnn_class_loss")(
            [target_class_ids, mrcnn_class_logits, active_class_ids])
        bbox_loss = LossLayer(mrcnn_bbox_loss_graph, name="mrcnn_bbox_loss")(
            [target_bbox, target_class_ids, mrcnn_bbox])
        mask_loss = LossLayer(mrcnn_mask_loss_graph, name="mrcnn_mask_loss")(
            [mask_targets, mask_class_ids, mrcnn_mask])
        outputs = [rpn_class_logits, rpn_class, rpn_bbox, mrcnn_class_logits, mrcnn_class,
                   mrcnn_bbox, mrcnn_mask, rpn_rois, output_rois, rpn_class_loss, rpn_bbox_loss,
                   class_loss, bbox_loss, mask_loss]
        return MaskRCNNTrainingModel(inputs, outputs, mrcnn_config=config, name="mask_rcnn")

    # ------------------------------------------------------------------
    # Weights and checkpoints
    # ------------------------------------------------------------------
    def find_last(self) -> str:
        """Path of the newest checkpoint of the newest log dir of this config.

        Raises:
            FileNotFoundError: no log dir or no checkpoint in it.
        """
        key = self.config.NAME.lower()
        dir_names = sorted(d for d in (os.listdir(self.model_dir) if os.path.isdir(self.model_dir)
                                       else []) if d.startswith(key))
        if not dir_names:
            raise FileNotFoundError(
                f"Could not find model directory under {self.model_dir} "
                f"(looked for sub-directories starting with {key!r})")
        dir_name = os.path.join(self.model_dir, dir_names[-1])
        checkpoints = sorted(f for f in os.listdir(dir_name) if f.startswith("mask_rcnn"))
        if not checkpoints:
            raise FileNotFoundError(f"Could not find weight files in {dir_name}")
        return os.path.join(dir_name, checkpoints[-1])

    def load_weights(self, filepath: str, by_name: bool = False,
                     exclude: Optional[Sequence[str]] = None, **kwargs: Any) -> _weights.LoadReport:
        """Load an h5 weights file (Matterport semantics, see
        :func:`mrcnn.modeling.weights.load_weights` for ``skip_mismatch``/``strict``).

        ``exclude`` implies ``by_name``. Afterwards the log dir and epoch follow
        the file name when it is one of this package's checkpoints.

        Returns:
            The :class:`~mrcnn.modeling.weights.LoadReport`.
        """
        report = _weights.load_weights(self.keras_model, filepath, by_name=by_name,
                                       exclude=exclude, **kwargs)
        self.set_log_dir(filepath)
        return report

    def save_weights(self, filepath: str) -> str:
        """Save the weights in Matterport's h5 layout (``.weights.h5``: Keras format)."""
        return _weights.save_weights(self.keras_model, filepath)

    def get_imagenet_weights(self) -> str:
        """Download (once) the ResNet-50 ImageNet weights whose names match this backbone.

        Load them with ``load_weights(path, by_name=True)``; for resnet101 the
        extra stage-4 blocks stay randomly initialised, as in Matterport.
        """
        weights_path = ("https://github.com/fchollet/deep-learning-models/releases/download/v0.2/"
                        "resnet50_weights_tf_dim_ordering_tf_kernels_notop.h5")
        return keras.utils.get_file("resnet50_weights_tf_dim_ordering_tf_kernels_notop.h5",
                                    weights_path, cache_subdir="models",
                                    file_hash="a268eb855778b3df3c7506639542a6af")

    def set_log_dir(self, model_path: Optional[str] = None) -> None:
        """Set ``log_dir``, ``epoch`` and ``checkpoint_path``.

        A ``model_path`` like ``.../<name>20240101T1200/mask_rcnn_<name>_0007.h5``
        resumes that directory at epoch 7; anything else starts a new
        ``<model_dir>/<name><timestamp>`` at epoch 0.
        """
        self.epoch = 0
        now = datetime.datetime.now()
        if model_path:
            regex = (r".*[/\\][\w-]+(\d{4})(\d{2})(\d{2})T(\d{2})(\d{2})[/\\]mask\_rcnn\_[\w-]+"
                     r"(\d{4})(?:\.weights)?\.h5")
            m = re.match(regex, str(model_path).replace("\\", "/"))
            if m:
                now = datetime.datetime(int(m.group(1)), int(m.group(2)), int(m.group(3)),
                                        int(m.group(4)), int(m.group(5)))
                # The file holds epoch N's weights; training resumes with N+1,
                # which Keras counts as initial_epoch=N.
                self.epoch = int(m.group(6))
        name = self.config.NAME.lower()
        self.log_dir = os.path.join(self.model_dir, "{}{:%Y%m%dT%H%M}".format(name, now))
        self.checkpoint_path = os.path.join(self.log_dir, f"mask_rcnn_{name}_*epoch*.h5")
        self.checkpoint_path = self.checkpoint_path.replace("*epoch*", "{epoch:04d}")

    # ------------------------------------------------------------------
    # Training helpers
    # ------------------------------------------------------------------
    def compile(self, learning_rate: float, momentum: float, jit_compile: bool = False) -> None:
        """SGD with momentum and global-norm gradient clipping, losses from the graph.

        ``GRADIENT_CLIP_NORM`` clips the global norm of all gradients, as
        Keras 2.0's ``clipnorm`` did. Call again after :meth:`set_trainable`:
        Keras fixes the trainable variables at compile time.

        Args:
            jit_compile: compile the whole training step (forward, losses,
                gradients, update) with XLA. The graph has static shapes, so
                it compiles; off by default because on this project's 2-core
                CPU the compiled step is slower than TF's oneDNN kernels
                (``benchmarks/train.py``). TensorFlow only: on JAX the step is
                always compiled (``jax.jit``); other backends get Keras' default.
        """
        if self.mode != "training":
            raise ValueError("compile() needs a model built in 'training' mode")
        from mrcnn.engine.optimizer import MatterportSGD
        optimizer = MatterportSGD(learning_rate=learning_rate, momentum=momentum,
                                  global_clipnorm=self.config.GRADIENT_CLIP_NORM)
        jit = bool(jit_compile) if keras.backend.backend() == "tensorflow" else "auto"
        self.keras_model.compile(optimizer=optimizer, jit_compile=jit)

    def set_trainable(self, layer_regex: str, keras_model: Optional[keras.Model] = None,
                      indent: int = 0, verbose: int = 1) -> List[str]:
        """Make layers whose names fully match ``layer_regex`` trainable, freeze the rest.

        ``layer_regex`` may be a preset of :data:`LAYER_REGEX` ("heads", "3+",
        "4+", "5+", "all"). Nested models (``rpn_model``) are entered; a
        TimeDistributed wrapper's inner layer gets the flag.

        Returns:
            Names of the layers now trainable.
        """
        layer_regex = LAYER_REGEX.get(layer_regex, layer_regex)
        if verbose > 0 and keras_model is None:
            print("Selecting layers to train")
        keras_model = keras_model or self.keras_model
        trainable_names = []
        for layer in keras_model.layers:
            if isinstance(layer, keras.Model):
                if verbose > 0:
                    print(" " * indent + "In model: ", layer.name)
                trainable_names += self.set_trainable(layer_regex, keras_model=layer,
                                                      indent=indent + 4, verbose=verbose)
                continue
            if not layer.weights:
                continue
            trainable = bool(re.fullmatch(layer_regex, layer.name))
            if isinstance(layer, KL.TimeDistributed):
                layer.layer.trainable = trainable
                layer.trainable = True
            else:
                layer.trainable = trainable
            if trainable:
                trainable_names.append(layer.name)
                if verbose > 0:
                    print("{}{:20}   ({})".format(" " * indent, layer.name,
                                                 layer.__class__.__name__))
        return trainable_names

    def find_trainable_layer(self, layer):
        """The layer that owns the weights (the inner layer of TimeDistributed)."""
        if isinstance(layer, KL.TimeDistributed):
            return self.find_trainable_layer(layer.layer)
        return layer

    def get_trainable_layers(self) -> list:
        """Layers that have weights (inner layers of TimeDistributed wrappers)."""
        layers = []
        for layer in self.keras_model.layers:
            layer = self.find_trainable_layer(layer)
            if layer.get_weights():
                layers.append(layer)
        return layers

    def train(self, *args: Any, **kwargs: Any):
        """Train the model (see :func:`mrcnn.engine.train.train`)."""
        from mrcnn.engine.train import train as _train  # lead's training loop
        return _train(self, *args, **kwargs)

    # ------------------------------------------------------------------
    # Inference
    # ------------------------------------------------------------------
    def get_anchors(self, image_shape: Sequence[int]) -> np.ndarray:
        """Normalised float32 anchors ``[A, 4]`` for a molded image shape; cached.

        Side effect as in Matterport: ``self.anchors`` holds the pixel anchors.
        """
        key = tuple(int(v) for v in image_shape[:2])
        if key not in self._anchor_cache:
            # Both forms are cached: generating 261,888 anchors costs ~50 ms per call.
            pixel = get_pixel_anchors(self.config, key)
            norm = np.ascontiguousarray(_get_norm_anchors(self.config, key), dtype=np.float32)
            pixel.setflags(write=False)
            norm.setflags(write=False)
            self._anchor_cache[key] = (pixel, norm)
        self.anchors, norm = self._anchor_cache[key]
        return norm

    def _mold_one(self, image: np.ndarray, index: int) -> Tuple[np.ndarray, np.ndarray, np.ndarray]:
        image = _check_image(image, index, self.config.IMAGE_CHANNEL_COUNT)
        try:
            molded, window, scale, _, _ = resize_image(
                image, min_dim=self.config.IMAGE_MIN_DIM, min_scale=self.config.IMAGE_MIN_SCALE,
                max_dim=self.config.IMAGE_MAX_DIM, mode=self.config.IMAGE_RESIZE_MODE)
        except ValueError as e:
            raise ImageInputError(f"image {index}: cannot be resized ({e})") from None
        if window[2] <= window[0] or window[3] <= window[1]:
            raise ImageInputError(f"image {index}: shape {image.shape} is too thin to resize "
                                  f"(it becomes {window[2] - window[0]}x{window[3] - window[1]} "
                                  f"pixels at IMAGE_MAX_DIM={self.config.IMAGE_MAX_DIM})")
        molded = mold_image(molded, self.config)
        meta = compose_image_meta(0, image.shape, molded.shape, window, scale,
                                  np.zeros([self.config.NUM_CLASSES], dtype=np.int32))
        return molded, meta, np.asarray(window)

    def mold_inputs(self, images: Sequence[np.ndarray]):
        """Resize and normalise images as the network expects.

        Args:
            images: list of ``[H, W, C]`` images (any sizes).

        Returns:
            ``molded_images [N, h, w, C]`` float32, ``image_metas [N, META]``,
            ``windows [N, 4]`` (pixel box of the image inside the molded one).

        Raises:
            ImageInputError: a bad image (wrong rank/channels, empty); or the
                molded shapes differ (``none``/``pad64`` modes with different
                sizes; :meth:`detect` groups those itself).
        """
        parts = [self._mold_one(image, i) for i, image in enumerate(_as_image_list(images))]
        if not parts:
            raise ImageInputError("mold_inputs() got no images")
        if len({p[0].shape for p in parts}) > 1:
            raise ImageInputError("the images mold to different shapes "
                                  f"{sorted({p[0].shape for p in parts})}; call mold_inputs "
                                  "per shape (detect() does this itself)")
        return (np.stack([p[0] for p in parts]), np.stack([p[1] for p in parts]),
                np.stack([p[2] for p in parts]))

    def unmold_detections(self, detections: np.ndarray, mrcnn_mask: np.ndarray,
                          original_image_shape: Sequence[int], image_shape: Sequence[int],
                          window: Sequence[int]):
        """One image's network output to pixel boxes and full-size masks.

        Args:
            detections: ``[MAX_INST, 6]`` normalised (y1, x1, y2, x2, class_id, score),
                zero-padded.
            mrcnn_mask: ``[MAX_INST, h, w, NUM_CLASSES]``, or ``[MAX_INST, h, w]`` already
                reduced to each detection's class channel.
            original_image_shape: ``(H, W, C)`` before resizing.
            image_shape: molded ``(h, w, C)``.
            window: pixel box of the image inside the molded one.

        Returns:
            ``boxes [N, 4]`` int32 pixels of the original image (y2/x2 exclusive),
            ``class_ids [N]`` int32, ``scores [N]`` float32, ``masks [H, W, N]`` bool.
        """
        zero_ix = np.where(detections[:, 4] == 0)[0]
        n = zero_ix[0] if zero_ix.shape[0] > 0 else detections.shape[0]
        boxes = detections[:n, :4]
        class_ids = detections[:n, 4].astype(np.int32)
        scores = detections[:n, 5]
        masks = mrcnn_mask[:n] if mrcnn_mask.ndim == 3 else mrcnn_mask[np.arange(n), :, :, class_ids]
        wy1, wx1, wy2, wx2 = norm_boxes(np.asarray(window), image_shape[:2])
        shift = np.array([wy1, wx1, wy1, wx1])
        wh, ww = wy2 - wy1, wx2 - wx1
        scale = np.array([wh, ww, wh, ww])
        boxes = denorm_boxes(np.divide(boxes - shift, scale), original_image_shape[:2])
        keep = (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1]) > 0
        boxes, class_ids, scores, masks = boxes[keep], class_ids[keep], scores[keep], masks[keep]
        full_masks = unmold_masks(masks, boxes, original_image_shape)
        return boxes, class_ids, scores, full_masks

    def _get_predict_fn(self):
        """The traced inference function for the current ``keras_model`` (rebuilt when
        ``keras_model`` or ``jit_compile`` changes)."""
        if self.mode != "inference":
            raise ValueError("detect() needs a model built in 'inference' mode")
        key = (id(self.keras_model), bool(self.jit_compile))
        if self._predict_fn is None or self._predict_key != key:
            self._predict_fn = {}
            self._predict_key = key
        return self._predict_fn

    def _predict(self, molded: np.ndarray, metas: np.ndarray, anchors: np.ndarray,
                 class_masks: bool = False):
        """Run the compiled inference graph: ``(detections, mrcnn_mask)`` as numpy.

        ``anchors`` is ``[A, 4]`` (shared by the batch) or ``[B, A, 4]``. With
        ``class_masks`` the masks are only each detection's class channel,
        ``[B, MAX_INST, h, w]`` (1/NUM_CLASSES of the copy to the host).
        """
        with self._lock:
            fns = self._get_predict_fn()
            if class_masks not in fns:
                fns[class_masks] = _make_predict_fn(self.keras_model, self.config,
                                                    jit_compile=bool(self.jit_compile),
                                                    class_masks=class_masks)
                if keras.backend.backend() == "tensorflow" and not self.jit_compile:
                    self._warm_up(fns[class_masks])
            anchors = np.asarray(anchors, np.float32)
            if anchors.ndim == 3:
                anchors = anchors[0]
            detections, masks = fns[class_masks](
                np.asarray(molded, np.float32), np.asarray(metas, np.float32), anchors)
        return np.asarray(detections), np.asarray(masks)

    def _warm_up(self, fn) -> None:
        """First call of a new TensorFlow predict function, on a 64x64 image, then the
        process's free heap goes back to the system.

        The first call traces the graph and grappler optimises it, which leaves ~130 MB of
        freed heap behind (R101); the feature maps of the first real call then come on top
        of it. Instantiating on a tiny input first and trimming the heap in between lowers
        ``detect()``'s peak RSS by ~60 MB on R101 at 1024 px, for ~0.5 s more on the
        first call. (Not under XLA, which compiles for each input shape.)
        """
        size, channels = 64, self.config.IMAGE_CHANNEL_COUNT
        shape = (size, size, channels)
        meta = compose_image_meta(0, shape, shape, (0, 0, size, size), 1.0,
                                  np.ones(self.config.NUM_CLASSES, np.int32))
        try:
            fn(np.zeros((1,) + shape, np.float32), meta[None].astype(np.float32),
               np.asarray(self.get_anchors(shape), np.float32))
        except Exception as exc:  # the real call reports real problems; this is only a warm-up
            logger.debug("warm-up call on a %dx%d image failed: %s", size, size, exc)
        _release_free_heap()

    def _run_batches(self, molded: np.ndarray, metas: np.ndarray, class_masks: bool = False):
        anchors = self.get_anchors(molded.shape[1:])
        step = max(1, int(self.config.BATCH_SIZE))
        dets, masks = [], []
        for start in range(0, len(molded), step):
            d, k = self._predict(molded[start:start + step], metas[start:start + step], anchors,
                                 class_masks=class_masks)
            dets.append(d)
            masks.append(k)
        if len(dets) == 1:
            return dets[0], masks[0]
        return np.concatenate(dets), np.concatenate(masks)

    def detect(self, images: Sequence[np.ndarray], verbose: int = 0) -> List[Dict[str, np.ndarray]]:
        """Detect instances in any number of images of any sizes.

        Images are molded as configured, grouped by molded shape and run in
        batches of BATCH_SIZE (the last one may be smaller). Safe to call from
        several threads.

        Args:
            images: list of images, each what ``Dataset.load_image`` accepts (``[H, W, 3]``
                uint8; grey, RGBA, PIL, bool, 16-bit, float 0..1/0..255: see
                :func:`_check_image`). Bad ones raise :class:`ImageInputError`.

        Returns:
            One dict per image: ``rois [N, 4]`` int32 pixel boxes (y1, x1, y2, x2;
            y2/x2 exclusive), ``class_ids [N]`` int32, ``scores [N]`` float32 and
            ``masks [H, W, N]`` bool.
        """
        images = _as_image_list(images)
        parts = [self._mold_one(image, i) for i, image in enumerate(images)]
        if verbose:
            from mrcnn.core.log import log
            print(f"Processing {len(images)} images")
            for image, (molded, meta, _) in zip(images, parts):
                log("image", image)
                log("molded_images", molded)
                log("image_metas", meta)
        results: List[Optional[Dict[str, np.ndarray]]] = [None] * len(images)
        groups: Dict[tuple, List[int]] = {}
        for i, (molded, _, _) in enumerate(parts):
            groups.setdefault(molded.shape, []).append(i)
        for shape, idx in groups.items():
            molded = np.stack([parts[i][0] for i in idx])
            metas = np.stack([parts[i][1] for i in idx])
            detections, mrcnn_mask = self._run_batches(molded, metas, class_masks=True)
            for j, i in enumerate(idx):
                original_shape = tuple(int(v) for v in parts[i][1][1:4])  # after conversion
                rois, class_ids, scores, masks = self.unmold_detections(
                    detections[j], mrcnn_mask[j], original_shape, shape, parts[i][2])
                results[i] = {"rois": rois, "class_ids": class_ids, "scores": scores,
                              "masks": masks}
        return results

    def detect_molded(self, molded_images: np.ndarray, image_metas: np.ndarray,
                      verbose: int = 0) -> List[Dict[str, np.ndarray]]:
        """Detect on images already molded (e.g. from ``load_image_gt``).

        The window is the whole molded image, so boxes are in molded pixels.
        """
        molded_images = np.asarray(molded_images)
        if molded_images.ndim != 4:
            raise ImageInputError(f"molded_images must be [N, H, W, C], got shape {molded_images.shape}")
        if molded_images.dtype.kind not in "biuf" or not np.isfinite(molded_images).all():
            bad = [i for i, m in enumerate(molded_images)
                   if m.dtype.kind not in "biuf" or not np.isfinite(m).all()]
            raise ImageInputError(f"image {bad[0]}: molded image has non-finite (NaN/inf) or "
                                  f"non-numeric values")
        image_metas = np.asarray(image_metas)
        detections, mrcnn_mask = self._run_batches(molded_images.astype(np.float32), image_metas,
                                                   class_masks=True)
        shape = molded_images.shape[1:]
        window = [0, 0, shape[0], shape[1]]
        results = []
        for j in range(len(molded_images)):
            rois, class_ids, scores, masks = self.unmold_detections(
                detections[j], mrcnn_mask[j], shape, shape, window)
            results.append({"rois": rois, "class_ids": class_ids, "scores": scores, "masks": masks})
        return results

    # ------------------------------------------------------------------
    # Introspection (see mrcnn.modeling.introspection)
    # ------------------------------------------------------------------
    def get_intermediates(self, images: Optional[Sequence[np.ndarray]], names: Sequence[Any],
                          image_metas: Optional[np.ndarray] = None,
                          inputs: Optional[Sequence[np.ndarray]] = None) -> Dict[str, Any]:
        """Outputs of named layers as numpy (see :func:`.introspection.get_intermediates`)."""
        from .introspection import get_intermediates
        return get_intermediates(self, images, names, image_metas=image_metas, inputs=inputs)

    def run_graph(self, images: Optional[Sequence[np.ndarray]], outputs,
                  image_metas: Optional[np.ndarray] = None,
                  inputs: Optional[Sequence[np.ndarray]] = None) -> Dict[str, Any]:
        """Matterport's ``run_graph``: ``outputs`` is a list of ``(label, layer_name_or_tensor)``."""
        from .introspection import run_graph
        return run_graph(self, images, outputs, image_metas=image_metas, inputs=inputs)

    def export(self, path: str) -> str:
        """Write a SavedModel with a one-image serving signature (see :mod:`.export`)."""
        from .export import export_saved_model
        return export_saved_model(self, path)


# ----------------------------------------------------------------------------
# helpers
# ----------------------------------------------------------------------------
def _release_free_heap() -> bool:
    """Give the C heap's free pages back to the system (glibc ``malloc_trim``); False where
    there is no such call (other C libraries)."""
    import ctypes
    import ctypes.util
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        trim = libc.malloc_trim
    except (OSError, AttributeError):
        return False
    trim.argtypes = [ctypes.c_size_t]
    trim(0)
    return True


def _make_predict_fn(keras_model: keras.Model, config, jit_compile: bool = False,
                     class_masks: bool = False):
    """A compiled inference function with dynamic batch and image size.

    ``predict(images [B, H, W, C], metas [B, META], anchors [A, 4])`` (float32
    numpy) returns ``detections [B, MAX_INST, 6]`` and the masks, both float32:
    all classes ``[B, MAX_INST, h, w, NUM_CLASSES]``, or with ``class_masks``
    only each detection's class ``[B, MAX_INST, h, w]``.

    TensorFlow: one ``tf.function`` (XLA with ``jit_compile``) running the graph
    with frozen BatchNorm folded into the convolutions
    (:class:`.fold.FoldedGraph`); the anchors are broadcast and the class masks
    picked inside the graph. JAX: ``jax.jit`` over ``stateless_call``; other
    backends (PyTorch): the model called eagerly; both pick the class masks on
    the host.
    """
    backend = keras.backend.backend()
    if backend != "tensorflow":
        run = _make_jax_predict_fn(keras_model) if backend == "jax" \
            else _make_eager_predict_fn(keras_model)

        def predict_host(images, metas, anchors):
            anchors = np.broadcast_to(anchors, (len(images),) + anchors.shape)
            detections, masks = (np.asarray(x, np.float32) for x in run(images, metas, anchors))
            if class_masks:
                ids = detections[..., 4].astype(np.int64)[:, :, None, None, None]
                masks = np.take_along_axis(masks, ids, axis=4)[..., 0]
            return detections, masks

        return predict_host

    from .fold import FoldedGraph
    channels = config.IMAGE_CHANNEL_COUNT
    graph = FoldedGraph(keras_model)

    # No AutoGraph: the layers are keras.ops code written for every backend (no Python
    # control flow on tensors); converting them cost 0.3-3 s more on the first call (R101).
    @tf.function(input_signature=[
        tf.TensorSpec([None, None, None, channels], tf.float32),
        tf.TensorSpec([None, config.IMAGE_META_SIZE], tf.float32),
        tf.TensorSpec([None, 4], tf.float32)], reduce_retracing=True, jit_compile=jit_compile,
        autograph=False)
    def predict(images, metas, anchors):
        batch = tf.shape(images)[0]
        anchors = tf.broadcast_to(anchors[tf.newaxis], tf.concat([[batch], tf.shape(anchors)], 0))
        outputs = graph([images, metas, anchors])
        detections = tf.cast(outputs[0], tf.float32)
        masks = outputs[3]
        if class_masks:
            # [B, N, h, w, C] -> [B, N, h, w] at each detection's class (padding rows: class 0).
            class_ids = tf.cast(detections[..., 4], tf.int32)
            masks = tf.transpose(masks, [0, 1, 4, 2, 3])
            masks = tf.gather(masks, class_ids, axis=2, batch_dims=2)
        return detections, tf.cast(masks, tf.float32)

    return predict


def _make_jax_predict_fn(keras_model: keras.Model):
    import jax

    @jax.jit
    def compiled(trainable, non_trainable, images, metas, anchors):
        outputs, _ = keras_model.stateless_call(trainable, non_trainable,
                                                [images, metas, anchors], training=False)
        return outputs[0], outputs[3]

    def predict(images, metas, anchors):
        # Current values at each call: weights loaded later are used.
        return compiled([v.value for v in keras_model.trainable_variables],
                        [v.value for v in keras_model.non_trainable_variables],
                        images, metas, anchors)

    return predict


def _make_eager_predict_fn(keras_model: keras.Model):
    def predict(images, metas, anchors):
        if keras.backend.backend() == "torch":
            import torch
            with torch.no_grad():
                outputs = keras_model([images, metas, anchors], training=False)
            return outputs[0].cpu(), outputs[3].cpu()
        outputs = keras_model([images, metas, anchors], training=False)
        return outputs[0], outputs[3]

    return predict


def _as_image_list(images) -> List[Any]:
    """The images of a ``detect``/``mold_inputs`` call as a list (not yet checked)."""
    if images is None:
        raise ImageInputError("expected a list of images, got None")
    if isinstance(images, np.ndarray):
        if images.dtype == object and images.ndim == 1:
            return list(images)  # np.array([image_a, image_b], dtype=object): images of mixed sizes
        if images.ndim in (2, 3):
            raise ImageInputError("detect() takes a list of images; got a single image array "
                                  f"of shape {images.shape} (wrap it in a list)")
        if images.ndim != 4:
            raise ImageInputError(f"expected a list of images or an array [N, H, W, C], got an "
                                  f"array of shape {images.shape}")
        return list(images)
    if isinstance(images, (str, bytes, dict)) or hasattr(images, "getpalette") \
            or not hasattr(images, "__iter__"):
        raise ImageInputError(f"expected a list of images, got {type(images).__name__}")
    return list(images)


def _check_image(image, index: int, channels: int) -> np.ndarray:
    """Validate and convert one input image (see :func:`mrcnn.data.validate.check_image_array`).

    With ``channels == 3`` the image goes through the same ``to_rgb_uint8`` as
    ``Dataset.load_image``: grey ``[H, W]`` / ``[H, W, 1]``, grey+alpha, RGBA, PIL images
    (palette included), bool, 16-bit and float (0..1 or 0..255) become ``uint8 [H, W, 3]``.

    Raises:
        ImageInputError: None, non-numeric or ragged input, wrong rank/channels, an empty
            image, or NaN/inf values; the message starts with ``image <index>:``.
    """
    from mrcnn.data.validate import check_image_array
    try:
        return check_image_array(image, channels)
    except ValueError as e:
        raise ImageInputError(f"image {index}: {e}") from None
