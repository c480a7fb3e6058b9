"""Micro-benchmark: Winograd 3x3 convolutions against ``tf.nn.conv2d`` on the model's real shapes.

For each 3x3 stride-1 'same' convolution shape of R101-FPN at 1024x768 (RPN shared conv 256->512
and FPN 256->256 on P2..P4, the mask head's 256->256 on 100 ROIs of 14x14, one backbone 3x3 per
stage), prints the median time of ``conv2d + bias + ReLU`` and of each Winograd variant (all in
``tf.function``s, called alternately so that load from other processes hits all alike), the
ratio conv2d time / variant time (> 1: the variant is faster), and the variant's max abs error
against conv2d relative to the output's max abs value, float32.

Variants (``--variants``; F(m) = F(m x m, 3x3), m = 2, 4, 6):

- ``patchesM``: what :mod:`mrcnn.modeling.winograd` runs: ``extract_patches`` of the padded map,
  input transform as one matmul with ``kron(B^T, B^T)``, one batched matmul, output transform as
  one matmul with ``kron(A^T, A^T)``, one transpose back to the map; in strips of tile rows of at
  most ``winograd.MAX_BYTES`` of products each (``tf.while_loop``), to bound the memory.
- ``wholeM``: the same in one piece (no strips): the cost of the strips.
- ``slicesM``: separable transforms with strided slices of the map (rows, then columns) and
  elementwise sums of them, 16 (36, 64) maps stacked for the batched matmul.
- ``stackM``: the ``a*a`` strided slices of the padded map stacked directly (no transpose),
  then the same matmuls as ``patchesM``.

    python benchmarks/winograd.py [--repeats 7] [--variants patches4 patches6 slices4 stack4]
"""
from __future__ import annotations

import argparse
import os
import statistics
import sys
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

from mrcnn.modeling import winograd  # noqa: E402

# (label, batch, H, W, Cin, Cout): the list, maps of a 1024x768 image (detect() pads it to
# 1024x1024, so there P2 is 256x256; the ratios are about the same).
SHAPES = [
    ("RPN P2 256->512", 1, 256, 192, 256, 512),
    ("RPN P3 256->512", 1, 128, 96, 256, 512),
    ("RPN P4 256->512", 1, 64, 48, 256, 512),
    ("FPN P2 256->256", 1, 256, 192, 256, 256),
    ("FPN P3 256->256", 1, 128, 96, 256, 256),
    ("FPN P4 256->256", 1, 64, 48, 256, 256),
    ("mask head 256->256, 100x14x14", 100, 14, 14, 256, 256),
    ("res2 64->64", 1, 256, 192, 64, 64),
    ("res3 128->128", 1, 128, 96, 128, 128),
    ("res4 256->256", 1, 64, 48, 256, 256),
    ("res5 512->512", 1, 32, 24, 512, 512),
]


