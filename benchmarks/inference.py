"""CPU inference speed of ``MaskRCNN.detect``: this checkout against two baseline checkouts.

The issue-14 case: ``detect()`` of one 1024x768 image, R101-FPN, 81 classes,
random weights, DETECTION_MIN_CONFIDENCE=0 (so 100 detections reach the mask
head and unmolding), median of ``--repeats`` after ``--warmups`` warm-ups, with
float32, bfloat16 (``MIXED_PRECISION = "mixed_bfloat16"``) and float32 with
``jit_compile=True`` (XLA). Then throughput (images/s) of ``detect()`` on
batches of 1, 2 and 4 images (IMAGES_PER_GPU = batch) at 512 and 1024 px.

Every measurement runs in a fresh worker process (so the peak RSS is that of
one model and one detect loop), and the workers of the checkouts are started
alternately, ``--rounds`` times, so that load from other processes on the
machine hits all alike. ``--base`` is the main the issue was filed against (no
bf16 inference there, so every row is compared with its float32); ``--prev``
(optional) is an older state of this code, run with the same precision as each
row. Also prints the model's FLOPs, counted from the static shapes of every
convolution and matmul in the traced graph, and the achieved GFLOP/s next to
the measured rate of a 3x3 convolution.

``--backend jax`` prints the issue case on this checkout under TensorFlow,
TensorFlow with XLA and JAX (a worker with ``KERAS_BACKEND=jax``), alternating,
with the base's TensorFlow float32 as the reference.

    python benchmarks/inference.py --base /work/base --prev /work/prev [--rounds 1] [--repeats 5]
    python benchmarks/inference.py --base /work/base --only case   # just the issue case
    python benchmarks/inference.py --base /work/base --backend jax --repeats 3
    python benchmarks/inference.py --only flops --sizes 1024   # FLOP shares, Winograd multiplies
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


# ----------------------------------------------------------------------------
# worker (runs inside one checkout)
# ----------------------------------------------------------------------------
def _make_config(size: int, batch: int, precision: str):
    from mrcnn.config import Config

    class BenchConfig(Config):
        NAME = "bench"
        NUM_CLASSES = 81
        IMAGES_PER_GPU = batch
        BACKBONE = "resnet101"
        IMAGE_MIN_DIM = size
        IMAGE_MAX_DIM = size
        DETECTION_MIN_CONFIDENCE = 0.0
        MIXED_PRECISION = "mixed_bfloat16" if precision == "bf16" else None
    return BenchConfig()


def _graph_flops(graph, convs: list = None) -> tuple:
    """FLOPs (a multiply-add counts 2) of the convolutions and matrix products of a traced
    graph, from each op's static input/output shapes; recurses into called functions.
    ``convs``, if given, receives ``(op name, flops, out shape, kernel shape, strides,
    padding)`` of every Conv2D.

    Returns ``(flops, {op type: flops}, ops with unknown shapes)``."""
    import numpy as np
    total, by_type, unknown = 0.0, {}, []
    for op in graph.get_operations():
        kind = op.type
        flops = None
        try:
            if kind in ("Conv2D", "_FusedConv2D", "DepthwiseConv2dNative"):
                out = op.outputs[0].shape.as_list()
                kh, kw, cin, cout = op.inputs[1].shape.as_list()
                flops = 2.0 * np.prod(out) * kh * kw * (1 if kind.startswith("Depthwise") else cin)
                if convs is not None and kind != "DepthwiseConv2dNative":
                    convs.append((op.name, flops, out, [kh, kw, cin, cout], op.get_attr("strides"),
                                  op.get_attr("padding").decode()))
            elif kind == "Conv2DBackpropInput":  # transposed convolution
                dy = op.inputs[2].shape.as_list()
                kh, kw, cout, _ = op.inputs[1].shape.as_list()
                flops = 2.0 * np.prod(dy) * kh * kw * cout
            elif kind in ("MatMul", "BatchMatMulV2", "BatchMatMulV3"):
                a = op.inputs[0].shape.as_list()
                out = op.outputs[0].shape.as_list()
                k = a[-2] if (op.get_attr("transpose_a") if kind == "MatMul" else op.get_attr("adj_x")) else a[-1]
                flops = 2.0 * np.prod(out) * k
        except (ValueError, TypeError):
            unknown.append(op.name)
            continue
        if flops is not None:
            if not np.isfinite(flops) or flops < 0:
                unknown.append(op.name)
                continue
            total += flops
            by_type[kind] = by_type.get(kind, 0.0) + flops
        for attr in ("f", "then_branch", "else_branch", "body", "cond"):
            try:
                fn = op.get_attr(attr)
            except (ValueError, TypeError):
                continue
            sub = graph._get_function(fn.name) if hasattr(fn, "name") else None
            if sub is not None and hasattr(sub, "graph"):
                t, b, u = _graph_flops(sub.graph, convs)
                total += t
                unknown += u
                for key, v in b.items():
                    by_type[key] = by_type.get(key, 0.0) + v
    return total, by_type, unknown


def _count_flops(model, size: int, convs: list = None) -> float:
    """FLOPs of one ``size``x``size`` image through detect's graph, counted on the graph
    traced with static shapes (batch 1): every convolution and matrix product.

    The count is the network's: every convolution as a direct convolution (the graph
    traced without Winograd), so that GFLOP/s compare with the machine's conv rate; see
    :func:`_winograd_shares` for the multiplies the Winograd convolutions really do."""
    import tensorflow as tf
    from mrcnn.modeling.fold import FoldedGraph
    graph = FoldedGraph(model.keras_model, use_winograd=False)
    anchors = model.get_anchors((size, size))
    concrete = tf.function(lambda *x: graph(x)).get_concrete_function(
        tf.TensorSpec([1, size, size, 3], tf.float32),
        tf.TensorSpec([1, model.config.IMAGE_META_SIZE], tf.float32),
        tf.TensorSpec([1] + list(anchors.shape), tf.float32))
    flops, by_type, unknown = _graph_flops(concrete.graph, convs)
    if unknown:
        raise RuntimeError(f"ops with unknown static shapes, FLOPs would be undercounted: {unknown[:5]}")
    return flops


# Groups of the FLOP table, by the layer name in the op's name scope (fold.py names them).
_GROUPS = [("RPN shared 3x3 conv (256->512, P2..P6)", lambda n: n.startswith("rpn_conv_shared")),
           ("FPN 3x3 convs (256->256, P2..P5)", lambda n: n.startswith("fpn_p") and n[5:6].isdigit()),
           ("mask head 3x3 convs (4x 256->256, 100 ROIs of 14x14)", lambda n: n.startswith("mrcnn_mask_conv")),
           ("backbone 3x3 convs (res*_branch2b)", lambda n: n.startswith("res") and n.endswith("branch2b")),
           ("backbone 1x1 convs and conv1 7x7", lambda n: n.startswith("res") or n == "conv1"),
           ("FPN 1x1 lateral convs", lambda n: n.startswith("fpn_c")),
           ("classifier head (7x7 conv, 1x1 conv)", lambda n: n.startswith("mrcnn_class_conv")),
           ("RPN 1x1 convs", lambda n: n.startswith("rpn_")),
           ("other convs (mask head's 1x1 output conv)", lambda n: True)]


def _layer_of(op_name: str) -> str:
    """The layer name of a conv op from its scope, e.g. 'rpn_conv_shared_3/Conv2D' -> 'rpn_conv_shared'."""
    import re
    scope = op_name.split("/")[-2] if "/" in op_name else op_name
    return re.sub(r"_\d+$", "", scope) if not re.match(r"^fpn_p\d$", scope) else scope


def _winograd_shares(model, size: int) -> list:
    """Rows ``(group, direct multiply-adds, share of the graph's, Winograd-rule multiply-adds)``
    of the model's FLOPs at ``size``, and a total row. The Winograd column counts what
    :mod:`mrcnn.modeling.winograd` multiplies for the convolutions its rule takes:
    ``tiles * (m+2)^2 * Cin * Cout`` with F(6x6) on maps and F(4x4) on ROI batches (batch > 1
    in this batch-1 graph), the rest unchanged."""
    import math
    from mrcnn.modeling import winograd
    convs = []
    total = _count_flops(model, size, convs) / 2
    rows = {g: [0.0, 0.0] for g, _ in _GROUPS}
    conv_macs = 0.0
    for name, flops, out, kernel, strides, padding in convs:
        macs = flops / 2
        conv_macs += macs
        layer = _layer_of(name)
        group = next(g for g, test in _GROUPS if test(layer))
        kh, kw, cin, cout = kernel
        fast = (kh == kw == 3 and list(strides) == [1, 1, 1, 1] and padding == "SAME"
                and min(cin, cout) >= winograd.MIN_CHANNELS)
        if fast:
            m = winograd.ROI_TILE if out[0] > 1 else winograd.MAP_TILE
            tiles = out[0] * math.ceil(out[1] / m) * math.ceil(out[2] / m)
            wmacs = tiles * (m + 2) ** 2 * cin * cout
        else:
            wmacs = macs
        rows[group][0] += macs
        rows[group][1] += wmacs
    other = total - conv_macs  # dense layers and other matmuls
    table = [(g, v[0], v[0] / total, v[1]) for g, v in rows.items() if v[0]]
    table.append(("mask head's transposed conv, dense layers", other, other / total, other))
    table.append(("total", total, 1.0, sum(r[3] for r in table)))
    return table


def _conv_rate(dtype: str, repeats: int = 5) -> float:
    """GFLOP/s of a 3x3, 256->256 convolution on a 256x256 map (best of ``repeats``)."""
    import numpy as np
    import tensorflow as tf
    x = tf.constant(np.random.RandomState(0).standard_normal((1, 256, 256, 256)), tf.dtypes.as_dtype(dtype))
    k = tf.constant(np.random.RandomState(1).standard_normal((3, 3, 256, 256)) * 0.05,
                    tf.dtypes.as_dtype(dtype))
    f = tf.function(lambda a, b: tf.nn.conv2d(a, b, 1, "SAME"))
    f(x, k).numpy()
    best = 1e9
    for _ in range(repeats):
        t = time.perf_counter()
        f(x, k).numpy()
        best = min(best, time.perf_counter() - t)
    return 2 * 256 * 256 * 9 * 256 * 256 / best / 1e9


def _live_peak_mb(reset: bool = False):
    """TensorFlow's own peak of live tensors on the CPU (MB), or None where it is not kept
    (other backends, allocators without statistics). With oneDNN (TensorFlow's x86 default)
    the CPU allocator is a pool that grows and never gives memory back, so the peak RSS is the
    pool's high water: live tensors plus fragmentation. This column tells the two apart."""
    try:
        import tensorflow as tf
        if reset:
            tf.config.experimental.reset_memory_stats("CPU:0")
            return 0.0
        return tf.config.experimental.get_memory_info("CPU:0")["peak"] / 2 ** 20
    except Exception:  # noqa: BLE001 - JAX backend, TF without allocator stats
        return None


def worker(args) -> None:
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    import resource

    import keras
    import numpy as np
    from mrcnn.modeling.maskrcnn import MaskRCNN

    out = {"tree": args.tree, "backend": keras.backend.backend()}
    rng = np.random.RandomState(0)
    if args.task == "case":
        keras.utils.set_random_seed(0)
        model = MaskRCNN("inference", _make_config(1024, 1, args.precision), "/tmp/mrcnn_bench_logs")
        if args.xla:
            model.jit_compile = True
        image = rng.randint(0, 255, (768, 1024, 3)).astype(np.uint8)
        for _ in range(args.warmups):
            r = model.detect([image])
        times = []
        live = _live_peak_mb(reset=True)
        for _ in range(args.repeats):
            t = time.perf_counter()
            r = model.detect([image])
            times.append(time.perf_counter() - t)
        out["seconds"] = statistics.median(times)
        out["detections"] = int(len(r[0]["class_ids"]))
        out["rss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0
        if live is not None:
            out["live_mb"] = _live_peak_mb()
        if args.flops:
            out["flops"] = _count_flops(model, 1024)
            out["conv_f32"] = _conv_rate("float32")
            out["conv_bf16"] = _conv_rate("bfloat16")
    elif args.task == "flops":
        keras.utils.set_random_seed(0)
        model = MaskRCNN("inference", _make_config(args.size, 1, "f32"), "/tmp/mrcnn_bench_logs")
        out["shares"] = _winograd_shares(model, args.size)
    elif args.task == "graph":
        # One process, one model: the Keras graph as main ran it (model(inputs)) against
        # the graph detect() runs now (FoldedGraph), alternating call by call, so that load
        # from other processes hits both alike.
        import tensorflow as tf
        from mrcnn.modeling.fold import FoldedGraph
        keras.utils.set_random_seed(0)
        model = MaskRCNN("inference", _make_config(1024, 1, args.precision), "/tmp/mrcnn_bench_logs")
        image = rng.randint(0, 255, (768, 1024, 3)).astype(np.uint8)
        molded, metas, _ = model.mold_inputs([image])
        inputs = [tf.constant(molded, tf.float32), tf.constant(metas, tf.float32),
                  tf.constant(model.get_anchors(molded.shape[1:])[None])]
        spec = [tf.TensorSpec([None, None, None, 3]), tf.TensorSpec([None, metas.shape[1]]),
                tf.TensorSpec([None, None, 4])]
        folded = FoldedGraph(model.keras_model)
        fns = {"keras": tf.function(lambda a, b, c: model.keras_model([a, b, c], training=False)[3],
                                    input_signature=spec),
               "folded": tf.function(lambda a, b, c: folded([a, b, c])[3], input_signature=spec)}
        times = {k: [] for k in fns}
        for _ in range(args.warmups):
            for f in fns.values():
                f(*inputs).numpy()
        for _ in range(args.repeats):
            for k, f in fns.items():
                t = time.perf_counter()
                f(*inputs).numpy()
                times[k].append(time.perf_counter() - t)
        out["graph"] = {k: statistics.median(v) for k, v in times.items()}
    else:  # throughput at one size, batches 1, 2, 4
        out["images_per_s"] = {}
        for batch in args.batches:
            keras.utils.set_random_seed(0)
            model = MaskRCNN("inference", _make_config(args.size, batch, args.precision),
                             "/tmp/mrcnn_bench_logs")
            if args.xla:
                model.jit_compile = True
            images = [rng.randint(0, 255, (args.size * 3 // 4, args.size, 3)).astype(np.uint8)
                      for _ in range(batch)]
            for _ in range(args.warmups):
                model.detect(images)
            times = []
            for _ in range(args.repeats):
                t = time.perf_counter()
                model.detect(images)
                times.append(time.perf_counter() - t)
            out["images_per_s"][str(batch)] = batch / statistics.median(times)
            del model
            keras.backend.clear_session()
    print("RESULT " + json.dumps(out), flush=True)


# ----------------------------------------------------------------------------
# driver
# ----------------------------------------------------------------------------
def _run(tree: str, extra: list, backend: str = "tensorflow") -> dict:
    env = dict(os.environ, PYTHONPATH=tree, TF_CPP_MIN_LOG_LEVEL="2", KERAS_BACKEND=backend)
    cmd = [sys.executable, os.path.join(HERE, "benchmarks", "inference.py"), "--worker",
           "--tree", tree] + extra
    proc = subprocess.run(cmd, env=env, cwd=tree, capture_output=True, text=True)
    for line in proc.stdout.splitlines():
        if line.startswith("RESULT "):
            return json.loads(line[7:])
    raise RuntimeError(f"worker {cmd} failed:\n{proc.stdout[-2000:]}\n{proc.stderr[-4000:]}")


def _median(values):
    return statistics.median(values) if values else None


def _fmt(v, spec=".2f"):
    return "-" if v is None else format(v, spec)


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--base", default="/work/base",
                   help="checkout the issue's targets are ratios against (default: %(default)s)")
    p.add_argument("--prev", default=None,
                   help="optional second baseline checkout, e.g. the main at the start of this work")
    p.add_argument("--backend", choices=("tensorflow", "jax"), default="tensorflow",
                   help="jax: the issue case on TF, TF+XLA and JAX (this checkout) against the "
                        "base's TF float32")
    p.add_argument("--rounds", type=int, default=1, help="alternating rounds of all workers")
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--warmups", type=int, default=2)
    p.add_argument("--tp-repeats", type=int, default=3, help="repeats of the throughput runs")
    p.add_argument("--tp-warmups", type=int, default=1)
    p.add_argument("--sizes", type=int, nargs="+", default=[512, 1024])
    p.add_argument("--only", choices=("case", "throughput", "graph", "flops"), default=None,
                   help="flops: the model's multiply-adds by layer group at the last of --sizes (no timing), "
                        "and what the Winograd convolutions multiply")
    p.add_argument("--no-xla-throughput", action="store_true",
                   help="throughput rows without the XLA variant (it is in the case table)")
    # worker options
    p.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--tree", default=HERE, help=argparse.SUPPRESS)
    p.add_argument("--task", default="case", help=argparse.SUPPRESS)
    p.add_argument("--precision", default="f32", help=argparse.SUPPRESS)
    p.add_argument("--xla", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--flops", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--size", type=int, default=1024, help=argparse.SUPPRESS)
    p.add_argument("--batches", type=int, nargs="+", default=[1, 2, 4], help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.worker:
        worker(args)
        return

    base, new = os.path.abspath(args.base), HERE
    prev = os.path.abspath(args.prev) if args.prev else None
    f32, bf16, xla = ["--precision", "f32"], ["--precision", "bf16"], ["--precision", "f32", "--xla"]
    # Rows: (label, worker flags, Keras backend). Each row runs on this checkout and on
    # --prev; the base runs float32 on TensorFlow only (its main had no bf16 inference and
    # the targets are ratios against its float32 time).
    if args.backend == "jax":
        rows = [("TF float32", f32, "tensorflow"), ("TF float32 XLA", xla, "tensorflow"),
                ("JAX float32", f32, "jax")]
        prev = None
        if args.only is None:
            args.only = "case"
    else:
        rows = [("float32", f32, "tensorflow"), ("bfloat16", bf16, "tensorflow"),
                ("float32 XLA", xla, "tensorflow")]
    tp_rows = [r for r in rows if not (args.no_xla_throughput and "--xla" in r[1])]
    trees = [("this", new)] + ([("prev", prev)] if prev else [])
    ref_key = ("base", "float32")
    case = {}   # (tree label, row label) -> [result per round]
    tput = {}   # (tree label, row label, size) -> [images/s dict per round]
    extra_info = {}
    t_start = time.time()

    def jobs(row_list):
        """Alternation order within a round: base, then each row on prev and this."""
        yield "base", base, ("float32", f32, "tensorflow")
        for row in row_list:
            for label, tree in trees[::-1]:
                yield label, tree, row

    for rnd in range(args.rounds):
        if args.only in (None, "case"):
            for tree_label, tree, (row, flags, backend) in jobs(rows):
                want_flops = tree_label == "this" and row == rows[0][0] and rnd == 0
                res = _run(tree, flags + ["--task", "case", "--repeats", str(args.repeats),
                                          "--warmups", str(args.warmups)]
                           + (["--flops"] if want_flops else []), backend=backend)
                key = ref_key if tree_label == "base" else (tree_label, row)
                case.setdefault(key, []).append(res)
                if want_flops:
                    extra_info = res
                print(f"[{time.time() - t_start:.0f}s] case {tree_label} {row}: {res['seconds']:.3f} s, "
                      f"{res['rss_mb']:.0f} MB", file=sys.stderr, flush=True)
        if args.only in (None, "throughput"):
            for size in args.sizes:
                for tree_label, tree, (row, flags, backend) in jobs(tp_rows):
                    res = _run(tree, flags + ["--task", "throughput", "--size", str(size),
                                              "--repeats", str(args.tp_repeats),
                                              "--warmups", str(args.tp_warmups)], backend=backend)
                    key = ("base", "float32", size) if tree_label == "base" else (tree_label, row, size)
                    tput.setdefault(key, []).append(res["images_per_s"])
                    print(f"[{time.time() - t_start:.0f}s] throughput {tree_label} {row} {size}: "
                          f"{res['images_per_s']}", file=sys.stderr, flush=True)

    if args.only == "flops":
        size = args.sizes[-1]
        res = _run(new, ["--task", "flops", "--size", str(size)])["shares"]
        print(f"\nMultiply-adds of detect()'s graph, R101-FPN, 81 classes, {size}x{size} input, batch 1, "
              f"100 detections (counted on the traced graph); Winograd = what this checkout's "
              f"Winograd rule multiplies instead\n")
        print("| layers | G multiply-adds | share | with Winograd, G | x fewer |")
        print("|---|---:|---:|---:|---:|")
        for group, macs, share, wmacs in res:
            print(f"| {group} | {macs / 1e9:.1f} | {share:.1%} | {wmacs / 1e9:.1f} | {macs / wmacs:.2f} |")
        return

    if args.only == "graph":
        print("\nIn one process, alternating: the graph as main ran it (keras_model(inputs)) and as "
              f"detect() runs it now (FoldedGraph); 1024x1024 input, median of {args.repeats}\n")
        print("| precision | keras_model s | FoldedGraph s | ratio |")
        print("|---|---:|---:|---:|")
        for precision in ("f32", "bf16"):
            res = _run(new, ["--task", "graph", "--precision", precision, "--repeats", str(args.repeats),
                             "--warmups", str(args.warmups)])["graph"]
            print(f"| {precision} | {res['keras']:.2f} | {res['folded']:.2f} | "
                  f"{res['folded'] / res['keras']:.2f} |", flush=True)
        print(f"\nload average at the end {os.getloadavg()[0]:.1f}")
        return

    import platform
    print(f"\nMask R-CNN CPU inference, R101-FPN, 81 classes, random weights, "
          f"DETECTION_MIN_CONFIDENCE=0; {os.cpu_count()} cores, {platform.processor() or platform.machine()}; "
          f"base = {base}" + (f", prev = {prev}" if prev else "") + f"; this = {new}; "
          f"{args.rounds} round(s) alternating the checkouts; "
          f"load average at the end {os.getloadavg()[0]:.1f}\n")
    if case:
        base_t = _median([r["seconds"] for r in case[ref_key]])
        base_rss = _median([r["rss_mb"] for r in case[ref_key]])
        flops = extra_info.get("flops")
        print(f"detect() of one 1024x768 image (100 detections), seconds, median of {args.repeats} after "
              f"{args.warmups} warm-ups (median over rounds); base = its float32 on TensorFlow "
              f"({base_t:.2f} s, peak RSS {base_rss:.0f} MB)\n")
        head = "| variant | this s | x base |"
        if prev:
            head += " prev s | this x prev |"
        head += " peak RSS MB this |" + (" prev |" if prev else "") + " live MB this |" + \
            (" prev |" if prev else "") + " this GFLOP/s |"
        print(head)
        print("|---" * (head.count("|") - 1) + "|")
        for row, _, _ in rows:
            runs = case.get(("this", row), [])
            t = _median([r["seconds"] for r in runs])
            line = f"| {row} | {_fmt(t)} | {_fmt(t / base_t if t else None)} |"
            if prev:
                pt = _median([r["seconds"] for r in case.get(("prev", row), [])])
                line += f" {_fmt(pt)} | {_fmt(t / pt if t and pt else None)} |"
            # Median over rounds: the peak moves by up to ~200 MB between identical runs,
            # with the order in which the executor runs independent branches.
            line += f" {_median([r['rss_mb'] for r in runs]):.0f} |"
            if prev:
                line += f" {_median([r['rss_mb'] for r in case[('prev', row)]]):.0f} |"
            # TensorFlow's peak of live tensors (weights included) during the timed calls.
            for key in (("this", row), ("prev", row)) if prev else (("this", row),):
                live = [r["live_mb"] for r in case.get(key, []) if r.get("live_mb") is not None]
                line += f" {_median(live):.0f} |" if live else " - |"
            line += f" {flops / t / 1e9:.0f} |" if flops and t else " - |"
            print(line)
        if flops:
            print(f"\nFLOPs of the graph at 1024x1024 (counted on the traced graph, a multiply-add = 2; "
                  f"batch 1): {flops / 1e9:.1f} G (= {flops / 2e9:.1f} G multiply-adds). "
                  f"Measured 3x3 conv 256->256 on 256x256: float32 {extra_info['conv_f32']:.0f} "
                  f"GFLOP/s, bfloat16 {extra_info['conv_bf16']:.0f} GFLOP/s; direct-convolution float32 floor "
                  f"{flops / extra_info['conv_f32'] / 1e9:.2f} s, bfloat16 floor "
                  f"{flops / extra_info['conv_bf16'] / 1e9:.2f} s. GFLOP/s are of these direct-convolution "
                  f"FLOPs; the float32 row's Winograd convolutions multiply less (`--only flops`), so its "
                  f"effective rate can pass the conv rate.")
    if tput and args.only != "case":
        batches = sorted({b for v in tput.values() for r in v for b in r}, key=int)
        print(f"\nThroughput of detect() on a batch of N images (IMAGES_PER_GPU = N), images/s, "
              f"median of {args.tp_repeats} after {args.tp_warmups} warm-up(s); in brackets x base "
              f"float32" + (" and x prev (same row)" if prev else "") + "\n")
        print("| size | variant | " + " | ".join(f"batch {b}" for b in batches) + " |")
        print("|---|---|" + "---:|" * len(batches))
        for size in args.sizes:
            ref = {b: _median([r[b] for r in tput[("base", "float32", size)]]) for b in batches}
            print(f"| {size} | base float32 | " + " | ".join(f"{ref[b]:.3f}" for b in batches) + " |")
            for row, _, _ in tp_rows:
                for tree_label, _ in trees[::-1]:
                    cells = []
                    for b in batches:
                        v = _median([r[b] for r in tput[(tree_label, row, size)]])
                        cell = f"{v:.3f} ({v / ref[b]:.2f}x"
                        if tree_label == "this" and prev:
                            pv = _median([r[b] for r in tput[("prev", row, size)]])
                            cell += f", {v / pv:.2f}x prev"
                        cells.append(cell + ")")
                    print(f"| {size} | {tree_label} {row} | " + " | ".join(cells) + " |")


if __name__ == "__main__":
    main()
