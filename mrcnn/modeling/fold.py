"""Fast inference graph: frozen BatchNorm folded into the convolutions, optional bfloat16.

At inference every BatchNorm is an affine map per channel,
``y = gamma * (x - mean) / sqrt(var + eps) + beta``, so a convolution followed by it
equals one convolution with kernel ``W * s`` and bias ``(b - mean) * s + beta`` where
``s = gamma / sqrt(var + eps)`` scales the output channels. R101-FPN has 110 such pairs;
folding saves one elementwise pass (several ops in Keras' formula) over every
backbone feature map, which is memory-bound work of the same order as the cheap
convolutions themselves.

The fold is a transform of how the graph is *run*, not of the Keras model: the model
keeps its ``Conv2D`` and ``BatchNorm`` layers with their names and weights, so
``load_weights``/``save_weights``/``get_layer`` see the original values.
:class:`FoldedGraph` executes the functional model node by node and substitutes a
folded convolution for each conv+BN pair, computing the folded kernel from the live
variables inside the traced function. That costs one multiply over the folded
kernels per call (~60 M values for R101-FPN, a few tens of ms against seconds of
convolutions) and means a folded graph is never stale after new weights are loaded,
however they are loaded.

Winograd (float32): the 3x3 stride-1 'same' convolutions with >= 128 input and output
channels run as Winograd F(6x6, 3x3) (F(4x4, 3x3) in the ROI heads), about 2.2x fewer
multiplies for the whole graph; see :mod:`.winograd`. Their transformed kernels are
computed from the live (folded) kernels in the graph, like the folds. Not under bfloat16 or
XLA; ``MRCNN_WINOGRAD=0`` turns it off.

bfloat16: when the model is built under Keras' ``mixed_bfloat16`` policy its
convolution and dense layers compute in bfloat16 while the box layers (proposals,
ROIAlign, detections) are float32 layers; :class:`FoldedGraph` folds in float32 and
casts the folded kernel once, so the BN scale is not rounded twice.
"""
from __future__ import annotations

import functools
import logging
import weakref
from typing import Any, Dict, List, Optional, Sequence, Tuple

import keras
import numpy as np
import tensorflow as tf
from keras import layers as KL

from . import winograd
from .backbone import BatchNorm
from .roi_align import PyramidROIAlign, roi_pyramid_level

__all__ = ["FoldedGraph", "find_conv_bn_pairs", "fold_conv_bn", "cpu_has_native_bf16",
           "warn_if_no_native_bf16"]

logger = logging.getLogger("mrcnn.model")


def _inner(layer):
    """The wrapped layer of a TimeDistributed, else the layer itself."""
    return layer.layer if isinstance(layer, KL.TimeDistributed) else layer


def _is_foldable_bn(layer) -> bool:
    bn = _inner(layer)
    if not isinstance(bn, KL.BatchNormalization):
        return False
    # A BatchNorm fixed to batch statistics (Matterport's TRAIN_BN=True wiring) is not
    # an affine map of its input: leave it alone.
    if isinstance(bn, BatchNorm) and bn.fixed_training:
        return False
    # Only per-channel (last axis) normalisation matches the conv kernel's output axis.
    return bn.axis == -1 and not getattr(bn, "synchronized", False)


def _is_foldable_conv(layer) -> bool:
    conv = _inner(layer)
    return (type(conv) is KL.Conv2D and conv.data_format == "channels_last"
            and conv.activation in (keras.activations.linear, None) and conv.groups == 1)


def find_conv_bn_pairs(keras_model: keras.Model) -> Dict[int, Tuple[Any, Any]]:
    """Conv+BatchNorm pairs of a functional model that can be folded.

    A pair is a ``Conv2D`` (linear, channels-last, possibly inside ``TimeDistributed``)
    whose output feeds only a frozen ``BatchNormalization`` over the last axis (wrapped
    the same way), each layer used once in the graph.

    Returns:
        ``{id(bn_layer): (conv_layer, bn_layer)}`` (the outer, possibly
        ``TimeDistributed``, layers).
    """
    consumers: Dict[int, int] = {}
    for layer in keras_model.operations:
        for node in layer._inbound_nodes:
            for t in node.input_tensors:
                consumers[id(t)] = consumers.get(id(t), 0) + 1
    pairs = {}
    for bn in keras_model.operations:
        if not _is_foldable_bn(bn) or len(bn._inbound_nodes) != 1:
            continue
        inputs = bn._inbound_nodes[0].input_tensors
        if len(inputs) != 1:
            continue
        conv = inputs[0]._keras_history.operation
        if (not _is_foldable_conv(conv) or len(conv._inbound_nodes) != 1
                or consumers.get(id(inputs[0]), 0) != 1
                or isinstance(conv, KL.TimeDistributed) != isinstance(bn, KL.TimeDistributed)):
            continue
        pairs[id(bn)] = (conv, bn)
    return pairs


