"""Training speed: model step time vs input pipeline throughput, peak RSS.

    python benchmarks/train.py [--steps 20] [--repeats 3] [--xla]

Prints one table: median over repeats of
  - the model's training step (the demo config, batches taken from a cache so the input
    pipeline is not involved), as images/s and s/step;
  - the tf.data input pipeline alone, without and with augmentation (imgaug flips,
    affine and colour), as images/s;
  - their ratio (pipeline images/s ÷ model images/s; ≥ 3 means the model never waits),
  - with --xla, the model step again under XLA auto-clustering (``train(..., xla=True)``),
and the peak RSS of the process.
"""
from __future__ import annotations

import argparse
import os
import resource
import statistics
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")


def _pipeline_rate(pipe, batches: int, batch_size: int) -> float:
    ds = pipe.dataset_fn(batch_size=batch_size)
    it = iter(ds)
    next(it)  # warm-up: starts the workers
    t = time.perf_counter()
    for _ in range(batches):
        next(it)
    return batches * batch_size / (time.perf_counter() - t)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=10, help="timed steps / batches per repeat")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--xla", action="store_true", help="also time the step under XLA auto-clustering")
    args = parser.parse_args(argv)

    import mrcnn.model as modellib
    from mrcnn.data.augment import import_imgaug
    from mrcnn.data.pipeline import InputPipeline
    from samples.shapes.demo import DemoConfig
    from samples.shapes.shapes import make_datasets

    import_imgaug()
    import imgaug.augmenters as iaa

    config = DemoConfig()
    train_ds, _ = make_datasets(200, 1, seed=5)
    bs = config.BATCH_SIZE

    plain = InputPipeline(train_ds, config, seed=1)
    augmentation = iaa.Sequential([iaa.Fliplr(0.5), iaa.Affine(rotate=(-10, 10)), iaa.Multiply((0.8, 1.2))])
    augmented = InputPipeline(train_ds, config, seed=1, augmentation=augmentation)

    model = modellib.MaskRCNN("training", config, "/tmp/mrcnn_bench_logs")
    model.set_trainable("all", verbose=0)
    model.compile(0.001, config.LEARNING_MOMENTUM)
    cached = list(plain.dataset_fn(batch_size=bs).take(args.steps))
    batches = [c[0] for c in cached]

    def model_rate() -> float:
        t = time.perf_counter()
        for x in batches:
            model.keras_model.train_on_batch(x)
        return len(batches) * bs / (time.perf_counter() - t)

    model.keras_model.train_on_batch(batches[0])  # compile the step
    rows = {"model step": [], "pipeline (no augmentation)": [], "pipeline (imgaug augmentation)": []}
    for _ in range(args.repeats):
        rows["model step"].append(model_rate())
        rows["pipeline (no augmentation)"].append(_pipeline_rate(plain, args.steps, bs))
        rows["pipeline (imgaug augmentation)"].append(_pipeline_rate(augmented, args.steps, bs))
    if args.xla:
        from mrcnn.engine.train import xla_autoclustering
        with xla_autoclustering():
            model.keras_model.make_train_function(force=True)  # retrace under auto-clustering
            model.keras_model.train_on_batch(batches[0])
            rows["model step (XLA auto-clustering)"] = [model_rate() for _ in range(args.repeats)]
    med = {k: statistics.median(v) for k, v in rows.items()}
    peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024

    print(f"\nconfig: {config.NAME}, {config.BACKBONE}, {config.IMAGE_SHAPE[0]}x{config.IMAGE_SHAPE[1]}, "
          f"batch {bs}, CPU threads {os.cpu_count()}; median of {args.repeats} x {args.steps} steps")
    print(f"{'what':34} {'images/s':>10} {'s/batch':>9} {'ratio vs model':>15}")
    for k, v in med.items():
        print(f"{k:34} {v:10.2f} {bs / v:9.3f} {v / med['model step']:15.2f}")
    print(f"peak RSS: {peak_mb:.0f} MB")
    return 0


if __name__ == "__main__":
    sys.exit(main())
