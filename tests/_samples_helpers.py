"""Helpers for the sample tests: a tiny configuration, a stand-in for mask_rcnn_coco.h5,
a local HTTP server and a runner that calls a sample's ``main(argv)`` in-process.

There are no real COCO weights on the test machines. The stand-in is a weights file
written by this package's own ``save_weights`` from an 81-class model of the tiny
configuration: it has every layer of mask_rcnn_coco.h5 (by name, in Matterport's h5
layout) but random values and the tiny shapes. It exercises the same code paths —
finding the file, loading by name, excluding the class-specific heads when the class
count differs — not the accuracy of the real weights.
"""
from __future__ import annotations

import contextlib
import functools
import http.server
import io
import os
import shutil
import subprocess
import sys
import threading
from typing import Dict, Iterator, List, Sequence, Tuple

from helpers import DATA

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
LISC_TOOL = os.path.join(os.path.dirname(DATA), "tools", "make_lisc_layout.py")

#: Small enough for a CPU test (ResNet-50 at 128 px, narrow FPN and heads, few ROIs).
TINY: Dict[str, object] = dict(
    BACKBONE="resnet50", IMAGE_MIN_DIM=128, IMAGE_MAX_DIM=128, IMAGES_PER_GPU=1,
    RPN_ANCHOR_SCALES=(8, 16, 32, 64, 128), POST_NMS_ROIS_INFERENCE=50, POST_NMS_ROIS_TRAINING=64,
    TRAIN_ROIS_PER_IMAGE=16, PRE_NMS_LIMIT=500, DETECTION_MAX_INSTANCES=5,
    RPN_TRAIN_ANCHORS_PER_IMAGE=64, MAX_GT_INSTANCES=5, FPN_CLASSIF_FC_LAYERS_SIZE=64,
    TOP_DOWN_PYRAMID_SIZE=64, STEPS_PER_EPOCH=2, VALIDATION_STEPS=1)


def tiny_set_args(**extra: object) -> List[str]:
    """``--set KEY=VALUE`` arguments for :data:`TINY` (+ ``extra``)."""
    args: List[str] = []
    for k, v in {**TINY, **extra}.items():
        args += ["--set", f"{k}={v!r}"]
    return args


def write_standin_coco_weights(path: str) -> str:
    """Save an 81-class tiny model's weights (Matterport h5 layout) to ``path``."""
    import keras
    import mrcnn.model as modellib
    from mrcnn.config import Config

    cfg = type("StandInCocoConfig", (Config,), dict(TINY, NAME="coco", NUM_CLASSES=81))()
    model = modellib.MaskRCNN(mode="inference", config=cfg, model_dir=os.path.dirname(path))
    model.save_weights(path)
    del model
    keras.backend.clear_session()
    return path


def run_main(main, argv: Sequence[str]) -> Tuple[int, str, str]:
    """Call ``main(argv)`` and return ``(exit_code, stdout, stderr)``."""
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            code = main(list(argv))
        except SystemExit as exc:  # argparse --help / usage errors
            code = exc.code if isinstance(exc.code, int) else 1
    return code, out.getvalue(), err.getvalue()


def run_script(args: Sequence[str], env: Dict[str, str] = None, cwd: str = None,
               timeout: float = 300) -> subprocess.CompletedProcess:
    """Run ``python args...`` from the repository root with ``env`` added."""
    full_env = dict(os.environ, PYTHONPATH=ROOT, TF_CPP_MIN_LOG_LEVEL="2", MPLBACKEND="Agg")
    full_env.update(env or {})
    return subprocess.run([sys.executable, *args], cwd=cwd or ROOT, env=full_env, capture_output=True,
                          text=True, timeout=timeout)


def make_lisc_layout(out: str, per_class: int = 4, dataset: str = "dataset2") -> str:
    """A LISC-layout tree of real leukocytes (shared/tools/make_lisc_layout.py); per_class 0: all."""
    if not os.path.isdir(os.path.join(out, "Main Dataset")):
        subprocess.run([sys.executable, LISC_TOOL, out, "--per-class", str(per_class),
                        "--dataset", dataset], check=True, capture_output=True)
    return out


@contextlib.contextmanager
def serve_folder(folder: str) -> Iterator[str]:
    """Serve ``folder`` over HTTP on 127.0.0.1; yields the base URL."""
    handler = functools.partial(_QuietHandler, directory=folder)
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args) -> None:  # keep test output clean
        pass


def copy_tree(src: str, dst: str) -> str:
    shutil.copytree(src, dst)
    return dst