def fold_conv_bn(conv, bn, gate=None) -> Tuple[tf.Tensor, tf.Tensor]:
    """Kernel ``[kh, kw, cin, cout]`` and bias ``[cout]`` of conv followed by frozen BN, float32.

    Computed from the layers' current variables (traced: inside a ``tf.function`` this
    reads the variables at every call). ``gate``, the convolution's input, only orders
    the computation: the fold waits for it (see below).
    """
    conv, bn = _inner(conv), _inner(bn)
    kernel = tf.cast(conv.kernel, tf.float32)
    scale = tf.math.rsqrt(tf.cast(bn.moving_variance, tf.float32) + bn.epsilon)
    if gate is not None:
        # Without a dependency on the input, TF's executor runs every fold at graph start
        # and keeps all folded kernels alive until their convolution (+250 MB for R101).
        # A control dependency on the input makes auto-control-deps build a cycle, so the
        # dependency is a data one: a factor of exactly 1 read off the input's (dynamic) shape.
        scale = scale * tf.cast(tf.shape(gate)[0] >= 0, tf.float32)
    if bn.gamma is not None:
        scale = scale * tf.cast(bn.gamma, tf.float32)
    bias = tf.cast(conv.bias, tf.float32) if conv.use_bias else tf.zeros_like(scale)
    bias = (bias - tf.cast(bn.moving_mean, tf.float32)) * scale
    if bn.beta is not None:
        bias = bias + tf.cast(bn.beta, tf.float32)
    return kernel * scale, bias


class WinogradChain:
    """Runs a graph's Winograd convolutions one after the other, in the order they are traced.

    TensorFlow's executor starts every op whose inputs are ready, so independent
    convolutions (the RPN's five pyramid levels, the FPN's four output convolutions) would run
    at once, each holding its output buffer and a strip's transforms. Each one waits for the
    previous one's output instead (a control dependency of its output buffer); both cores
    still work on each. Measured on ``detect()`` of a 1024x768 image (R101, TensorFlow's
    allocator peak, ``tf.config.experimental.get_memory_info``): 715-745 MB of live tensors
    without the chain, ~670 MB with it (conv2d only: ~650 MB). (The larger part of the peak
    RSS above the base turned out to be ROIAlign, see :func:`_native_roi_align`, and the
    freed heap of the first trace, see ``MaskRCNN._warm_up``.)
    """

    def __init__(self) -> None:
        self._last = weakref.WeakKeyDictionary()  # traced graph -> last Winograd output

    def link(self, y: tf.Tensor) -> None:
        self._last[tf.compat.v1.get_default_graph()] = y

    def previous(self) -> Optional[tf.Tensor]:
        return self._last.get(tf.compat.v1.get_default_graph())


class _HeadRegistry:
    """The fused outputs of Winograd convolutions with 1x1 heads (see :func:`_one_by_one_heads`),
    per traced graph: which channels of the fused output each head layer owns."""

    def __init__(self) -> None:
        self._by_graph = weakref.WeakKeyDictionary()

    def register(self, y: tf.Tensor, heads: Sequence[Any]) -> None:
        spans, start = {}, 0
        for head in heads:
            k = int(_inner(head).kernel.shape[-1])
            spans[id(head)] = (start, start + k)
            start += k
        graph = tf.compat.v1.get_default_graph()
        self._by_graph.setdefault(graph, {})[id(y)] = (y, spans)

    def span(self, x: Any, head: Any) -> Optional[Tuple[int, int]]:
        entry = self._by_graph.get(tf.compat.v1.get_default_graph(), {}).get(id(x))
        if entry is None or entry[0] is not x:
            return None
        return entry[1].get(id(head))


