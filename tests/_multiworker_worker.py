"""One process of the two-worker MultiWorkerMirroredStrategy test (tests/test_multiworker.py).

Usage: ``python _multiworker_worker.py OUT_JSON LOG_DIR INIT_WEIGHTS``

Without ``TF_CONFIG`` it is the 1-replica reference: it builds the tiny model, saves its
initial weights to INIT_WEIGHTS and trains on the global batch of 2 images. With
``TF_CONFIG`` (two workers on 127.0.0.1) it is one of the two workers: it loads
INIT_WEIGHTS and trains under ``MultiWorkerMirroredStrategy`` with one image per worker.
Either way it trains 2 steps with one validation step and writes the per-step and epoch
logs to OUT_JSON and the trained weights to OUT_JSON + ".weights.npz".

A worker whose peer died would wait forever in a collective: collectives get a timeout
and the whole process a watchdog that dumps the stacks and exits.
"""
from __future__ import annotations

import faulthandler
import json
import os
import sys

WATCHDOG_SECONDS = float(os.environ.get("MRCNN_WORKER_TIMEOUT", "300"))
faulthandler.dump_traceback_later(WATCHDOG_SECONDS, exit=True)

import tensorflow as tf  # noqa: E402

# Two processes share the machine's cores: keep each one's thread pools small.
tf.config.threading.set_intra_op_parallelism_threads(1)
tf.config.threading.set_inter_op_parallelism_threads(2)

MULTI_WORKER = "TF_CONFIG" in os.environ
if MULTI_WORKER:
    # Created first, before any other TF op, as MultiWorkerMirroredStrategy requires.
    STRATEGY = tf.distribute.MultiWorkerMirroredStrategy(
        communication_options=tf.distribute.experimental.CommunicationOptions(
            timeout_seconds=0.8 * WATCHDOG_SECONDS))
else:
    STRATEGY = None

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import keras  # noqa: E402
import numpy as np  # noqa: E402

from _train_helpers import TinyConfig, tiny_datasets  # noqa: E402
import mrcnn.model as modellib  # noqa: E402

STEPS = 2


def worker_index():
    return json.loads(os.environ["TF_CONFIG"])["task"]["index"] if MULTI_WORKER else None


def main(out_path: str, log_dir: str, init_path: str) -> None:
    replicas = STRATEGY.num_replicas_in_sync if STRATEGY is not None else 1

    class Cfg(TinyConfig):
        GPU_COUNT = replicas
        IMAGES_PER_GPU = 2 // replicas
        ROI_POSITIVE_RATIO = 1.0   # every positive ROI and no negatives: no random draw in the graph
        TRAIN_ROIS_PER_IMAGE = 64
        STEPS_PER_EPOCH = STEPS
        # The default clip (5.0) is active in these steps (gradient norms are larger): the
        # summed gradient must be clipped as one replica clips its own (clip_summed_gradients).
        GRADIENT_CLIP_NORM = 5.0

    keras.utils.set_random_seed(1)
    train_ds, val_ds = tiny_datasets()
    # Matterport's box and mask losses average over the positives of the whole batch; split
    # across replicas they become a mean of per-replica means. With every image the same
    # both are the same number, so the comparison with one replica is exact.
    first = train_ds.image_info[0]
    for info in train_ds.image_info[1:] + val_ds.image_info:
        info.update(bg_color=first["bg_color"], shapes=first["shapes"])

    # The schedule positions of the training samples this process loads: the pipeline's
    # per-sample seed is (seed * 7919 + epoch * 1000003 + position) mod 2**31.
    from mrcnn.data.pipeline import InputPipeline
    loaded = []
    fetch_one = InputPipeline._fetch_one  # every sample the stream loads (worker or thread)

    def recording_fetch(self, image_id, sample_seed, pool):
        if self.dataset is train_ds:
            v = (int(sample_seed) - 3 * 7_919) % (2 ** 31)
            loaded.append([v // 1_000_003, v % 1_000_003])  # epoch, position
        return fetch_one(self, image_id, sample_seed, pool)

    InputPipeline._fetch_one = recording_fetch

    model = modellib.MaskRCNN("training", Cfg(), log_dir)
    if STRATEGY is None:
        model.keras_model.save_weights(init_path)
    else:
        model.keras_model.load_weights(init_path)

    steps = []

    class Record(keras.callbacks.Callback):
        def on_train_batch_end(self, batch, logs=None):
            steps.append({k: float(v) for k, v in (logs or {}).items()})

    history = model.train(train_ds, val_ds, learning_rate=0.01, epochs=1, layers="all", seed=3, verbose=0,
                tensorboard=False, custom_callbacks=[Record()], strategy=STRATEGY)
    np.savez(out_path + ".weights.npz", *model.keras_model.get_weights())
    epoch = {k: float(v[-1]) for k, v in history.history.items()}
    result = {"replicas": replicas, "worker": worker_index(), "steps": steps, "epoch": epoch,
              "loaded": loaded, "images": len(train_ds.image_ids)}
    with open(out_path, "w") as f:
        json.dump(result, f)
    print("RESULT", json.dumps(result), flush=True)


if __name__ == "__main__":
    main(*sys.argv[1:4])
