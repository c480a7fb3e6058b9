"""tf.distribute for training: strategy choice and rebuilding the model in its scope.

Matterport's ``ParallelModel`` split batches by hand; here the standard strategies do
it: ``MirroredStrategy`` for several GPUs on one machine (chosen when GPU_COUNT > 1)
and ``MultiWorkerMirroredStrategy`` across machines (pass ``strategy=``; workers read
``TF_CONFIG``). The global batch is ``config.BATCH_SIZE = IMAGES_PER_GPU * GPU_COUNT``;
each replica gets IMAGES_PER_GPU images, which is what the graph's per-image loops
expect, so GPU_COUNT must equal the number of replicas.
"""
from __future__ import annotations

import logging
from typing import Optional

import tensorflow as tf

logger = logging.getLogger("mrcnn.train")


def resolve_strategy(config, strategy: Optional[tf.distribute.Strategy] = None):
    """The strategy to train with: the one given, MirroredStrategy if GPU_COUNT > 1, else None."""
    if strategy is None and config.GPU_COUNT > 1:
        gpus = tf.config.list_logical_devices("GPU")
        devices = [d.name for d in gpus][:config.GPU_COUNT] if len(gpus) >= config.GPU_COUNT else None
        if devices is None:
            cpus = tf.config.list_logical_devices("CPU")
            if len(cpus) >= config.GPU_COUNT:
                devices = [d.name for d in cpus][:config.GPU_COUNT]
            else:
                raise ValueError(f"GPU_COUNT={config.GPU_COUNT} but only {len(gpus)} GPU(s) are visible")
        strategy = tf.distribute.MirroredStrategy(devices=devices)
    if strategy is not None and strategy.num_replicas_in_sync != config.GPU_COUNT:
        raise ValueError(f"The strategy has {strategy.num_replicas_in_sync} replicas but GPU_COUNT is "
                         f"{config.GPU_COUNT}; set GPU_COUNT to the number of replicas so that each "
                         f"gets IMAGES_PER_GPU images")
    return strategy


def rebuild_in_scope(model, strategy: tf.distribute.Strategy) -> None:
    """Rebuild ``model.keras_model`` under ``strategy.scope()`` keeping its current weights."""
    if getattr(model, "_strategy", None) is strategy:
        return
    weights = model.keras_model.get_weights()
    with strategy.scope():
        model.keras_model = model.build(mode=model.mode, config=model.config)
        model.keras_model.set_weights(weights)
    model._strategy = strategy
    logger.info("Model rebuilt for %s with %d replicas", type(strategy).__name__, strategy.num_replicas_in_sync)
