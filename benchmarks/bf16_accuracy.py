"""Accuracy of bfloat16 inference against float32 on a trained model and on the Matterport fixture.

* Shapes demo: a checkpoint of ``samples/shapes/demo.py`` (``--weights``; train one with
  ``python samples/shapes/demo.py --logs LOGS``) evaluated on the demo's 50 held-out
  images with ``MIXED_PRECISION`` None and ``"mixed_bfloat16"``: mask mAP@0.5 and @0.75.
* Matterport fixture (random-init R50 weights, 100 detections at confidence 0): share of the
  float32 detections that bf16 finds within 2 px with the same class, and the mask IoU of
  those pairs.

    python benchmarks/bf16_accuracy.py --weights LOGS/shapes_demo.../mask_rcnn_shapes_demo_0040.h5
"""
from __future__ import annotations

import argparse
import os
import sys
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
HERE = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, HERE)
sys.path.insert(0, os.path.join(HERE, "tests"))


def shapes_map(weights: str, policy, val_images: int = 50, seed: int = 0):
    import keras

    import mrcnn.model as modellib
    from mrcnn.evaluation.voc import evaluate_model
    from samples.shapes.demo import DemoInferenceConfig
    from samples.shapes.shapes import make_datasets

    class Config(DemoInferenceConfig):
        MIXED_PRECISION = policy

    _, val = make_datasets(0, val_images, size=128, seed=seed)
    keras.backend.clear_session()
    model = modellib.MaskRCNN("inference", Config(), "/tmp/mrcnn_bf16_logs")
    model.load_weights(weights, by_name=True)
    start = time.perf_counter()
    result = evaluate_model(model, val, model.config, iou_thresholds=[0.5, 0.75])
    return result, time.perf_counter() - start


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--weights", help="shapes demo checkpoint (skip the shapes rows without it)")
    p.add_argument("--no-fixture", action="store_true")
    args = p.parse_args(argv)
    import numpy as np

    from mrcnn.modeling.fold import cpu_has_native_bf16
    print(f"\nbfloat16 vs float32 inference; native bf16 on this CPU: {cpu_has_native_bf16()}\n")
    if args.weights:
        rows = {}
        for policy in (None, "mixed_bfloat16"):
            result, seconds = shapes_map(args.weights, policy)
            rows[policy] = (result, seconds)
        f32, bf16 = rows[None][0], rows["mixed_bfloat16"][0]
        print(f"Shapes demo checkpoint {os.path.basename(args.weights)}, 50 held-out images\n")
        print("| precision | mask mAP@0.5 | mask mAP@0.75 | evaluation seconds |")
        print("|---|---:|---:|---:|")
        for policy, (res, seconds) in rows.items():
            print(f"| {policy or 'float32'} | {res.ap_per_threshold[0.5]:.4f} | {res.ap_per_threshold[0.75]:.4f} | {seconds:.1f} |")
        print(f"\nmAP@0.5 difference bf16 - float32: {bf16.mAP - f32.mAP:+.4f}\n")
    if not args.no_fixture:
        import keras

        from _model_helpers import REF_H5, REF_IMAGE, make_config, read_png
        from mrcnn.modeling.maskrcnn import MaskRCNN
        from test_inference_fast import match_within
        image = read_png(REF_IMAGE)
        out = {}
        for policy in (None, "mixed_bfloat16"):
            keras.backend.clear_session()
            m = MaskRCNN("inference", make_config(MIXED_PRECISION=policy), "/tmp/mrcnn_bf16_logs")
            m.load_weights(REF_H5, by_name=True)
            out[policy] = m.detect([image])[0]
        share, ious = match_within(out[None], out["mixed_bfloat16"], px=2)
        print("Matterport fixture (random-init R50 weights, 1+3 classes, 100 detections)\n")
        print("| detections | matched within 2 px, same class | mask IoU median | mask IoU mean | min |")
        print("|---:|---:|---:|---:|---:|")
        print(f"| {len(out[None]['class_ids'])} | {share:.0%} | {np.median(ious):.3f} | "
              f"{ious.mean():.3f} | {ious.min():.3f} |")


if __name__ == "__main__":
    main()
