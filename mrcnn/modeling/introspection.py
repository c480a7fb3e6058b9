"""Intermediate outputs of the model graph (replaces Matterport's ``run_graph``).

Matterport evaluated arbitrary TF1 graph tensors with ``K.function``. In
Keras 3 the same is done by building a sub-model from the graph inputs to the
requested layer outputs; sub-models are cached per request so repeated calls
do not rebuild anything.

Names are layer names (``"rpn_class"``, ``"ROI"``, ``"mrcnn_class_logits"``,
``"res4f_out"``, ``"fpn_p2"``, ...). A layer with several outputs
(``proposal_targets``) gives a list, or one of them with ``"name:index"``.
"""
from __future__ import annotations

import collections
from typing import Any, Dict, List, Optional, Sequence, Tuple, Union

import keras
import numpy as np

__all__ = ["get_intermediates", "run_graph", "resolve_output", "dynamic_shape_ops",
           "DATA_DEPENDENT_OPS"]


def resolve_output(keras_model: keras.Model, name_or_tensor: Union[str, Any]):
    """The symbolic output for a layer name, ``"name:index"`` or a KerasTensor/layer."""
    if isinstance(name_or_tensor, keras.KerasTensor):
        return name_or_tensor
    if isinstance(name_or_tensor, keras.layers.Layer):
        layer, index = name_or_tensor, None
    else:
        name, index = str(name_or_tensor), None
        if ":" in name and name.rsplit(":", 1)[1].isdigit():
            name, idx = name.rsplit(":", 1)
            index = int(idx)
        try:
            layer = keras_model.get_layer(name)
        except ValueError:
            raise ValueError(f"no layer named {name!r} in model {keras_model.name!r}; "
                             "see [l.name for l in model.keras_model.layers]") from None
    nodes = getattr(layer, "_inbound_nodes", [])
    if len(nodes) > 1:
        raise ValueError(f"layer {layer.name!r} is called several times (shared layer, e.g. "
                         "rpn_model once per pyramid level); ask for the layers that combine "
                         "its outputs instead (rpn_class_logits, rpn_class, rpn_bbox)")
    if isinstance(layer, keras.Model) and nodes:
        # A nested model's .output is its inner graph's; take its call in this graph.
        output = list(nodes[0].output_tensors)
        output = output[0] if len(output) == 1 else output
    else:
        output = layer.output
    if index is not None:
        if not isinstance(output, (list, tuple)):
            raise ValueError(f"layer {layer.name!r} has one output; drop ':{index}'")
        return output[index]
    return output


def _submodel(model, names: Tuple) -> keras.Model:
    cache = model.__dict__.setdefault("_intermediate_models", {})
    # KerasTensors overload ==, so cache by identity for anything but names.
    key = tuple(n if isinstance(n, str) else ("id", id(n)) for n in names)
    if key not in cache:
        km = model.keras_model
        outputs = [resolve_output(km, n) for n in names]
        cache[key] = keras.Model(km.inputs, outputs)
    return cache[key]


def _inference_inputs(model, images, image_metas) -> List[np.ndarray]:
    molded, metas, _ = model.mold_inputs(images)
    if image_metas is not None:
        metas = np.asarray(image_metas)
    anchors = model.get_anchors(molded.shape[1:])
    anchors = np.broadcast_to(anchors, (len(molded),) + anchors.shape)
    return [molded.astype(np.float32), metas.astype(np.float32), anchors.astype(np.float32)]


def _to_numpy(x):
    if isinstance(x, (list, tuple)):
        return [_to_numpy(v) for v in x]
    return np.asarray(x)