def _one_by_one_heads(keras_model: keras.Model, conv) -> List[Any]:
    """The 1x1 convolutions that are all the consumers of ``conv``'s output in ``keras_model``
    (Matterport's RPN: ``rpn_class_raw`` and ``rpn_bbox_pred`` on ``rpn_conv_shared``), or []
    when the output has other consumers, is a model output, or ``conv`` is used more than once.
    Plain, float32, stride 1, linear: each is then a matrix product on ``conv``'s channels."""
    if isinstance(conv, KL.TimeDistributed) or len(conv._inbound_nodes) != 1:
        return []
    outputs = conv._inbound_nodes[0].output_tensors
    if len(outputs) != 1 or any(t is outputs[0] for t in keras.tree.flatten(keras_model.outputs)):
        return []
    heads = []
    for op in keras_model.operations:
        for node in op._inbound_nodes:
            if any(t is outputs[0] for t in node.input_tensors):
                inner = _inner(op)
                if not (_is_plain_conv(op) and not isinstance(op, KL.TimeDistributed)
                        and len(op._inbound_nodes) == 1 and len(node.input_tensors) == 1
                        and tuple(inner.kernel_size) == (1, 1) and tuple(inner.strides) == (1, 1)
                        and tuple(inner.dilation_rate) == (1, 1)
                        and inner.activation in (None, keras.activations.linear)
                        and str(inner.compute_dtype) == "float32"):
                    return []
                heads.append(op)
    return heads


def _head_fn(layer, registry: _HeadRegistry):
    """A 1x1 head of a fused Winograd convolution: its channels of the fused output, or the
    layer's own convolution when the input is a plain map (conv2d under XLA)."""
    plain = _folded_conv_fn(layer)

    def run(x, **kwargs):
        span = registry.span(x, layer)
        if span is None:
            return plain(x, **kwargs)
        with tf.name_scope(layer.name):
            return x[..., span[0]:span[1]]
    return run


