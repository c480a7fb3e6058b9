"""Winograd convolution for the large 3x3 stride-1 'same' convolutions at inference (TensorFlow only).

On this project's CPUs oneDNN runs a float32 3x3 convolution at about the machine's matmul rate
(~210 GFLOP/s on 2 cores), and those convolutions are most of ``detect()``'s time. The minimal
filtering algorithms of Lavin & Gray (2015) compute an ``m x m`` output tile from an
``a x a`` input tile (``a = m + 2``) with ``a*a`` multiplies per (input, output) channel pair
instead of ``9*m*m``: 36 instead of 144 for F(4x4, 3x3), 64 instead of 324 for F(6x6, 3x3).
Written as ``a*a`` independent matrix products (one batched ``matmul``), the multiplies run at
the matmul rate, and the transforms around them are small constant matrix products:

1. input transform: overlapping ``a x a`` patches of the zero-padded map at stride ``m``
   (``extract_patches``), each mapped to ``B^T d B`` by one matmul with the constant
   ``kron(B^T, B^T)`` ``[a*a, a*a]``;
2. ``M[p] = V[p] @ U[p]`` for the ``a*a`` positions ``p`` of the tile, ``U = G g G^T`` being the
   transformed ``[3, 3, Cin, Cout]`` kernel ``g``;
3. output transform ``A^T M A`` by one matmul with ``kron(A^T, A^T)`` ``[m*m, a*a]``, then the
   ``m x m`` tiles are interleaved back into the map (one transpose) and cropped.

The formulation (patches + Kronecker matmuls) was chosen by ``benchmarks/winograd.py``: the
separable forms with strided slices cost more memory passes than they save. Rounding: the
transforms add values of different sizes (coefficients up to 5.25 for F(6x6)), so the result
differs from ``tf.nn.conv2d`` by ~1e-5 of the output's magnitude in float32, against ~1e-6 for
the direct convolution. For bfloat16 that error would be far too large, so this is float32 only.

TensorFlow only, like :mod:`.fold`, which calls it: the functions take and return ``tf.Tensor``.
"""
from __future__ import annotations

import functools
import os
from fractions import Fraction
from typing import Optional, Sequence, Tuple

import numpy as np
import tensorflow as tf

__all__ = ["winograd_matrices", "transform_kernel", "winograd_conv3x3", "winograd_enabled",
           "is_winograd_conv", "in_xla_context", "MAX_BYTES", "MIN_CHANNELS", "ROI_TILE", "MAP_TILE"]

# Interpolation points of the Toom-Cook construction (the last point, infinity, is implicit).
# Small integers and halves keep the transform coefficients small, which bounds the rounding.
_POINTS = {2: (0, 1, -1), 4: (0, 1, -1, 2, -2), 6: (0, 1, -1, 2, -2, Fraction(1, 2), Fraction(-1, 2))}

# Shape rule measured by benchmarks/winograd.py (float32, 2 cores): the transforms cost memory
# passes proportional to Cin + Cout per tile while the saving is proportional to Cin * Cout, so
# thin convolutions (ResNet stage 2, 64 -> 64: 0.7x) lose; 128 channels and up win.
MIN_CHANNELS = 128
# Tile size: F(6x6) on image-sized maps (fewer multiplies, 1.3-2.6x conv2d), F(4x4) on the
# 14x14 ROI maps of the mask head (both pad 14 to the same work; F(4x4) has fewer transform ops).
MAP_TILE = 6
ROI_TILE = 4
# Largest product buffer of one strip of a Winograd convolution (see winograd_conv3x3): 16 MB
# kept the peak RSS of the RPN's 256x256, 256->512 convolution alone within ~10 MB of conv2d's
# (whole map at once: +250 MB) and was no slower than the whole map (benchmarks/winograd.py:
# patches6 against whole6).
MAX_BYTES = 16 << 20


