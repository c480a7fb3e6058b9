"""Inference speed of the Mask R-CNN graph on this machine (CPU).

Builds R101-FPN for 1024x1024 inputs with 81 classes and random weights
(DETECTION_MIN_CONFIDENCE=0, so the mask head and unmolding always see the
full DETECTION_MAX_INSTANCES=100 detections), then times, as the median of
``--repeats`` runs after one warm-up:

* backbone + FPN alone (a sub-model up to P2..P6),
* the graph up to the proposals (backbone + RPN + ProposalLayer),
* the graph up to the classifier head outputs,
* the whole graph (+ DetectionLayer + mask head),
* ``MaskRCNN.detect`` on one image (molding, graph, unmolding),
* ``DetectionLayer`` alone and ``unmold_detections`` of 100 detections,

and derives the per-stage costs by difference. Prints a Markdown table and
the peak RSS. Usage::

    python benchmarks/inference.py [--repeats 3] [--size 1024] [--backbone resnet101]
"""
from __future__ import annotations

import argparse
import os
import resource
import statistics
import sys
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402
import keras  # noqa: E402

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from mrcnn.config import Config  # noqa: E402
from mrcnn.modeling.detection import DetectionLayer  # noqa: E402
from mrcnn.modeling.maskrcnn import MaskRCNN  # noqa: E402


def make_config(size: int, backbone: str) -> Config:
    class BenchConfig(Config):
        NAME = "bench"
        NUM_CLASSES = 81
        IMAGES_PER_GPU = 1
        BACKBONE = backbone
        IMAGE_MIN_DIM = size
        IMAGE_MAX_DIM = size
        DETECTION_MIN_CONFIDENCE = 0.0
    return BenchConfig()


def graph_fn(keras_model, names):
    sub = keras.Model(keras_model.inputs, [keras_model.get_layer(n).output for n in names])

    @tf.function(reduce_retracing=True)
    def run(inputs):
        return sub(inputs, training=False)
    return run


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--size", type=int, default=1024)
    parser.add_argument("--backbone", default="resnet101")
    args = parser.parse_args(argv)

    keras.utils.set_random_seed(0)
    config = make_config(args.size, args.backbone)
    model = MaskRCNN("inference", config, "/tmp/mrcnn_bench_logs")
    rng = np.random.RandomState(0)
    image = rng.randint(0, 255, (args.size * 3 // 4, args.size, 3)).astype(np.uint8)
    molded, metas, windows = model.mold_inputs([image])
    anchors = model.get_anchors(molded.shape[1:])[np.newaxis]
    inputs = [tf.constant(molded, tf.float32), tf.constant(metas, tf.float32),
              tf.constant(anchors, tf.float32)]

    # The backbone alone, as its own model (image input only).
    km = model.keras_model
    backbone = keras.Model(km.get_layer("input_image").output,
                           [km.get_layer(f"fpn_p{i}").output for i in range(2, 7)])
    backbone_fn = tf.function(lambda x: backbone(x, training=False))
    to_rois = graph_fn(km, ["ROI"])
    to_heads = graph_fn(km, ["ROI", "mrcnn_class", "mrcnn_bbox"])
    full = graph_fn(km, ["mrcnn_detection", "mrcnn_mask"])
    detections, masks = [t.numpy() for t in full(inputs)]
    roi_out, probs, deltas = to_heads(inputs)
    # Random weights give odd boxes; unmold 100 synthetic detections of 50-400 px
    # inside the image window instead (the cost grows with box area).
    wy1, wx1, wy2, wx2 = windows[0] / float(args.size - 1)
    y1 = rng.uniform(wy1, wy2 - 0.4, 100)
    x1 = rng.uniform(wx1, wx2 - 0.4, 100)
    side = rng.uniform(50, 400, (100, 2)) / args.size
    synth_det = np.stack([y1, x1, y1 + side[:, 0], x1 + side[:, 1],
                          rng.randint(1, 81, 100), np.linspace(0.99, 0.5, 100)], 1).astype(np.float32)
    synth_masks = rng.uniform(0, 1, (100, 28, 28, 81)).astype(np.float32)
    det_layer = DetectionLayer(config)
    det_fn = tf.function(lambda r, p, d, m: det_layer([r, p, d, m]))
    stages = {
        "backbone": lambda: [t.numpy() for t in backbone_fn(inputs[0])],
        "rois": lambda: to_rois(inputs).numpy(),
        "heads": lambda: [t.numpy() for t in to_heads(inputs)],
        "full": lambda: [t.numpy() for t in full(inputs)],
        "detect": lambda: model.detect([image]),
        "det_layer": lambda: det_fn(roi_out, probs, deltas, inputs[1]).numpy(),
        "unmold": lambda: model.unmold_detections(synth_det, synth_masks, image.shape,
                                                  molded.shape[1:], windows[0]),
    }
    # Interleave the stages in every repeat so that load from other processes
    # affects them alike; report medians.
    for fn in stages.values():
        fn()
    times = {k: [] for k in stages}
    for _ in range(args.repeats):
        for key, fn in stages.items():
            start = time.perf_counter()
            fn()
            times[key].append(time.perf_counter() - start)
    med = {k: statistics.median(v) for k, v in times.items()}
    t_backbone, t_rois, t_heads, t_full = med["backbone"], med["rois"], med["heads"], med["full"]
    t_detect, t_det_layer, t_unmold = med["detect"], med["det_layer"], med["unmold"]

    rows = [
        ("backbone + FPN (P2..P6)", t_backbone),
        ("RPN + proposals (graph to ROI minus backbone)", t_rois - t_backbone),
        ("classifier head incl. ROIAlign (to mrcnn_class minus to ROI)", t_heads - t_rois),
        ("detection + mask head (whole graph minus to mrcnn_class)", t_full - t_heads),
        ("  of which DetectionLayer alone", t_det_layer),
        ("unmold_detections (100 detections, 50-400 px boxes)", t_unmold),
        ("whole graph (tf.function)", t_full),
        ("detect([image]) end to end", t_detect),
    ]
    peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0
    print(f"\nMask R-CNN inference, {args.backbone}-FPN, {args.size}x{args.size}, 81 classes, "
          f"random weights, {os.cpu_count()} CPU cores, TF {tf.__version__}, "
          f"median of {args.repeats}\n")
    print("| stage | seconds | x backbone |")
    print("|---|---:|---:|")
    for name, t in rows:
        print(f"| {name} | {t:.3f} | {t / t_backbone:.2f} |")
    print(f"\npeak RSS: {peak_mb:.0f} MB; detect / backbone = {t_detect / t_backbone:.2f}; "
          f"load average during the run: {os.getloadavg()[0]:.1f}")


if __name__ == "__main__":
    main()
