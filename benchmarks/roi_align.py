"""Micro-benchmark: ROIAlign at inference, the layer's static-shape form against ``detect()``'s.

``PyramidROIAlign`` is written with static shapes (for XLA and the other backends): one flat copy
of P2..P5 and one gather of the four bilinear corners of every sample. At inference on
TensorFlow, :class:`mrcnn.modeling.fold.FoldedGraph` runs ``fold._native_roi_align`` instead:
``tf.image.crop_and_resize`` on each level, a fixed number of boxes per call, written in place.
Both give the same values (``tests/test_roi_align.py``). For the classifier's shape (1000 ROIs,
7x7) and the mask head's (100 ROIs, 14x14) on a 1024 px pyramid of 256 channels, at batch 1 and 4,
this prints the median time of each (both in ``tf.function``s, called alternately) and their
ratio, and TensorFlow's peak of live tensors during one call of each.

    python benchmarks/roi_align.py [--repeats 7]
"""
from __future__ import annotations

import argparse
import os
import statistics
import sys
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

from mrcnn.modeling import fold  # noqa: E402
from mrcnn.modeling.roi_align import PyramidROIAlign  # noqa: E402

CASES = [(1, 1000, (7, 7)), (4, 1000, (7, 7)), (1, 100, (14, 14)), (4, 100, (14, 14))]


def _inputs(rng, batch: int, rois: int, size: int = 1024, channels: int = 256):
    maps = [tf.constant(rng.standard_normal((batch, size // s, size // s, channels)).astype(np.float32))
            for s in (4, 8, 16, 32)]
    meta = np.zeros((batch, 12 + 81), np.float32)
    meta[:, 4:7] = [size, size, 3]
    # Box sizes from 1% to 80% of the image: every pyramid level gets some.
    centre = rng.random((batch, rois, 2))
    half = rng.random((batch, rois, 2)) ** 3 * 0.4
    boxes = np.concatenate([centre - half, centre + half], -1).clip(0, 1).astype(np.float32)
    return [boxes, meta] + maps


def _live_peak_mb(fn, args) -> float:
    tf.config.experimental.reset_memory_stats("CPU:0")
    before = tf.config.experimental.get_memory_info("CPU:0")["current"]
    fn(*args).numpy()
    return (tf.config.experimental.get_memory_info("CPU:0")["peak"] - before) / 2 ** 20


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--repeats", type=int, default=7)
    args = parser.parse_args()
    rng = np.random.default_rng(0)
    print("| ROIs x batch, pool | layer ms | inference form ms | layer / inference | "
          "live MB layer | inference |")
    print("|---|---:|---:|---:|---:|---:|")
    for batch, rois, pool in CASES:
        inputs = _inputs(rng, batch, rois)
        layer = PyramidROIAlign(pool)
        native = fold._native_roi_align(layer)
        fns = {"layer": tf.function(lambda *x: layer.call(list(x))),
               "native": tf.function(lambda *x: native(list(x)))}
        for fn in fns.values():
            fn(*inputs).numpy()  # trace and warm up
        times = {k: [] for k in fns}
        for _ in range(args.repeats):
            for key, fn in fns.items():
                start = time.perf_counter()
                fn(*inputs).numpy()
                times[key].append(time.perf_counter() - start)
        ms = {k: statistics.median(v) * 1000 for k, v in times.items()}
        live = {k: _live_peak_mb(fn, inputs) for k, fn in fns.items()}
        print(f"| {rois} x {batch}, {pool[0]}x{pool[1]} | {ms['layer']:.1f} | {ms['native']:.1f} | "
              f"{ms['layer'] / ms['native']:.2f} | {live['layer']:.0f} | {live['native']:.0f} |", flush=True)


if __name__ == "__main__":
    main()