def _folded_conv_fn(conv, bn=None, use_winograd: bool = False,
                    chain: Optional[WinogradChain] = None, heads: Sequence[Any] = (),
                    registry: Optional[_HeadRegistry] = None):
    """A callable ``x -> conv(x)`` (then BN when ``bn`` is given) as one convolution.

    Without ``bn`` this is the layer's own convolution, bias and activation, written with
    ``tf.nn.bias_add``: Keras adds the bias with a broadcast ``add``, which grappler's
    remapper does not fuse, so each Keras convolution costs one more pass over its output.

    With ``use_winograd`` (float32 3x3 stride-1 'same' convolutions, see
    :func:`.winograd.is_winograd_conv`) the convolution is :func:`.winograd.winograd_conv3x3`
    with F(6x6, 3x3) tiles on image maps and F(4x4, 3x3) on ROI batches; its transformed
    kernel is computed from the (folded) kernel at every call, like the fold itself; with
    ``chain`` it starts after the graph's previous Winograd convolution (see
    :class:`WinogradChain`). With ``heads`` (1x1 convolutions, the only consumers of this
    one's output) and ``registry`` it returns the heads' outputs concatenated on channels,
    computed strip by strip (see :func:`.winograd.winograd_conv3x3`); the head layers'
    own functions (:func:`_head_fn`) take their channels from it.
    """
    inner = _inner(conv)
    strides = list(inner.strides)
    dilations = list(inner.dilation_rate)
    padding = inner.padding.upper()
    activation = inner.activation
    has_activation = bn is None and activation not in (None, keras.activations.linear)
    tile = winograd.ROI_TILE if isinstance(conv, KL.TimeDistributed) else winograd.MAP_TILE

    # Transformed kernel per traced graph: a layer called several times in one graph (the
    # RPN's shared conv, once per pyramid level) transforms its kernel once. Five copies
    # (33 MB each for 256->512 in F(6x6)) would otherwise be made as soon as P2..P6 exist
    # and held until each level's turn.
    transformed = weakref.WeakKeyDictionary()

    def winograd_kernel(kernel):
        graph = tf.compat.v1.get_default_graph()
        if graph not in transformed:
            transformed[graph] = winograd.transform_kernel(kernel, tile)
        return transformed[graph]

    def run(x, **_ignored):
        # Ops named after the layer: profiles and benchmarks/inference.py's FLOP shares.
        with tf.name_scope(conv.name):
            return run_conv(x)

    def run_conv(x):
        dtype = inner.compute_dtype
        fast = use_winograd and not winograd.in_xla_context()
        if bn is not None:
            kernel, bias = fold_conv_bn(conv, bn, gate=x)
        else:
            kernel = inner.kernel
            bias = inner.bias if inner.use_bias else None
            if fast:
                # The kernel transform must wait for the input like the folds (see
                # fold_conv_bn), or every transformed kernel is made at graph start and
                # held until its convolution.
                kernel = kernel * tf.cast(tf.shape(x)[0] >= 0, kernel.dtype)
        x = tf.cast(x, dtype)
        flat = x
        if isinstance(conv, KL.TimeDistributed):
            # [B, N, h, w, c] -> [B*N, h, w, c]: the ROI axis is a batch axis here.
            inner_dims = x.shape[2:]
            flat = tf.reshape(x, [-1] + list(inner_dims) if inner_dims.is_fully_defined()
                              else tf.concat([[-1], tf.shape(x)[2:]], 0))
        if fast:
            relu = has_activation and activation is keras.activations.relu
            activation_left = has_activation and not relu
            after = chain.previous() if chain is not None else None
            head = None
            if heads and registry is not None and not activation_left:
                cout = int(inner.kernel.shape[-1])
                head = (tf.concat([tf.reshape(tf.cast(_inner(c).kernel, tf.float32), [cout, -1])
                                   for c in heads], 1),
                        tf.concat([tf.cast(_inner(c).bias, tf.float32) if _inner(c).use_bias
                                   else tf.zeros([int(_inner(c).kernel.shape[-1])]) for c in heads], 0))
            y = winograd.winograd_conv3x3(flat, winograd_kernel(kernel), tile, bias=bias, relu=relu,
                                          after=after, head=head)
            if chain is not None:
                chain.link(y)
            if head is not None:
                registry.register(y, heads)
        else:
            kernel = tf.cast(kernel, dtype)
            if _covers_input(inner, flat):
                # The classifier's 7x7 "fully connected" convolution: a matrix product, as in
                # heads.py (oneDNN's convolution with a 1x1 output is ~1.3-2.7x slower).
                k_h, k_w, c_in, c_out = kernel.shape
                y = tf.matmul(tf.reshape(flat, [-1, k_h * k_w * c_in]), tf.reshape(kernel, [-1, c_out]))
                y = tf.reshape(y, [-1, 1, 1, c_out])
            else:
                y = tf.nn.conv2d(flat, kernel, strides=[1] + strides + [1],
                                 padding=padding, dilations=[1] + dilations + [1])
            # bias_add (not +) so that grappler fuses Conv2D+BiasAdd(+Relu) into one oneDNN call.
            if bias is not None:
                y = tf.nn.bias_add(y, tf.cast(bias, dtype))
            activation_left = has_activation
        if activation_left:
            y = activation(y)
        if isinstance(conv, KL.TimeDistributed):
            lead = tf.shape(x)[:2]
            y = tf.reshape(y, tf.concat([lead, tf.shape(y)[1:]], 0))
            y = tf.ensure_shape(y, list(x.shape[:2]) + list(
                inner.compute_output_shape((None,) + tuple(x.shape[2:]))[1:]))
        return y

    return run


def _covers_input(conv, x) -> bool:
    """A valid, unit-stride convolution whose kernel is as large as its (static) input."""
    return (conv.padding == "valid" and tuple(conv.strides) == (1, 1)
            and tuple(conv.dilation_rate) == (1, 1)
            and tuple(x.shape[1:3]) == tuple(conv.kernel_size))


def _identity(x, **_ignored):
    return x


def _is_plain_conv(layer) -> bool:
    conv = _inner(layer)
    return (type(conv) is KL.Conv2D and conv.data_format == "channels_last" and conv.groups == 1
            and len(getattr(layer, "_inbound_nodes", [])) >= 1)


def _without_autocast(layer):
    """Call ``layer`` on its inputs as they are, without Keras' cast to its compute dtype.

    For :class:`PyramidROIAlign` under ``mixed_bfloat16``: it is a float32 layer (box
    arithmetic, float32 output), so ``__call__`` would first cast P2..P5 to float32, a
    full float32 copy of the pyramid (~90 MB at 1024x1024, once per ROIAlign layer) and
    a pass over it, and then concatenate the levels in float32. Its ``call`` accepts
    any float dtype and gathers only the sampled rows before casting them to float32;
    a bfloat16 value cast to float32 is exact, so the pooled output is the same.
    """
    def run(inputs, **_ignored):
        return layer.call(inputs)
    return run


