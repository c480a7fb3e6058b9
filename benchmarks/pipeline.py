"""Input pipeline at Matterport's default config, this tree side by side with baseline trees.

    python benchmarks/pipeline.py [--base /work/base [--base OTHER]] [--repeats 3] [--samples 40] [--skip-workers]
    python benchmarks/pipeline.py --base <tree> --paired 8 --repeats 3   # 1 -> 2 worker scaling only

Matterport's default ``Config`` (1024 square, ResNet-101 anchors = 261,888, 81 classes,
56x56 mini masks) on the real COCO val2017 images of ``../shared/data/coco_val2017_mini``
(their 5 annotated images repeated to ``--samples``). Each measurement runs in a fresh
subprocess of one tree (this one = "new", each ``--base``), the trees alternating in each
repeat; the table shows medians and the new/first-base ratio.

Rows:
  - per-stage CPU ms per image (load image, load mask, resize image, masks = resize + boxes +
    mini masks, RPN targets), one core (``taskset -c 0``, 1 BLAS/OMP thread);
  - ``sample`` images/s on one core, raw loads cached (the per-image path after
    ``load_image``/``load_mask``), without and with augmentation (imgaug Fliplr + Affine
    rotate +-10 + Multiply, and the albumentations equivalent), as wall-clock rate and as
    images per CPU-second of the process (the better measure on a shared machine). This
    tree's ``sample`` does not mold the image (the workers do, into shared memory);
  - ``dataset_fn`` images/s with 1, 2 and all (AUTOTUNE) workers, loads cached, worker
    processes (this tree's default) and, for comparison, threads;
  - CPU ms per image in the training process and in the worker processes (1 and 2 workers,
    no augmentation): on a 2-core machine the training process's share runs on the cores the
    workers need, which caps the 1 -> 2 worker scaling at about 2 w / (w + m) (printed with the
    scaling line: on a shared machine the wall-clock ratio moves with the other jobs);
  - peak RSS of the process that ran the 2-worker pipeline and of its largest worker process
    (shared-memory slots a process has touched count in its RSS);
  - with ``--stream``: ``TrainingStream`` (``train()``'s input on JAX, no tf.data) with 1 and 2 workers.
The machine may be shared: only the ratios of one run mean much.

``--paired ROUNDS`` measures only the 1 -> 2 worker scaling, the robust way: one process per tree
runs ``dataset_fn`` with 1 and 2 workers alternately ROUNDS times (order flipped each round, the
workers warm from the first round on) and the ratio is taken per round, between windows seconds
apart. On a shared machine the speed of a core drifts by 10-30% within minutes; a ratio of medians
taken over separate processes minutes apart carries that drift (one tree gave 1.56x-1.75x in six
such runs on one afternoon). The table shows median rates, CPU per image and the median ratio.
"""
from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
MINI = os.path.join(HERE, "..", "shared", "data", "coco_val2017_mini")
if not os.path.isdir(MINI):
    MINI = "/work/shared/data/coco_val2017_mini"


# ------------------------------------------------------------------------------ child side
class _Cached:
    """Mixin: memoised load_image/load_mask keyed by the real image a repeat stands for.

    Defined at module level (and the repeat map is an attribute) so the dataset pickles for
    worker processes; each process fills its own cache on first use.
    """
    orig_ids: dict = {}

    def _cached(self, kind: str, image_id, load):
        real = self.orig_ids.get(image_id, image_id)
        cache = self.__dict__.setdefault("_cache", {})
        if (kind, real) not in cache:
            cache[(kind, real)] = load(real)
        return cache[(kind, real)]

    def load_image(self, image_id):
        return self._cached("i", image_id, super().load_image)

    def load_mask(self, image_id):
        return self._cached("m", image_id, super().load_mask)


try:  # module level so the dataset and config pickle for worker processes (spawned children import this)
    from mrcnn.config import Config as _Config
    from mrcnn.data.formats.coco import CocoDataset as _CocoDataset

    class DefaultConfig(_Config):
        NAME = "coco_default"
        NUM_CLASSES = 81

    class CachedCoco(_Cached, _CocoDataset):
        pass
