"""detect() time per Keras backend: TensorFlow (tf.function), TensorFlow + XLA, JAX (jit).

Keras fixes its backend at import, so each backend runs in a worker process
(this script with ``--worker NAME``). Each worker builds the same model
(same config, random weights from the same seed), runs one warm-up
``detect()`` (tracing / compilation, reported separately) and ``--repeats``
timed ones on the same image. The workers run one after the other, in
alternating order over ``--rounds`` rounds so that load drift on a shared
machine hits every backend alike; the table gives the median of all timed
runs and its ratio to plain TensorFlow. Also reported: the share of
TensorFlow's detections that each backend reproduces (same class, box within
1 px, in any order). With random weights every class score is about 1/81, so
which 100 of the 1000 ROIs become detections is decided by float rounding:
any other kernel order (TF+XLA included) keeps other boxes, and this column is
near 0 for every backend; agreement with trained weights is what the
Matterport fixture tests (tests/test_backend_jax.py) check.

    python benchmarks/backends.py [--size 1024] [--backbone resnet101] [--repeats 3] [--rounds 2]
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
BACKENDS = {"tensorflow": "tensorflow", "tensorflow+xla": "tensorflow", "jax": "jax"}


def _config(size: int, backbone: str):
    from mrcnn.config import Config

    class BenchConfig(Config):
        NAME = "bench"
        NUM_CLASSES = 81
        IMAGES_PER_GPU = 1
        BACKBONE = backbone
        IMAGE_MIN_DIM = size
        IMAGE_MAX_DIM = size
        DETECTION_MIN_CONFIDENCE = 0.0  # always 100 detections: the mask head's full load
    return BenchConfig()


def worker(name: str, size: int, backbone: str, repeats: int) -> dict:
    import keras
    import numpy as np
    sys.path.insert(0, ROOT)
    from mrcnn.modeling.maskrcnn import MaskRCNN
    assert keras.backend.backend() == BACKENDS[name], keras.backend.backend()
    keras.utils.set_random_seed(0)
    config = _config(size, backbone)
    model = MaskRCNN("inference", config, "/tmp/mrcnn_bench_logs")
    if name == "tensorflow+xla":
        model.jit_compile = True  # detect()'s own graph, compiled with XLA
    image = np.random.RandomState(0).randint(0, 255, (size * 3 // 4, size, 3)).astype(np.uint8)
    start = time.perf_counter()
    first = model.detect([image])[0]
    warmup = time.perf_counter() - start
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        model.detect([image])
        times.append(time.perf_counter() - start)
    return {"warmup": warmup, "times": times, "class_ids": first["class_ids"].tolist(),
            "rois": first["rois"].tolist()}


def _reproduced(reference: dict, other: dict) -> float:
    """Share of ``reference``'s detections with a same-class box within 1 px in ``other``."""
    import numpy as np
    ref_ids, ref_rois = np.array(reference["class_ids"]), np.array(reference["rois"]).reshape(-1, 4)
    ids, rois = np.array(other["class_ids"]), np.array(other["rois"]).reshape(-1, 4)
    if len(ref_ids) == 0:
        return 1.0
    found = [bool(np.any((ids == c) & (np.abs(rois - box).max(axis=1) <= 1))) if len(ids) else False
             for c, box in zip(ref_ids, ref_rois)]
    return float(np.mean(found))


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--size", type=int, default=1024)
    parser.add_argument("--backbone", default="resnet101")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--backends", default=",".join(BACKENDS))
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.worker:
        print(json.dumps(worker(args.worker, args.size, args.backbone, args.repeats)))
        return

    names = args.backends.split(",")
    results = {n: {"warmup": [], "times": []} for n in names}
    for r in range(args.rounds):
        for name in (names if r % 2 == 0 else names[::-1]):
            env = dict(os.environ, KERAS_BACKEND=BACKENDS[name], TF_CPP_MIN_LOG_LEVEL="2",
                       PYTHONPATH=ROOT + os.pathsep + os.environ.get("PYTHONPATH", ""))
            out = subprocess.run([sys.executable, os.path.abspath(__file__), "--worker", name,
                                  "--size", str(args.size), "--backbone", args.backbone,
                                  "--repeats", str(args.repeats)],
                                 env=env, check=True, capture_output=True, text=True).stdout
            got = json.loads(out.strip().splitlines()[-1])
            results[name]["warmup"].append(got["warmup"])
            results[name]["times"] += got["times"]
            results[name]["class_ids"], results[name]["rois"] = got["class_ids"], got["rois"]
            print(f"round {r + 1}: {name} median {statistics.median(got['times']):.2f} s",
                  file=sys.stderr)

    base_name = names[0]
    base = statistics.median(results[base_name]["times"])
    print(f"\ndetect(), one {args.size * 3 // 4}x{args.size} image, {args.backbone}-FPN, 81 classes, "
          f"100 detections, random weights; median of {args.repeats * args.rounds} runs "
          f"({args.rounds} rounds)\n")
    print(f"| backend | detect() s | ratio to {base_name} | first call (trace/compile) s | "
          f"{base_name}'s detections reproduced |")
    print("|---|---:|---:|---:|---|")
    for name in names:
        res = results[name]
        med = statistics.median(res["times"])
        share = _reproduced(results[base_name], res)
        print(f"| {name} | {med:.2f} | {med / base:.2f} | {statistics.median(res['warmup']):.1f} | "
              f"{share:.0%} |")


if __name__ == "__main__":
    main()