# Boxes per crop_and_resize call in _native_roi_align: a static count, so that grappler's cost
# model can price the op (with a data-dependent count it logs "Error in PredictCost()").
_CROP_CHUNK = 64


def _native_roi_align(layer):
    """:class:`PyramidROIAlign` at inference, with ``tf.image.crop_and_resize`` on each level.

    Same values as the layer. The layer's static-shape form (for XLA and the other backends)
    gathers the four bilinear corners of every sample from one concatenated copy of P2..P5:
    at 1000 ROIs, 7x7 and 256 channels that is an 85 MB copy of the pyramid and ~400 MB of
    corners at once, the largest live set of ``detect()`` (peak RSS ~250 MB higher). Here
    each level crops only its own boxes (as Matterport did), ``_CROP_CHUNK`` at a time, and
    each chunk is written in place into the ``[B, N, ph, pw, C]`` output. 1000 ROIs at 7x7
    from a 1024 px pyramid: 26 ms against the layer's 65 (batch 4: 94 against 247 ms).

    Inside XLA (``crop_and_resize`` has no XLA kernel) and for maps it does not take
    (bfloat16) this is the layer's own ``call``, on the maps as they are (see
    :func:`_without_autocast`).
    """
    chunk = _CROP_CHUNK
    pool_h, pool_w = layer.pool_shape

    def run(inputs, **_ignored):
        boxes, meta, maps = inputs[0], inputs[1], list(inputs[2:])
        if winograd.in_xla_context() or any(m.dtype not in (tf.float16, tf.float32, tf.float64)
                                            for m in maps):
            return layer.call(inputs)
        boxes = tf.cast(boxes, tf.float32)
        level = tf.reshape(roi_pyramid_level(boxes, meta[:, 4:7]), [-1])  # [B*N], 2..5
        shape = tf.shape(boxes)
        rows = shape[0] * shape[1]
        channels = tf.shape(maps[0])[3]
        # A box with a NaN or infinite coordinate pools zeros in the layer; crop_and_resize
        # would index with NaN, so such boxes become one outside every map (zeros too).
        # Finite coordinates are capped where the kernel's arithmetic stays finite.
        flat = tf.reshape(boxes, [-1, 4])
        finite = tf.reduce_all(tf.math.is_finite(flat), axis=-1, keepdims=True)
        outside = tf.constant([[-2.0, -2.0, -2.0, -2.0]])
        # Row ``rows`` is spare: the padding of each level's last chunk reads the box outside
        # every map and is written there; it is dropped at the end.
        flat = tf.concat([tf.where(finite, tf.clip_by_value(flat, -1e4, 1e4), -2.0), outside], 0)
        image_ix = tf.concat([tf.repeat(tf.range(shape[0]), shape[1]), [0]], 0)
        # Zeroed, and made after this layer's boxes: grappler must not merge it with another
        # layer's buffer of the same shape, since the chunks are written into it in place.
        with tf.control_dependencies([boxes]):
            out = tf.raw_ops.Empty(shape=tf.stack([rows + 1, pool_h, pool_w, channels]),
                                   dtype=tf.float32, init=True)
        for k, feature_map in enumerate(maps):
            ix = tf.cast(tf.reshape(tf.where(tf.equal(level, k + 2)), [-1]), tf.int32)
            count = tf.shape(ix)[0]
            chunks = (count + chunk - 1) // chunk
            ix = tf.concat([ix, tf.fill([chunks * chunk - count], rows)], 0)
            level_boxes, level_images = tf.gather(flat, ix), tf.gather(image_ix, ix)

            def body(i, out, feature_map=feature_map, ix=ix, level_boxes=level_boxes,
                     level_images=level_images):
                start = i * chunk
                crops = tf.image.crop_and_resize(
                    feature_map, tf.slice(level_boxes, [start, 0], [chunk, 4]),
                    tf.slice(level_images, [start], [chunk]), layer.pool_shape)
                # In place (InplaceUpdate writes into ``out``'s buffer, which only this loop
                # sees); tensor_scatter_nd_update copied the whole output at every chunk.
                return i + 1, tf.raw_ops.InplaceUpdate(
                    x=out, i=tf.slice(ix, [start], [chunk]), v=tf.cast(crops, tf.float32))

            _, out = tf.while_loop(lambda i, _: i < chunks, body, [tf.constant(0), out],
                                   parallel_iterations=1)
        out = tf.reshape(out[:rows], tf.concat([shape[:2], [pool_h, pool_w, channels]], 0))
        out.set_shape(list(inputs[0].shape[:2]) + [pool_h, pool_w, maps[0].shape[-1]])
        return out
    return run