def get_intermediates(model, images: Optional[Sequence[np.ndarray]], names: Sequence[Any],
                      image_metas: Optional[np.ndarray] = None,
                      inputs: Optional[Sequence[np.ndarray]] = None) -> Dict[str, Any]:
    """Values of graph outputs for one batch.

    Args:
        model: a :class:`~mrcnn.modeling.maskrcnn.MaskRCNN`.
        images: list of ``[H, W, C]`` images molding to one shape (inference
            mode); ignored when ``inputs`` is given.
        names: layer names, ``"name:index"``, layers or KerasTensors.
        image_metas: optional replacement for the molded metas.
        inputs: the model's raw inputs (required for training-mode models,
            e.g. a batch from ``data_generator``).

    Returns:
        Ordered dict key → numpy array (a list for multi-output layers); the key
        is the name given, or the tensor's name for tensors.
    """
    if inputs is None:
        if model.mode != "inference":
            raise ValueError("a training-mode model needs inputs=[...] (its 7 or 8 inputs)")
        inputs = _inference_inputs(model, images, image_metas)
    keys = tuple(names)
    sub = _submodel(model, keys)
    values = sub([np.asarray(x) for x in inputs], training=False)
    if len(keys) == 1:
        values = [values]
    out = collections.OrderedDict()
    for k, v in zip(keys, values):
        out[k if isinstance(k, str) else getattr(k, "name", str(k))] = _to_numpy(v)
    return out


def run_graph(model, images: Optional[Sequence[np.ndarray]],
              outputs: Sequence[Tuple[str, Any]], image_metas: Optional[np.ndarray] = None,
              inputs: Optional[Sequence[np.ndarray]] = None) -> Dict[str, Any]:
    """Matterport's ``run_graph``: ``outputs`` is ``[(label, layer_name_or_tensor), ...]``.

    Returns:
        Ordered dict label → numpy array; each is also logged with ``log``.
    """
    from mrcnn.core.log import log
    labels = [label for label, _ in outputs]
    values = get_intermediates(model, images, [t for _, t in outputs], image_metas=image_metas,
                               inputs=inputs)
    result = collections.OrderedDict(zip(labels, values.values()))
    for label, value in result.items():
        if isinstance(value, list):
            for i, v in enumerate(value):
                log(f"{label}[{i}]", v)
        else:
            log(label, value)
    return result


# Ops whose output shape depends on tensor values (or, CropAndResize, that XLA
# cannot compile); none may appear in the compiled graphs.
DATA_DEPENDENT_OPS = frozenset({
    "Where", "Unique", "UniqueV2", "UniqueWithCounts", "DynamicStitch", "ParallelDynamicStitch",
    "DynamicPartition", "NonMaxSuppressionV3", "NonMaxSuppressionV5", "NonMaxSuppressionV2",
    "NonMaxSuppression", "CombinedNonMaxSuppression", "CropAndResize", "CropAndResizeGradImage",
    "Unstage", "BooleanMask",
})


def _graphs(graph):
    """A graph and every function body it calls (while/map_fn bodies), recursively."""
    seen, stack = set(), [("<main>", graph)]
    while stack:
        name, g = stack.pop()
        if id(g) in seen:
            continue
        seen.add(id(g))
        yield name, g
        for fname, fn in getattr(g, "_functions", {}).items():
            body = getattr(fn, "graph", None)
            if body is not None:
                stack.append((fname, body))


def dynamic_shape_ops(concrete_function) -> List[Tuple[str, str, str]]:
    """Ops of a traced function whose outputs have no static shape.

    Trace the function with fully static input shapes; then every op output
    should have a static shape unless its size depends on values. Exempt:
    resource/variant outputs (variables, TensorLists) and the ``Placeholder``
    arguments of while-loop bodies (``while_v2`` relaxes loop-variable
    shapes by design; the loop's outputs are still checked).

    Args:
        concrete_function: ``tf.function(...).get_concrete_function(specs)``.

    Returns:
        ``[(function name, op type, op name)]``: ops of :data:`DATA_DEPENDENT_OPS`
        and ops with a non-static output shape; empty when the graph is static.
    """
    import tensorflow as tf
    found = []
    for fname, g in _graphs(concrete_function.graph):
        in_loop = fname != "<main>" and "while" in fname
        for op in g.get_operations():
            if op.type in DATA_DEPENDENT_OPS:
                found.append((fname, op.type, op.name))
                continue
            if op.type == "Placeholder" and in_loop:
                continue
            for out in op.outputs:
                if out.dtype in (tf.resource, tf.variant):
                    continue
                if not out.shape.is_fully_defined():
                    found.append((fname, op.type, op.name))
                    break
    return found
