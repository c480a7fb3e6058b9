"""Cost of the per-sample data checks (mrcnn.data.validate.check_sample) in load_image_gt.

    python benchmarks/data_checks.py [--baseline /work/base] [--repeats 5]

Times ``load_image_gt`` per image (median over repeats; each repeat loads every image of
the set once) in this checkout and, with ``--baseline``, in another checkout (e.g. the
previous main, which has no checks), alternating the two in separate processes, and
prints one table with the ratio. Two synthetic sets: the shapes demo's 128x128 images,
and 1024x1024 images with 40 instances (COCO-like, masks as bool and as uint8 0/1). Also
times ``check_sample`` alone on the large set.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time

_CHILD = r"""
import json, sys, time
import numpy as np
sys.path.insert(0, sys.argv[1])
from mrcnn.config import Config
from mrcnn.data.dataset import Dataset
from mrcnn.data.loader import load_image_gt

class Big(Dataset):
    def __init__(self, n, size, instances, mask_dtype):
        super().__init__()
        for c in (1, 2, 3):
            self.add_class("b", c, str(c))
        for i in range(n):
            self.add_image("b", i, None)
        self.prepare()
        self.size, self.instances, self.mask_dtype = size, instances, mask_dtype
    def load_image(self, image_id):
        rng = np.random.RandomState(image_id)
        return rng.randint(0, 255, (self.size, self.size, 3)).astype(np.uint8)
    def load_mask(self, image_id):
        rng = np.random.RandomState(image_id)
        m = np.zeros((self.size, self.size, self.instances), self.mask_dtype)
        for k in range(self.instances):
            y, x = rng.randint(0, self.size - 40, 2)
            m[y:y + 30, x:x + 30, k] = 1
        return m, (np.arange(self.instances) % 3 + 1).astype(np.int32)

class Cfg(Config):
    NAME = "bench"; NUM_CLASSES = 4; IMAGES_PER_GPU = 1
    IMAGE_MIN_DIM = int(sys.argv[3]); IMAGE_MAX_DIM = int(sys.argv[3]); MAX_GT_INSTANCES = 50

size, instances = int(sys.argv[2]), int(sys.argv[4])
ds = Big(int(sys.argv[5]), size, instances, np.dtype(sys.argv[6]))
cfg = Cfg()
load_image_gt(ds, cfg, 0)
t = time.perf_counter()
for i in ds.image_ids:
    load_image_gt(ds, cfg, i)
per_image = (time.perf_counter() - t) / len(ds.image_ids)
out = {"load_image_gt": per_image}
try:
    from mrcnn.data.validate import check_sample
    image, (mask, ids) = ds.load_image(0), ds.load_mask(0)
    t = time.perf_counter()
    for _ in range(5):
        check_sample(image, mask, ids, cfg, 0, "x")
    out["check_sample"] = (time.perf_counter() - t) / 5
except ImportError:
    pass
print(json.dumps(out))
"""

SETS = [("shapes-like 128x128, 3 inst, bool", 128, 128, 3, 40, "bool"),
        ("1024x1024, 40 inst, bool", 1024, 1024, 40, 6, "bool"),
        ("1024x1024, 40 inst, uint8 0/1", 1024, 1024, 40, 6, "uint8")]


def _run(root: str, spec) -> dict:
    _, size, dim, inst, n, dtype = spec
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3", CUDA_VISIBLE_DEVICES="")
    out = subprocess.run([sys.executable, "-c", _CHILD, root, str(size), str(dim), str(inst), str(n), dtype],
                         capture_output=True, text=True, env=env, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--baseline", default=None, help="another checkout to compare with")
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args(argv)
    here = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    print(f"| set | this: load_image_gt ms | check_sample ms | baseline ms | ratio this/baseline |")
    print("|---|---|---|---|---|")
    for spec in SETS:
        new, base, check = [], [], []
        for _ in range(args.repeats):
            r = _run(here, spec)
            new.append(r["load_image_gt"])
            check.append(r.get("check_sample", float("nan")))
            if args.baseline:
                base.append(_run(args.baseline, spec)["load_image_gt"])
        n = statistics.median(new) * 1e3
        c = statistics.median(check) * 1e3
        b = statistics.median(base) * 1e3 if base else float("nan")
        print(f"| {spec[0]} | {n:.2f} | {c:.2f} | {b:.2f} | {n / b:.3f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