def _nested(graph: "FoldedGraph"):
    def run(inputs, **_ignored):
        return graph(keras.tree.flatten(inputs))
    return run


def bn_is_affine(bn, training: bool) -> bool:
    """Whether ``bn`` (possibly inside ``TimeDistributed``) normalises with its moving
    statistics in a call with ``training``: then it is a per-channel affine map that can
    be folded into the convolution before it. Matterport's ``TRAIN_BN = False`` fixes it
    so; Keras' BatchNormalization also uses them when the layer is not trainable."""
    inner = _inner(bn)
    fixed = getattr(inner, "fixed_training", None)
    effective = training if fixed is None else fixed
    return not (effective and inner.trainable)


def fold_pays_in_training(conv, x) -> bool:
    """Whether folding this pair saves work in a training step, from static shapes.

    Unfolded, the BatchNorm costs ~6 passes over the convolution's output (scale and
    shift forward; input, gamma and beta gradients backward). Folded, it costs ~4 passes
    over the kernel (scale it; the kernel's and gamma's gradients). Deep layers of a
    small image (ResNet stage 5 at 128 px: a 4x4x2048 output, a 1x1x512x2048 kernel)
    have far more kernel than output, so they stay unfolded; at 1024 px every pair folds.
    Unknown sizes count as large (fold)."""
    inner = _inner(conv)
    dims = list(x.shape[1:])
    if isinstance(conv, KL.TimeDistributed):
        dims = [dims[0]] + list(inner.compute_output_shape((None,) + tuple(dims[1:]))[1:])
    else:
        dims = list(inner.compute_output_shape((None,) + tuple(dims))[1:])
    if any(d is None for d in dims):
        return True
    outputs = int(np.prod(dims))  # per image
    kernel = int(np.prod(inner.kernel.shape))
    return 6 * outputs >= 4 * kernel


def _pair_fns(conv, bn, training: bool):
    """Replacements for a conv+BN pair: folded while the BN is an affine map and (in
    training) folding pays (both decided when the graph is traced, so ``set_trainable``
    + recompile takes effect), else the two layers as they are."""
    folded = _folded_conv_fn(conv, bn)
    decided = {}  # the conv's decision, read by its BN right after it in the same trace

    def run_conv(x, **kwargs):
        decided["fold"] = bn_is_affine(bn, training) and (not training or fold_pays_in_training(conv, x))
        return folded(x) if decided["fold"] else conv(x, **kwargs)

    def run_bn(x, **kwargs):
        return x if decided["fold"] else bn(x, training=training)

    return run_conv, run_bn