except ImportError:  # the parent does not need mrcnn
    DefaultConfig = CachedCoco = None


def _setup(samples: int):
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    import logging
    logging.getLogger("mrcnn").setLevel(logging.ERROR)
    cfg = DefaultConfig()
    ds = CachedCoco()
    ds.load_coco(os.path.join(MINI, "annotations.json"), os.path.join(MINI, "images"))
    ds.prepare()
    real = list(ds.image_ids)
    # Repeat the real images: same files, more samples.
    base_infos = list(ds.image_info)
    while len(ds.image_info) < samples:
        ds.image_info.append(dict(base_infos[len(ds.image_info) % len(base_infos)]))
    ds.prepare()
    ds.orig_ids = {k: real[k % len(real)] for k in range(len(ds.image_info))}
    ds.__dict__.pop("_cache", None)
    for i in real:
        ds.load_image(i), ds.load_mask(i)
    return cfg, ds, real


def _augmenters():
    from mrcnn.data.augment import import_imgaug
    iaa = import_imgaug().augmenters
    imgaug = iaa.Sequential([iaa.Fliplr(0.5), iaa.Affine(rotate=(-10, 10)), iaa.Multiply((0.8, 1.2))])
    import albumentations as A
    alb = A.Compose([A.HorizontalFlip(p=0.5), A.Affine(rotate=(-10, 10), p=1.0),
                     A.MultiplicativeNoise(multiplier=(0.8, 1.2), per_channel=False, elementwise=False, p=1.0)])
    return {"imgaug": imgaug, "albumentations": alb}


def _stages(cfg, ds, real) -> dict:
    """Per-stage CPU ms (median over the real images, 3 passes) with the tree's own functions.

    CPU time of this single-threaded process: on a shared machine, wall time also counts
    the time other jobs hold the core."""
    import numpy as np
    from mrcnn.core.anchors import get_pixel_anchors
    from mrcnn.core.boxes import extract_bboxes
    from mrcnn.core.image import resize_image
    from mrcnn.core.masks import minimize_mask, resize_mask
    from mrcnn.data.formats.coco import CocoDataset
    from mrcnn.data.targets import build_rpn_targets
    try:
        from mrcnn.data import fast
        from mrcnn.core.anchors import get_anchor_index
        index = get_anchor_index(cfg, cfg.IMAGE_SHAPE)
    except ImportError:
        fast, index = None, None
    anchors = get_pixel_anchors(cfg, cfg.IMAGE_SHAPE)
    times = {k: [] for k in ("load image", "load mask", "resize image", "masks", "RPN targets")}
    for _ in range(3):
        for i in real:
            t = time.process_time()
            image = CocoDataset.load_image(ds, i)
            times["load image"].append(time.process_time() - t)
            t = time.process_time()
            mask, class_ids = CocoDataset.load_mask(ds, i)
            times["load mask"].append(time.process_time() - t)
            t = time.process_time()
            if fast:
                im, window, scale, padding, crop = fast.resize_image_fast(image, cfg)
            else:
                im, window, scale, padding, crop = resize_image(
                    image, min_dim=cfg.IMAGE_MIN_DIM, min_scale=cfg.IMAGE_MIN_SCALE, max_dim=cfg.IMAGE_MAX_DIM,
                    mode=cfg.IMAGE_RESIZE_MODE)
            times["resize image"].append(time.process_time() - t)
            t = time.process_time()
            if fast:
                rows = fast.zoom_index(mask.shape[0], scale)
                cols = fast.zoom_index(mask.shape[1], scale)
                bbox, crops, keep = fast._instance_crops(mask, rows, cols, padding[0][0], padding[1][0],
                                                          im.shape[0], im.shape[1])
                from mrcnn.core.masks import resize_crops_bilinear
                for c in crops:
                    np.around(resize_crops_bilinear(c, cfg.MINI_MASK_SHAPE))
                class_ids = class_ids[keep]
            else:
                m = resize_mask(mask, scale, padding, crop)
                keep = np.sum(m, axis=(0, 1)) > 0
                m, class_ids = m[:, :, keep], class_ids[keep]
                bbox = extract_bboxes(m)
                minimize_mask(bbox, m, cfg.MINI_MASK_SHAPE)
            times["masks"].append(time.process_time() - t)
            t = time.process_time()
            kw = {"anchor_index": index} if index is not None else {}
            build_rpn_targets(im.shape, anchors, class_ids, bbox, cfg, rng=np.random.RandomState(0), **kw)
            times["RPN targets"].append(time.process_time() - t)
    return {k: 1000 * statistics.median(v) for k, v in times.items()}


