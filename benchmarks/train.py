"""Training speed: the model's step with and without XLA, side by side with a baseline checkout.

    python benchmarks/train.py [--cases issue,demo,default] [--baseline ../base]
                               [--steps 5] [--repeats 5] [--backend jax]
    python benchmarks/train.py --pipeline [--steps 10] [--repeats 3]

Step mode (default). For every case one worker process per variant builds the training
model with ``keras.utils.set_random_seed(0)``, compiles it with its checkout's own
``MaskRCNN.compile`` (Matterport's SGD as ``train()`` builds it there), takes one step to trace/compile and then times ``train_on_batch`` on one fixed synthetic
batch (the data pipeline is excluded). The variants are

- ``baseline``: the ``--baseline`` checkout (default ``../base``, the previous main),
  ``jit_compile=False`` (its whole step cannot be compiled);
- ``this, no XLA``: this checkout, ``jit_compile=False``;
- ``this, XLA``: this checkout, ``jit_compile=True`` (the whole step compiled by XLA);
- with ``--backend jax``, ``this, JAX``: this checkout on Keras' JAX backend (the worker
  runs with ``KERAS_BACKEND=jax``; its step is always ``jax.jit``-compiled by XLA).

Repeats alternate between the variants (baseline, no XLA, XLA, baseline, ...), so load
from other processes hits them alike; the table shows the median s/step, its ratio to
the baseline, the first step (trace + compile) and the first step's total loss (the
variants of this checkout start from the same weights, so their losses must agree: the JAX
worker loads the initial weights the TF worker of this checkout saved, since the backends'
random initialisers draw different numbers from the same seed).

Cases: ``issue`` is issue 12's (R50 ResNet, 128x128, batch 1, 32 ROIs, 3 classes + bg,
all layers); ``demo`` the shapes demo's compact config (batch 4); ``default`` Matterport's
default model (R101, 81 classes, 200 ROIs) at 512x512, batch 1, and ``default1024`` the same at
Matterport's 1024x1024 (about 4x the 512 step; use ``--steps 2 --repeats 3`` on a 2-core machine).

Pipeline mode (``--pipeline``): the tf.data input pipeline of the demo config, without
and with imgaug augmentation, in images/s, against the model step (this checkout only).
"""
from __future__ import annotations

import argparse
import inspect
import json
import os
import resource
import statistics
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

CASES = ("issue", "demo", "default", "default1024")


# ----------------------------------------------------------------------------
# worker (runs inside the checkout given by --root)
# ----------------------------------------------------------------------------
def _case_config(case: str):
    from mrcnn.config import Config
    if case == "issue":
        from samples.shapes.shapes import ShapesConfig

        class IssueConfig(ShapesConfig):
            NAME = "issue12"
            BACKBONE = "resnet50"
            IMAGES_PER_GPU = 1
        return IssueConfig()
    if case == "demo":
        from samples.shapes.demo import DemoConfig
        return DemoConfig()
    if case in ("default", "default1024"):
        size = 512 if case == "default" else 1024

        class Default(Config):
            NAME = f"default{size}"
            IMAGES_PER_GPU = 1
            NUM_CLASSES = 81
            IMAGE_MIN_DIM = size
            IMAGE_MAX_DIM = size
        return Default()
    raise ValueError(f"unknown case {case!r}")


def worker(root: str, case: str, xla: bool, init_weights: str = "") -> int:
    """Build, compile and step; then answer ``N`` lines on stdin with ``TIME <s/step>``.

    ``init_weights``: a ``.weights.h5`` path; the initial weights are loaded from it when it
    exists, else saved to it (so workers on other backends start from the same weights).
    """
    sys.path[:0] = [root, os.path.join(root, "tests")]
    import keras
    import numpy as np

    import mrcnn.model as modellib
    from _model_helpers import synthetic_batch

    keras.utils.set_random_seed(0)
    config = _case_config(case)
    model = modellib.MaskRCNN("training", config, "/tmp/mrcnn_bench_logs")
    if init_weights and os.path.exists(init_weights):
        model.keras_model.load_weights(init_weights)
    elif init_weights:
        model.keras_model.save_weights(init_weights)
    model.set_trainable("all", verbose=0)
    # The checkout's own compile(): Matterport's SGD as train() builds it (its optimizer may
    # differ between checkouts). Older checkouts' compile() has no XLA switch.
    if "jit_compile" in inspect.signature(model.compile).parameters:
        model.compile(0.001, config.LEARNING_MOMENTUM, jit_compile=xla)
    elif xla:
        raise SystemExit(f"{root}: this checkout's compile() has no XLA switch")
    else:
        model.compile(0.001, config.LEARNING_MOMENTUM)
    batch = synthetic_batch(config, batch_size=config.BATCH_SIZE)
    t = time.perf_counter()
    logs = model.keras_model.train_on_batch(batch, return_dict=True)
    first = time.perf_counter() - t
    print("READY " + json.dumps({"first": first, "loss": float(np.asarray(logs["loss"]))}), flush=True)
    for line in sys.stdin:
        n = int(line)
        t, cpu = time.perf_counter(), time.process_time()
        for _ in range(n):
            model.keras_model.train_on_batch(batch)
        # CPU seconds too: on a shared machine they show the work done when wall time is noisy.
        print(f"TIME {(time.perf_counter() - t) / n} {(time.process_time() - cpu) / n}", flush=True)
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(f"RSS {rss}", flush=True)
    return 0


