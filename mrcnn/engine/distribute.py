"""tf.distribute for training: strategy choice and rebuilding the model in its scope.

Matterport's ``ParallelModel`` split batches by hand; here the standard strategies do
it: ``MirroredStrategy`` for several GPUs on one machine (chosen when GPU_COUNT > 1)
and ``MultiWorkerMirroredStrategy`` across machines (pass ``strategy=``; workers read
``TF_CONFIG``). The global batch is ``config.BATCH_SIZE = IMAGES_PER_GPU * GPU_COUNT``;
each replica gets IMAGES_PER_GPU images, which is what the graph's per-image loops
expect, so GPU_COUNT must equal the number of replicas.

Mixed precision (``config.MIXED_PRECISION = "mixed_float16"`` on GPUs, or
``"mixed_bfloat16"``) is applied the same way: the Keras graph is rebuilt under that dtype
policy. The box-math layers (anchors, proposals, ROI targets, detections) and the losses
are float32 layers, so only convolutions and dense layers run in half precision; Keras
wraps the optimizer in a loss-scale optimizer for float16.
"""
from __future__ import annotations

import contextlib
import logging
from typing import Optional

import keras
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


def rebuild_in_scope(model, strategy: Optional[tf.distribute.Strategy] = None,
                     policy: Optional[str] = None) -> None:
    """Rebuild ``model.keras_model`` under ``strategy.scope()`` and/or a dtype policy,
    keeping its current weights (Keras fixes both when layers are created)."""
    current_policy = model.keras_model.dtype_policy.name
    same_strategy = strategy is None or getattr(model, "_strategy", None) is strategy
    if same_strategy and (policy is None or policy == current_policy):
        return
    weights = model.keras_model.get_weights()
    scope = strategy.scope() if strategy is not None else contextlib.nullcontext()
    with scope, policy_scope(policy):
        model.keras_model = model.build(mode=model.mode, config=model.config)
        model.keras_model.set_weights(weights)
    if strategy is not None:
        model._strategy = strategy
        logger.info("Model rebuilt for %s with %d replicas", type(strategy).__name__,
                    strategy.num_replicas_in_sync)
    if policy is not None:
        logger.info("Model rebuilt with dtype policy %s", policy)


@contextlib.contextmanager
def policy_scope(policy: Optional[str]):
    """Temporarily set Keras' global dtype policy (None: leave it)."""
    if policy is None:
        yield
        return
    old = keras.mixed_precision.global_policy()
    keras.mixed_precision.set_global_policy(policy)
    try:
        yield
    finally:
        keras.mixed_precision.set_global_policy(old)