@functools.lru_cache(maxsize=None)
def winograd_matrices(m: int) -> Tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(B^T [a, a], G [a, 3], A^T [m, a])`` of F(m, 3), ``a = m + 2``, as float64 arrays.

    For a 1-D input ``d`` of length ``a`` and filter ``g`` of length 3, the correlation
    ``y[k] = sum_i d[k + i] g[i]`` (k < m) equals ``A^T ((G g) * (B^T d))``. Built exactly (with
    fractions) by the Toom-Cook construction on the points of ``_POINTS[m]`` and infinity.
    """
    points = [Fraction(p) for p in _POINTS[m]]
    a = m + 2
    n = a - 1  # finite points

    def poly_times_linear(coeffs, root):
        # coefficients (lowest degree first) of coeffs(x) * (x - root)
        out = [Fraction(0)] * (len(coeffs) + 1)
        for k, c in enumerate(coeffs):
            out[k + 1] += c
            out[k] -= root * c
        return out

    # A^T: evaluation of the output polynomial at the points; the infinity column picks the
    # leading coefficient.
    at = [[points[i] ** j for i in range(n)] + [Fraction(int(j == m - 1))] for j in range(m)]
    # G: filter evaluated at each point, divided by the Lagrange denominator there.
    g = []
    for i in range(n):
        denom = Fraction(1)
        for j in range(n):
            if j != i:
                denom *= points[i] - points[j]
        g.append([points[i] ** k / denom for k in range(3)])
    g.append([Fraction(0), Fraction(0), Fraction(1)])
    # B^T: coefficients of the Lagrange numerators prod_{j != i} (x - p_j), and of prod_j (x - p_j)
    # for infinity.
    bt = []
    for i in range(n):
        c = [Fraction(1)]
        for j in range(n):
            if j != i:
                c = poly_times_linear(c, points[j])
        bt.append(c + [Fraction(0)] * (a - len(c)))
    c = [Fraction(1)]
    for j in range(n):
        c = poly_times_linear(c, points[j])
    bt.append(c)
    as_array = lambda rows: np.array([[float(v) for v in r] for r in rows], np.float64)
    return as_array(bt), as_array(g), as_array(at)


def winograd_enabled() -> bool:
    """False when the environment sets ``MRCNN_WINOGRAD=0`` (then every convolution is conv2d)."""
    return os.environ.get("MRCNN_WINOGRAD", "1").strip().lower() not in ("0", "false", "no", "off")


def in_xla_context() -> bool:
    """Whether the graph being traced will be compiled by XLA (``jit_compile=True``).

    XLA needs static shapes inside loops, so the strip loop of :func:`winograd_conv3x3` does not
    compile, and XLA's own buffer planning keeps the whole-map form's transformed buffers
    alive (peak RSS +0.9 GB on the issue case): under XLA the convolutions stay conv2d.
    """
    try:
        from tensorflow.python.framework import ops
        from tensorflow.python.ops import control_flow_util
    except ImportError:  # private modules moved: assume not XLA (the common case)
        return False
    return bool(control_flow_util.GraphOrParentsInXlaContext(ops.get_default_graph()))


def transform_kernel(kernel: tf.Tensor, m: int) -> tf.Tensor:
    """``U = G g G^T`` of a ``[3, 3, Cin, Cout]`` kernel, as ``[a*a, Cin, Cout]`` float32.

    Row ``p = i * a + j`` of the result is tile position ``(i, j)`` (row, column), the order
    of :func:`winograd_conv3x3`'s patches.
    """
    _, g, _ = winograd_matrices(m)
    a = m + 2
    cin, cout = kernel.shape[2], kernel.shape[3]
    g = tf.constant(g, tf.float32)
    # Two plain matmuls, kernel rows then columns, with no transposes (an einsum transposes
    # the kernel twice: ~2x U's size of transient memory, 130 MB for a 512->512 kernel).
    rows = tf.matmul(g, tf.reshape(tf.cast(kernel, tf.float32), [3, 3 * cin * cout]))  # [a, 3*C*D]
    u = tf.matmul(g, tf.reshape(rows, [a, 3, cin * cout]))  # [a, a, C*D], g broadcast over a
    return tf.reshape(u, [a * a, cin, cout])


def _strip(xs: tf.Tensor, u: tf.Tensor, m: int, rows: tf.Tensor, out_rows: tf.Tensor,
           w: tf.Tensor, bias: Optional[tf.Tensor], relu: bool,
           head: Optional[Tuple[tf.Tensor, tf.Tensor]] = None) -> tf.Tensor:
    """Output rows ``[out_rows, B, w, Cout]`` of a padded strip ``xs`` ``[B, rows*m + 2, tw*m + 2, Cin]``
    (``rows`` tile rows; ``out_rows <= rows*m`` drops the far padding of the last strip), or
    ``[out_rows, B, w, K]`` after the 1x1 ``head`` (see :func:`winograd_conv3x3`)."""
    bt, _, at = winograd_matrices(m)
    a = m + 2
    cin, cout = xs.shape[-1], u.shape[-1]
    b = tf.shape(xs)[0]
    tw = (tf.shape(xs)[2] - 2) // m
    # [B, rows, tw, a*a*Cin], each patch ordered (row, column, channel)
    patches = tf.image.extract_patches(xs, [1, a, a, 1], [1, m, m, 1], [1, 1, 1, 1], "VALID")
    # -> [a*a, tiles*Cin]: the tile position first, so that the transform is one matmul
    # with kron(B^T, B^T) and its result is already the batch layout of the products.
    patches = tf.transpose(tf.reshape(patches, [-1, a * a, cin]), [1, 0, 2])
    v = tf.matmul(tf.constant(np.kron(bt, bt), tf.float32), tf.reshape(patches, [a * a, -1]))
    prod = tf.matmul(tf.reshape(v, [a * a, -1, cin]), u)  # [a*a, tiles, Cout]
    y = tf.matmul(tf.constant(np.kron(at, at), tf.float32), tf.reshape(prod, [a * a, -1]))
    # [m*m, tiles*Cout] ordered (dy, dx, b, ty, tx, c) -> [rows*m, B, tw*m, Cout]: rows first,
    # so that the strips concatenate along axis 0; the same single transpose either way.
    y = tf.reshape(y, [m, m, b, rows, tw, cout])
    y = tf.reshape(tf.transpose(y, [3, 0, 2, 4, 1, 5]), [rows * m, b, tw * m, cout])
    y = y[:out_rows, :, :w]
    if bias is not None:
        y = tf.nn.bias_add(y, tf.cast(bias, tf.float32))
    if relu:
        y = tf.nn.relu(y)
    if head is not None:
        kernel, head_bias = head
        k = kernel.shape[-1]
        y = tf.matmul(tf.reshape(y, [-1, cout]), kernel) + head_bias
        y = tf.reshape(y, [out_rows, b, w, k])
    return y


def winograd_conv3x3(x: tf.Tensor, u: tf.Tensor, m: int, bias: Optional[tf.Tensor] = None,
                     relu: bool = False, max_bytes: int = MAX_BYTES,
                     after: Optional[tf.Tensor] = None,
                     head: Optional[Tuple[tf.Tensor, tf.Tensor]] = None) -> tf.Tensor:
    """3x3 stride-1 'same' correlation of ``x`` ``[B, H, W, Cin]`` (float32, any H, W >= 1) with
    the transformed kernel ``u`` ``[(m+2)^2, Cin, Cout]`` of :func:`transform_kernel`, then
    ``+ bias`` ``[Cout]`` and ReLU if asked. Returns ``[B, H, W, Cout]`` float32, equal to
    ``tf.nn.conv2d(x, kernel, 1, "SAME")`` up to float32 rounding. Dynamic B, H, W are fine.

    Memory: the transformed input and the products are ``(m+2)^2 / m^2`` times the input and
    output maps (1.8x for F(6x6), 2.25x for F(4x4)), and a copy or two of each is alive at a
    time. So that the peak stays that of conv2d, the map is done in horizontal strips of whole
    tiles, one after the other (``tf.while_loop``), each strip's products at most
    ``max_bytes``, and each strip's output rows are written in place into one preallocated
    output (``InplaceUpdate``): concatenating the strips instead would hold the output twice.
    With ``after`` (a tensor), nothing is allocated before ``after`` is computed: the
    convolution waits for it (see :class:`.fold.WinogradChain`).

    ``head``, ``(kernel [Cout, K], bias [K])``: a 1x1 convolution applied to each strip after
    the bias and ReLU; the result is then ``[B, H, W, K]`` and the ``Cout``-channel map is
    never whole in memory (the RPN's 256x256x512 P2 map is 128 MB at 1024 px, its two 1x1
    heads together 18 channels; see :class:`.fold.FoldedGraph`).
    """
    a = m + 2
    cin, cout = x.shape[-1], u.shape[-1]
    out_channels = cout if head is None else head[0].shape[-1]
    shape = tf.shape(x)
    b, h, w = shape[0], shape[1], shape[2]
    th, tw = (h + m - 1) // m, (w + m - 1) // m  # tiles per column and row
    # 'same' needs one zero row/column on each side, the far sides more to whole tiles. Each
    # strip pads its own rows, so that no padded copy of the whole map is made.
    pad_w = [1, m * tw + 1 - w]
    row_bytes = b * tw * (a * a * 4 * max(cin, cout))  # largest buffer per tile row
    rows = tf.maximum(1, max_bytes // row_bytes)
    n = (th + rows - 1) // rows

    def body(i, out):
        first = i * rows
        count = tf.minimum(rows, th - first)
        # padded rows [first*m, (first+count)*m + 2) are map rows first*m - 1 ... (clipped)
        top, bottom = first * m - 1, (first + count) * m + 1
        xs = x[:, tf.maximum(top, 0):tf.minimum(bottom, h)]
        xs = tf.pad(xs, [[0, 0], [tf.maximum(-top, 0), tf.maximum(bottom - h, 0)], pad_w, [0, 0]])
        out_rows = tf.minimum(count * m, h - first * m)
        piece = _strip(xs, u, m, count, out_rows, w, bias, relu, head)
        # Writes into ``out``'s buffer: it is this loop's own (below), so nothing else sees it.
        return i + 1, tf.raw_ops.InplaceUpdate(x=out, i=tf.range(first * m, first * m + out_rows),
                                               v=piece)

    # [H, B, W, Cout], uninitialised: the strips write every row. The control dependency on
    # this convolution's kernel keeps grappler from merging it with another convolution's
    # buffer of the same shape (they would then write into one buffer).
    with tf.control_dependencies([u] + ([after] if after is not None else [])):
        out = tf.raw_ops.Empty(shape=tf.stack([h, b, w, out_channels]), dtype=tf.float32, init=False)
    _, out = tf.while_loop(lambda i, _: i < n, body, [tf.constant(0), out], parallel_iterations=1)
    # [H, B, W, Cout] -> [B, H, W, Cout]: no data movement when B == 1 (TensorFlow reshapes a
    # transpose that only moves a dimension of size 1).
    y = tf.transpose(out, [1, 0, 2, 3])
    return tf.ensure_shape(y, list(x.shape[:3]) + [out_channels])


def is_winograd_conv(conv, compute_dtype: str) -> bool:
    """Whether a Keras ``Conv2D`` (not wrapped) gets the Winograd form at inference: 3x3,
    stride 1, no dilation, 'same', channels-last, one group, float32, Cin and Cout >= 128."""
    kernel_shape: Sequence[int] = tuple(conv.kernel.shape)
    return (tuple(conv.kernel_size) == (3, 3) and tuple(conv.strides) == (1, 1)
            and tuple(conv.dilation_rate) == (1, 1) and conv.padding == "same"
            and conv.data_format == "channels_last" and conv.groups == 1
            and str(compute_dtype) == "float32"
            and kernel_shape[2] >= MIN_CHANNELS and kernel_shape[3] >= MIN_CHANNELS)