class FoldedGraph:
    """Runs a functional Keras model with conv+BN pairs folded.

    ``FoldedGraph(model)(inputs)`` returns the same outputs as
    ``model(inputs, training=False)`` (to float32 rounding), with every pair of
    :func:`find_conv_bn_pairs` computed as one convolution. The model itself is not
    changed. Call it inside a ``tf.function``.

    ``training=True`` runs the training graph (layers get ``training=True``): pairs whose
    BatchNorm is frozen (:func:`bn_is_affine`) are folded there too. The folded kernel is
    a differentiable function of the conv kernel and bias and the BN's gamma and beta, so
    all four get the gradients they get unfolded; the step saves the BatchNorm's forward
    and backward passes over every feature map, and the bias is added by ``BiasAdd``.

    ``use_winograd`` (inference only; default: on unless ``MRCNN_WINOGRAD=0``): the float32
    3x3 stride-1 'same' convolutions with >= 128 input and output channels run as Winograd
    F(6x6, 3x3) (F(4x4, 3x3) in the ROI heads), see :mod:`.winograd`; ``winograd_convs``
    lists them. Inside an XLA-compiled function they stay conv2d.
    """

    def __init__(self, keras_model: keras.Model, training: bool = False,
                 use_winograd: Optional[bool] = None,
                 _chain: Optional[WinogradChain] = None) -> None:
        self.keras_model = keras_model
        self.training = bool(training)
        if use_winograd is None:
            use_winograd = winograd.winograd_enabled()
        # Not in training: its gradients would run through the transforms, untested and
        # not measured to pay.
        use_winograd = bool(use_winograd) and not self.training
        self.use_winograd = use_winograd
        self.pairs = find_conv_bn_pairs(keras_model)
        self.winograd_convs: List[str] = []  # names of the convolutions run as Winograd
        self._replace: Dict[int, Any] = {}
        chain = _chain if _chain is not None else WinogradChain()  # shared with nested models
        registry = _HeadRegistry()
        self.fused_heads: List[str] = []  # 1x1 convolutions computed inside a Winograd one

        def conv_fn(conv, bn=None):
            inner = _inner(conv)
            fast = use_winograd and winograd.is_winograd_conv(inner, inner.compute_dtype)
            heads = []
            if fast:
                self.winograd_convs.append(conv.name)
                heads = _one_by_one_heads(keras_model, conv) if bn is None else []
                for head in heads:
                    self.fused_heads.append(head.name)
                    self._replace[id(head)] = _head_fn(head, registry)
            return _folded_conv_fn(conv, bn, use_winograd=fast, chain=chain, heads=heads,
                                   registry=registry)

        for conv, bn in self.pairs.values():
            if self.training:
                self._replace[id(conv)], self._replace[id(bn)] = _pair_fns(conv, bn, True)
            else:
                self._replace[id(conv)] = conv_fn(conv, bn)
                self._replace[id(bn)] = _identity
        for op in keras_model.operations:
            if id(op) in self._replace:
                continue
            if _is_plain_conv(op):
                self._replace[id(op)] = conv_fn(op)
            elif isinstance(op, PyramidROIAlign):
                self._replace[id(op)] = (_without_autocast(op) if self.training
                                         else _native_roi_align(op))
            elif isinstance(op, keras.Model) and hasattr(op, "_run_through_graph"):
                # A nested functional model (Matterport's rpn_model): its convolutions too.
                nested = FoldedGraph(op, training=self.training, use_winograd=use_winograd,
                                     _chain=chain)
                self.winograd_convs += nested.winograd_convs
                self.fused_heads += nested.fused_heads
                self._replace[id(op)] = _nested(nested)

    def _operation_fn(self, op):
        if id(op) in self._replace:
            return self._replace[id(op)]
        if getattr(op, "_call_has_training_arg", False):
            return functools.partial(op, training=self.training)
        return op

    def __call__(self, inputs: Sequence[Any]) -> List[Any]:
        # Keras' own executor for functional graphs (the one Functional.call uses),
        # with our callable per node.
        return self.keras_model._run_through_graph(list(inputs), operation_fn=self._operation_fn)


def cpu_has_native_bf16(cpuinfo_path: str = "/proc/cpuinfo") -> Optional[bool]:
    """Whether the CPU does bfloat16 arithmetic natively (AVX512_BF16 or AMX-BF16 flags).

    Returns None when it cannot be told (no ``/proc/cpuinfo``, e.g. macOS or Windows).
    """
    try:
        with open(cpuinfo_path) as f:
            for line in f:
                if line.startswith("flags"):
                    flags = set(line.split(":", 1)[1].split())
                    return bool(flags & {"avx512_bf16", "amx_bf16"})
    except OSError:
        return None
    return None


@functools.lru_cache(maxsize=None)
def warn_if_no_native_bf16(cpuinfo_path: str = "/proc/cpuinfo") -> Optional[bool]:
    """Log (once) a warning when bfloat16 inference will run without native support."""
    native = cpu_has_native_bf16(cpuinfo_path)
    gpus = tf.config.list_logical_devices("GPU")
    if native is False and not gpus:
        logger.warning(
            "MIXED_PRECISION='mixed_bfloat16' on a CPU without AVX512_BF16 or AMX: TensorFlow "
            "emulates bfloat16 convolutions there, which is slower than float32 (see README, "
            "'CPU inference'). Leave MIXED_PRECISION = None for inference on this machine.")
    elif native is None and not gpus:
        logger.info("Could not read the CPU flags; bfloat16 inference may be slow without "
                    "AVX512_BF16 or AMX")
    return native