def _sample_rate(pipe, n: int):
    """(wall images/s, images per CPU-second) of ``sample`` in this thread."""
    ids = list(pipe.dataset.image_ids)
    for k in range(min(len(ids), 6)):  # warm-up: caches, anchors, imports
        pipe.sample(ids[k], k)
    t, c = time.perf_counter(), time.process_time()
    for k in range(n):
        pipe.sample(ids[k % len(ids)], k)
    return n / (time.perf_counter() - t), n / (time.process_time() - c)


def _timed_batches(pipe, workers, n: int, warmup: int):
    """(images/s, training-process CPU ms per image, worker CPU ms per image) of ``n`` images of
    ``dataset_fn`` (batches of 2) after ``warmup`` batches. The CPU per image on each side: the
    training process's share is what limits the scaling when it runs on the workers' cores."""
    import tensorflow as tf
    ds = pipe.dataset_fn(batch_size=2, num_parallel_calls=tf.data.AUTOTUNE if workers == "all" else workers)
    it = iter(ds)
    for _ in range(warmup):
        next(it)
    batches = max(1, n // 2)
    t, cpu, kids = time.perf_counter(), time.process_time(), _worker_cpu(pipe)
    for _ in range(batches):
        next(it)
    rate = 2 * batches / (time.perf_counter() - t)
    main_ms = 1000 * (time.process_time() - cpu) / (2 * batches)
    worker_ms = 1000 * (_worker_cpu(pipe) - kids) / (2 * batches)
    del it, ds
    return rate, main_ms, worker_ms


def _dataset_rate(pipe, workers, n: int):
    # warm-up: worker start, each worker's cache of the real images
    rate, main_ms, worker_ms = _timed_batches(pipe, workers, n, warmup=4)
    worker_rss = 0.0
    for pool in getattr(pipe, "_pools", {}).values():
        for proc in list(getattr(pool, "_processes", {}).values()):
            try:
                with open(f"/proc/{proc.pid}/status") as f:
                    hwm = [line for line in f if line.startswith("VmHWM:")][0]
                worker_rss = max(worker_rss, int(hwm.split()[1]) / 1024)
            except (OSError, IndexError):
                pass
    if hasattr(pipe, "close"):
        pipe.close()
    return rate, worker_rss, main_ms, worker_ms


def _paired_scaling(pipe, n: int, rounds: int) -> dict:
    """1 and 2 workers alternating inside one process, ``rounds`` times (the order flips each
    round): the per-round ratio is taken between runs seconds apart, so a load that comes and
    goes on a shared machine moves both sides of it. Returns the median rates, CPU ms per image
    and the median of the per-round ratios."""
    got = {1: [], 2: []}
    ratios = []
    for r in range(rounds):
        rates = {}
        for workers in ((1, 2) if r % 2 == 0 else (2, 1)):
            # warm-up: worker start and caches (first round), requests in flight
            got[workers].append(_timed_batches(pipe, workers, n, warmup=3))
            rates[workers] = got[workers][-1][0]
        ratios.append(rates[2] / rates[1])
    out = {"ratio": statistics.median(ratios), "ratios": ratios}
    for w in (1, 2):
        for i, key in enumerate(("rate", "main_cpu_ms", "worker_cpu_ms")):
            out[f"{key}{w}"] = statistics.median(x[i] for x in got[w])
    if hasattr(pipe, "close"):
        pipe.close()
    return out


def _stream_rate(pipe, workers: int, n: int) -> float:
    """images/s of ``TrainingStream`` (the input of train() on JAX/PyTorch: no tf.data)."""
    from mrcnn.data.pydataset import TrainingStream
    stream = TrainingStream(pipe, batch_size=2, parallel=workers)
    for k in range(4):  # warm-up, as for dataset_fn
        stream[k]
    batches = max(1, n // 2)
    t = time.perf_counter()
    for k in range(batches):
        stream[k]
    rate = 2 * batches / (time.perf_counter() - t)
    stream.close()
    pipe.close()
    return rate


def _worker_cpu(pipe) -> float:
    """CPU seconds used so far by the pipeline's worker processes (0 without processes)."""
    total = 0.0
    for pool in getattr(pipe, "_pools", {}).values():
        for proc in list(getattr(pool, "_processes", {}).values()):
            try:
                with open(f"/proc/{proc.pid}/stat") as f:
                    fields = f.read().rsplit(")", 1)[1].split()
                total += (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
            except (OSError, IndexError, ValueError):
                pass
    return total


def child(task: str, samples: int) -> dict:
    cfg, ds, real = _setup(samples)
    if task == "stages":
        return _stages(cfg, ds, real)
    from mrcnn.data.pipeline import InputPipeline
    parts = task.split(":")
    kind, arg = parts[0], parts[1]
    aug_name = parts[2] if len(parts) > 2 else "none"
    mode = parts[3] if len(parts) > 3 else "auto"
    aug = _augmenters()[aug_name] if aug_name != "none" else None
    try:
        pipe = InputPipeline(ds, cfg, shuffle=True, seed=1, augmentation=aug, worker_mode=mode)
    except TypeError:  # a tree without worker processes
        pipe = InputPipeline(ds, cfg, shuffle=True, seed=1, augmentation=aug)
    out = {}
    if kind == "sample":
        out["rate"], out["cpu_rate"] = _sample_rate(pipe, samples)
    elif kind == "paired":
        out.update(_paired_scaling(pipe, samples, int(arg)))
    elif kind == "stream":
        out["rate"] = _stream_rate(pipe, int(arg), samples)
    else:
        (out["rate"], out["worker_rss_mb"], out["main_cpu_ms"],
         out["worker_cpu_ms"]) = _dataset_rate(pipe, arg if arg == "all" else int(arg), samples)
    out["rss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return out


# ----------------------------------------------------------------------------- parent side
def _run(tree: str, task: str, samples: int, one_core: bool) -> dict:
    env = dict(os.environ, PYTHONPATH=tree, TF_CPP_MIN_LOG_LEVEL="2")
    cmd = [sys.executable, os.path.abspath(__file__), "--child", task, "--samples", str(samples)]
    if one_core:
        env.update(OMP_NUM_THREADS="1", OPENBLAS_NUM_THREADS="1", MKL_NUM_THREADS="1",
                   TF_NUM_INTRAOP_THREADS="1", TF_NUM_INTEROP_THREADS="1")
        cmd = ["taskset", "-c", "0"] + cmd
    out = subprocess.run(cmd, env=env, cwd=tree, capture_output=True, text=True, timeout=1800)
    if out.returncode != 0:
        return {"error": out.stderr.strip().splitlines()[-1] if out.stderr.strip() else f"rc {out.returncode}"}
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--base", action="append", help="baseline tree(s); default /work/base")
    ap.add_argument("--extra-base", action="append", default=[],
                    help="more baseline trees, measured in the one-core rows only (e.g. an older, slow tree)")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--samples", type=int, default=40)
    ap.add_argument("--skip-workers", action="store_true", help="only stages and one-core sample rates")
    ap.add_argument("--only-scaling", action="store_true",
                    help="only dataset_fn with 1 and 2 workers, no augmentation (more repeats in less time)")
    ap.add_argument("--paired", type=int, default=0, metavar="ROUNDS",
                    help="only the 1 -> 2 worker scaling, measured in one process per tree with 1 and 2 "
                         "workers alternating ROUNDS times (the robust form on a shared machine)")
    ap.add_argument("--stream", action="store_true",
                    help="also TrainingStream (train()'s input on JAX/PyTorch) with 1 and 2 workers")
    ap.add_argument("--child", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        print(json.dumps(child(args.child, args.samples)))
        return

    bases = args.base or ["/work/base"]
    trees = {f"base{i if len(bases) > 1 else ''}": os.path.abspath(b) for i, b in enumerate(bases)}
    for i, b in enumerate(args.extra_base):
        trees[f"older{i if len(args.extra_base) > 1 else ''}"] = os.path.abspath(b)
    trees["new"] = HERE
    names = list(trees)
    extra = {k for k in names if k.startswith("older")}
    tasks = [("stages", True), ("sample:1:none", True), ("sample:1:imgaug", True),
             ("sample:1:albumentations", True)]
    if not args.skip_workers:
        tasks += [("workers:1:none", False), ("workers:2:none", False), ("workers:all:none", False),
                  ("workers:2:none:thread", False),
                  ("workers:1:imgaug", False), ("workers:2:imgaug", False),
                  ("workers:1:albumentations", False), ("workers:2:albumentations", False)]
    if args.stream:
        tasks += [("stream:1:none", False), ("stream:2:none", False)]
    if args.only_scaling:
        tasks = [("workers:1:none", False), ("workers:2:none", False)] + (
            [("stream:1:none", False), ("stream:2:none", False)] if args.stream else [])
    if args.paired:
        tasks = [(f"paired:{args.paired}:none", False)]
    results = {(t, k): [] for t, _ in tasks for k in trees}
    for r in range(args.repeats):
        for task, one_core in tasks:
            order = names if r % 2 == 0 else names[::-1]
            for k in order:
                if k in extra and not one_core:
                    continue
                results[(task, k)].append(_run(trees[k], task, args.samples, one_core))
                print(f"repeat {r} {task:28s} {k:5s} {results[(task, k)][-1]}", file=sys.stderr, flush=True)

    def med(task, tree, key):
        vals = [x[key] for x in results[(task, tree)] if key in x]
        return statistics.median(vals) if vals else float("nan")

    if args.paired:
        _print_paired(results, tasks[0][0], names, trees, args)
        return
    ref = names[0]
    print(f"\nMatterport default config (1024 square, R101 anchors, 81 classes, 56x56 mini masks), "
          f"COCO val2017 images repeated to {args.samples} samples, median of {args.repeats}; "
          + ", ".join(f"{k} = {v}" for k, v in trees.items()))
    print("\n| measure | " + " | ".join(names) + f" | new/{ref} |")
    print("|---|" + "---:|" * (len(names) + 1))

    def row(label, task, key, fmt):
        vals = [med(task, k, key) for k in names]
        cells = " | ".join("-" if v != v else format(v, fmt) for v in vals)
        ratio = f"{vals[-1] / vals[0]:.2f}" if vals[0] else "-"
        print(f"| {label} | {cells} | {ratio} |")

    for stage in (("load image", "load mask", "resize image", "masks", "RPN targets")
                  if ("stages", False) in tasks or ("stages", True) in tasks else ()):
        row(f"CPU ms/image, one core: {stage}", "stages", stage, ".1f")
    for task, _ in tasks:
        parts = task.split(":")
        if parts[0] == "stages":
            continue
        if parts[0] == "sample":
            row(f"images/s, one core, sample(), aug {parts[2]}", task, "rate", ".2f")
            row(f"images per CPU-second, sample(), aug {parts[2]}", task, "cpu_rate", ".2f")
        elif parts[0] == "stream":
            row(f"images/s, TrainingStream (no tf.data), {parts[1]} workers", task, "rate", ".2f")
        else:
            mode = f", {parts[3]} mode" if len(parts) > 3 else ""
            row(f"images/s, dataset_fn, {parts[1]} workers, aug {parts[2]}{mode}", task, "rate", ".2f")
            if parts[1] in ("1", "2") and parts[2] == "none" and not mode:
                row(f"CPU ms/image, training process, {parts[1]} workers", task, "main_cpu_ms", ".1f")
                row(f"CPU ms/image, worker processes, {parts[1]} workers", task, "worker_cpu_ms", ".1f")
    if not args.skip_workers:
        row("peak RSS MB, main process, dataset_fn 2 workers", "workers:2:none", "rss_mb", ".0f")
        row("peak RSS MB, largest worker process, 2 workers (0: no processes)", "workers:2:none",
            "worker_rss_mb", ".0f")
    if not args.skip_workers:
        for tree in [k for k in names if k not in extra]:
            one, two = med("workers:1:none", tree, "rate"), med("workers:2:none", tree, "rate")
            # What the training process's share allows on 2 saturated cores: with w ms of worker
            # CPU and m ms of training-process CPU per image, one worker makes an image per w ms
            # (the training process has the other core), two make 2 per (w + m) ms. w is taken
            # from the 2-worker run for both, so the figure isolates m; shown because on a shared
            # machine the wall-clock ratio moves with the other jobs.
            w2, m2 = med("workers:2:none", tree, "worker_cpu_ms"), med("workers:2:none", tree, "main_cpu_ms")
            print(f"\nscaling 1 -> 2 workers ({tree}): {two / one:.2f}x without augmentation "
                  f"(ceiling on 2 cores from the CPU columns, 2w/(w+m) = {2 * w2 / (w2 + m2):.2f}x)", end="")
            if not args.only_scaling:
                one_a, two_a = med("workers:1:imgaug", tree, "rate"), med("workers:2:imgaug", tree, "rate")
                print(f", {two_a / one_a:.2f}x with imgaug", end="")
        print()


def _print_paired(results, task, names, trees, args) -> None:
    print(f"\nMatterport default config, COCO val2017 images repeated to {args.samples} samples per run; "
          f"1 and 2 workers alternating {task.split(':')[1]} times in one process per tree, "
          f"{args.repeats} process(es) per tree; medians; " + ", ".join(f"{k} = {v}" for k, v in trees.items()))
    keys = [("images/s, 1 worker", "rate1", ".2f"), ("images/s, 2 workers", "rate2", ".2f"),
            ("CPU ms/image, training process, 1 worker", "main_cpu_ms1", ".1f"),
            ("CPU ms/image, training process, 2 workers", "main_cpu_ms2", ".1f"),
            ("CPU ms/image, worker processes, 1 worker", "worker_cpu_ms1", ".1f"),
            ("CPU ms/image, worker processes, 2 workers", "worker_cpu_ms2", ".1f")]
    print("\n| measure | " + " | ".join(names) + f" | new/{names[0]} |")
    print("|---|" + "---:|" * (len(names) + 1))
    for label, key, fmt in keys:
        vals = [statistics.median(x[key] for x in results[(task, k)] if key in x) for k in names]
        print(f"| {label} | " + " | ".join(format(v, fmt) for v in vals) + f" | {vals[-1] / vals[0]:.2f} |")
    for k in names:
        ratios = [r for x in results[(task, k)] for r in x.get("ratios", [])]
        if ratios:
            w = statistics.median(x["worker_cpu_ms2"] for x in results[(task, k)] if "worker_cpu_ms2" in x)
            m = statistics.median(x["main_cpu_ms2"] for x in results[(task, k)] if "main_cpu_ms2" in x)
            print(f"\nscaling 1 -> 2 workers ({k}): median {statistics.median(ratios):.2f}x of {len(ratios)} "
                  f"paired rounds (min {min(ratios):.2f}, max {max(ratios):.2f}; ceiling on 2 cores from the "
                  f"CPU columns, 2w/(w+m) = {2 * w / (w + m):.2f}x)", end="")
    print()


if __name__ == "__main__":
    main()