def _padded(x, m):
    """F(m, 3)'s matrices, tile size a, x's shape, tiles per column/row and x zero-padded to whole tiles."""
    bt, _, at = winograd.winograd_matrices(m)
    b, h, w, c = x.shape
    th, tw = -(-h // m), -(-w // m)
    xp = tf.pad(x, [[0, 0], [1, m * th + 1 - h], [1, m * tw + 1 - w], [0, 0]])
    return bt, at, m + 2, (b, h, w, c), th, tw, xp


def _slices(x, u, m, bias, relu):
    """Separable input transform with strided slices and sums (variant ``slicesM``)."""
    bt, at, a, (b, h, w, c), th, tw, xp = _padded(x, m)

    def combine(row, parts):
        return tf.add_n([float(f) * parts[k] for k, f in enumerate(row) if f != 0])

    rows = [xp[:, k:k + m * (th - 1) + 1:m] for k in range(a)]
    t = [combine(bt[i], rows) for i in range(a)]
    v = []
    for i in range(a):
        cols = [t[i][:, :, k:k + m * (tw - 1) + 1:m] for k in range(a)]
        v += [combine(bt[j], cols) for j in range(a)]
    return _products_and_output(tf.reshape(tf.stack(v, 0), [a * a, -1, c]), u, m, at,
                                (b, th, tw, h, w), bias, relu)


def _stack(x, u, m, bias, relu):
    """The a*a strided slices stacked, then the Kronecker matmul (variant ``stackM``)."""
    bt, at, a, (b, h, w, c), th, tw, xp = _padded(x, m)
    p = tf.stack([xp[:, r:r + m * (th - 1) + 1:m, s:s + m * (tw - 1) + 1:m]
                  for r in range(a) for s in range(a)], 0)
    v = tf.matmul(tf.constant(np.kron(bt, bt), tf.float32), tf.reshape(p, [a * a, -1]))
    return _products_and_output(tf.reshape(v, [a * a, -1, c]), u, m, at, (b, th, tw, h, w),
                                bias, relu)


def _products_and_output(v, u, m, at, dims, bias, relu):
    b, th, tw, h, w = dims
    a = m + 2
    cout = u.shape[-1]
    prod = tf.matmul(v, u)
    y = tf.matmul(tf.constant(np.kron(at, at), tf.float32), tf.reshape(prod, [a * a, -1]))
    y = tf.reshape(tf.transpose(tf.reshape(y, [m, m, b, th, tw, cout]), [2, 3, 0, 4, 1, 5]),
                   [b, th * m, tw * m, cout])[:, :h, :w]
    y = tf.nn.bias_add(y, bias)
    return tf.nn.relu(y) if relu else y


def _variant(name):
    kind, m = name[:-1], int(name[-1])
    fn = {"patches": lambda x, u, b: winograd.winograd_conv3x3(x, u, m, b, relu=True),
          "whole": lambda x, u, b: winograd.winograd_conv3x3(x, u, m, b, relu=True, max_bytes=1 << 40),
          "slices": lambda x, u, b: _slices(x, u, m, b, True),
          "stack": lambda x, u, b: _stack(x, u, m, b, True)}[kind]
    return m, tf.function(fn)


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--repeats", type=int, default=7)
    p.add_argument("--variants", nargs="+", default=["patches4", "patches6"])
    p.add_argument("--only", nargs="*", default=None, help="shape labels starting with these words")
    args = p.parse_args(argv)
    rng = np.random.RandomState(0)
    conv = tf.function(lambda x, k, b: tf.nn.relu(tf.nn.bias_add(tf.nn.conv2d(x, k, 1, "SAME"), b)))
    variants = {name: _variant(name) for name in args.variants}
    head = "| shape | conv2d ms | " + " | ".join(f"{v} ms | x | err" for v in args.variants) + " |"
    print(f"\nfloat32, conv + bias + ReLU, median of {args.repeats} (alternating); x = conv2d time / "
          f"variant time; err = max |variant - conv2d| / max |conv2d|; "
          f"{os.cpu_count()} cores\n")
    print(head)
    print("|---|---:|" + "---:|---:|---:|" * len(args.variants))
    for label, b, h, w, cin, cout in SHAPES:
        if args.only and not any(label.startswith(o) for o in args.only):
            continue
        x = tf.constant(rng.standard_normal((b, h, w, cin)).astype(np.float32))
        k = tf.constant((rng.standard_normal((3, 3, cin, cout)) / np.sqrt(9 * cin)).astype(np.float32))
        bias = tf.constant(rng.standard_normal(cout).astype(np.float32) * 0.1)
        fns = {"conv2d": (conv, (x, k, bias))}
        for name, (m, fn) in variants.items():
            fns[name] = (fn, (x, winograd.transform_kernel(k, m), bias))
        ref = conv(x, k, bias).numpy()
        err = {}
        for name, (fn, a) in fns.items():  # trace and warm up
            err[name] = float(np.abs(fn(*a).numpy() - ref).max() / np.abs(ref).max())
        times = {name: [] for name in fns}
        for _ in range(args.repeats):
            for name, (fn, a) in fns.items():
                t = time.perf_counter()
                fn(*a).numpy()
                times[name].append(time.perf_counter() - t)
        med = {name: statistics.median(v) * 1e3 for name, v in times.items()}
        cells = [f"{med[v]:.1f} | {med['conv2d'] / med[v]:.2f} | {err[v]:.1e}" for v in args.variants]
        print(f"| {label} | {med['conv2d']:.1f} | " + " | ".join(cells) + " |", flush=True)
    print(f"\nload average at the end {os.getloadavg()[0]:.1f}")


if __name__ == "__main__":
    main()