# ----------------------------------------------------------------------------
# driver
# ----------------------------------------------------------------------------
class _Worker:
    def __init__(self, label: str, root: str, case: str, xla: bool, backend: str = "tensorflow",
                 init_weights: str = "") -> None:
        self.label = label
        env = dict(os.environ, PYTHONPATH=root, KERAS_BACKEND=backend)
        self.proc = subprocess.Popen(
            [sys.executable, os.path.abspath(__file__), "--worker", case, "--root", root]
            + (["--xla"] if xla else []) + (["--init-weights", init_weights] if init_weights else []),
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, env=env, cwd=root)
        self.times = []
        self.cpu_times = []
        self.ready = self._read("READY")
        self.rss = None

    def _read(self, tag: str):
        for line in self.proc.stdout:
            if line.startswith(tag + " "):
                return line.split(" ", 1)[1]
        raise RuntimeError(f"{self.label}: worker ended before {tag} (exit {self.proc.wait()})")

    def time_steps(self, steps: int) -> None:
        self.proc.stdin.write(f"{steps}\n")
        self.proc.stdin.flush()
        wall, cpu = self._read("TIME").split()
        self.times.append(float(wall))
        self.cpu_times.append(float(cpu))

    def close(self) -> None:
        self.proc.stdin.close()
        self.rss = float(self._read("RSS"))
        self.proc.wait()


def run_case(case: str, baseline: str, steps: int, repeats: int, backends=()) -> None:
    # Workers start one after another (each compile has both cores), then are timed in turn.
    import tempfile
    init = os.path.join(tempfile.mkdtemp(prefix="mrcnn_bench_"), f"{case}_init.weights.h5")
    variants = [("baseline (no XLA)", baseline, False, "tensorflow", ""),
                ("this, no XLA", HERE, False, "tensorflow", init),
                ("this, XLA", HERE, True, "tensorflow", init)]
    variants += [(f"this, {b.upper() if b == 'jax' else b}", HERE, False, b, init) for b in backends]
    workers = [_Worker(label, root, case, xla, backend, weights)
               for label, root, xla, backend, weights in variants]
    try:
        for _ in range(repeats):
            for w in workers:
                w.time_steps(steps)
    finally:
        for w in workers:
            w.close()
    base = statistics.median(workers[0].times)
    print(f"\ncase `{case}`: median of {repeats} x {steps} steps, CPU threads {os.cpu_count()}, "
          f"baseline {os.path.abspath(baseline)}")
    base_cpu = statistics.median(workers[0].cpu_times)
    print("| variant | s/step | ratio vs baseline | CPU s/step | CPU ratio | first step (s) | first-step loss "
          "| peak RSS (MB) |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|")
    for w in workers:
        ready = json.loads(w.ready)
        med, cpu = statistics.median(w.times), statistics.median(w.cpu_times)
        print(f"| {w.label} | {med:.3f} | {med / base:.2f} | {cpu:.3f} | {cpu / base_cpu:.2f} | "
              f"{ready['first']:.1f} | {ready['loss']:.5f} | {w.rss:.0f} |")
    sys.stdout.flush()


def _pipeline_rate(pipe, batches: int, batch_size: int) -> float:
    ds = pipe.dataset_fn(batch_size=batch_size)
    it = iter(ds)
    next(it)  # warm-up: starts the workers
    t = time.perf_counter()
    for _ in range(batches):
        next(it)
    return batches * batch_size / (time.perf_counter() - t)


def pipeline(steps: int, repeats: int) -> int:
    """The demo's input pipeline against its model step (this checkout)."""
    sys.path.insert(0, HERE)
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
    batches = [c[0] for c in plain.dataset_fn(batch_size=bs).take(steps)]

    def model_rate() -> float:
        t = time.perf_counter()
        for x in batches:
            model.keras_model.train_on_batch(x)
        return len(batches) * bs / (time.perf_counter() - t)

    model.keras_model.train_on_batch(batches[0])  # compile the step
    rows = {"model step": [], "pipeline (no augmentation)": [], "pipeline (imgaug augmentation)": []}
    for _ in range(repeats):
        rows["model step"].append(model_rate())
        rows["pipeline (no augmentation)"].append(_pipeline_rate(plain, steps, bs))
        rows["pipeline (imgaug augmentation)"].append(_pipeline_rate(augmented, steps, bs))
    med = {k: statistics.median(v) for k, v in rows.items()}
    print(f"\nconfig: {config.NAME}, {config.IMAGE_SHAPE[0]}x{config.IMAGE_SHAPE[1]}, batch {bs}, "
          f"median of {repeats} x {steps} batches")
    print("| what | images/s | s/batch | ratio vs model |")
    print("|---|---:|---:|---:|")
    for k, v in med.items():
        print(f"| {k} | {v:.2f} | {bs / v:.3f} | {v / med['model step']:.2f} |")
    return 0


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--cases", default="issue,demo", help=f"comma-separated, of {', '.join(CASES)}")
    parser.add_argument("--baseline", default=os.path.join(os.path.dirname(HERE), "base"),
                        help="checkout to compare with (default: %(default)s)")
    parser.add_argument("--steps", type=int, default=5, help="timed steps per repeat")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--pipeline", action="store_true", help="time the input pipeline instead")
    parser.add_argument("--backend", action="append", default=[], choices=("jax",),
                        help="add a row for this Keras backend (this checkout), e.g. --backend jax")
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    parser.add_argument("--root", help=argparse.SUPPRESS)
    parser.add_argument("--xla", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--init-weights", default="", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.worker:
        return worker(args.root, args.worker, args.xla, args.init_weights)
    if args.pipeline:
        return pipeline(args.steps, args.repeats)
    for case in args.cases.split(","):
        run_case(case.strip(), args.baseline, args.steps, args.repeats, args.backend)
    return 0


if __name__ == "__main__":
    sys.exit(main())
