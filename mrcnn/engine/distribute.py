"""tf.distribute for training: strategy choice and rebuilding the model in its scope.

Matterport's ``ParallelModel`` split batches by hand; here the standard strategies do
it: ``MirroredStrategy`` for several GPUs on one machine (chosen when GPU_COUNT > 1)
and ``MultiWorkerMirroredStrategy`` across machines (pass ``strategy=``; workers read
``TF_CONFIG``). The global batch is ``config.BATCH_SIZE = IMAGES_PER_GPU * GPU_COUNT``;
each replica gets IMAGES_PER_GPU images, which is what the graph's per-image loops
expect, so GPU_COUNT must equal the number of replicas. With several workers, each runs
the same seeded schedule and loads only its part of every global batch
(:func:`per_worker_datasets`); :func:`adapt_fit_to_strategy` gets Keras 3's ``fit`` through a
multi-worker run, and :func:`clip_summed_gradients` clips the gradient of the whole batch.

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


def per_worker_datasets(strategy: tf.distribute.Strategy, make_dataset):
    """A distributed dataset in which each worker loads only its part of each global batch.

    ``make_dataset(shard)`` builds a worker's pipeline for ``shard = (worker, workers)`` (see
    :meth:`mrcnn.data.pipeline.InputPipeline.dataset_fn`), batched per worker; it is split
    further between the worker's own replicas here.
    """
    def fn(context: tf.distribute.InputContext) -> tf.data.Dataset:
        ds = make_dataset((context.input_pipeline_id, context.num_input_pipelines))
        local = strategy.num_replicas_in_sync // context.num_input_pipelines
        if local > 1:
            per_replica = int(ds.element_spec[0][0].shape[0]) // local
            ds = ds.unbatch().batch(per_replica, drop_remainder=True)
        return ds

    return strategy.distribute_datasets_from_function(fn)


def adapt_fit_to_strategy(keras_model, strategy: tf.distribute.Strategy) -> None:
    """Work around two places where Keras 3's TF ``fit`` fails under a strategy.

    Both are per-instance hooks on ``keras_model`` (installing them again replaces them);
    each does what Keras meant to do, for any strategy.

    1. Before the first step Keras (``_maybe_symbolic_build``) averages the first
       distributed batch over the replicas with ``strategy.reduce("MEAN", batch)``, only to
       learn the input shapes and dtypes. ``MultiWorkerMirroredStrategy.reduce`` takes one
       value, not the nested tuple of inputs ("Attempt to convert a value (PerReplica...)"),
       and no strategy can average bool masks. One local replica's share of the batch has
       exactly the shapes and dtypes needed and costs no communication: it is passed on as
       ``data_batch`` instead.
    2. After each step Keras averages the replicas' metric results; across workers it
       calls ``strategy.reduce("MEAN", value, axis=0)``, which fails on the scalar results
       ("Invalid reduction dimension 0 for input with 0 dimensions", tensorflow#72388).
       In multi-worker runs each scalar result leaves the replica as a 1-element vector,
       which that reduce averages over all replicas back into a scalar.
    """
    build = getattr(type(keras_model), "_maybe_symbolic_build", None)
    if build is not None:
        def first_local(value):
            if isinstance(value, tf.distribute.DistributedValues):
                return strategy.experimental_local_results(value)[0]
            return value

        def maybe_symbolic_build(iterator=None, data_batch=None):
            if iterator is not None and data_batch is None:
                for _, _, batches in iterator:
                    data_batch = tf.nest.map_structure(first_local, next(batches))
                    break
            return build(keras_model, data_batch=data_batch)

        keras_model._maybe_symbolic_build = maybe_symbolic_build

    if is_multi_worker(strategy):
        compute_metrics = type(keras_model).compute_metrics

        def as_vector(value):
            if tf.is_tensor(value) and value.shape.rank == 0:
                return tf.reshape(value, [1])
            return value

        def compute_metrics_as_vectors(*args, **kwargs):
            return tf.nest.map_structure(as_vector, compute_metrics(keras_model, *args, **kwargs))

        keras_model.compute_metrics = compute_metrics_as_vectors


def clip_summed_gradients(optimizer, replicas: int) -> None:
    """Make ``optimizer``'s ``global_clipnorm`` clip the gradient summed over replicas.

    Keras 3 clips in each replica, before the cross-replica sum, so n replicas could step
    n times further than one, and clipping at c/n instead only matches Matterport (which
    clipped the gradient of the whole batch) when the replicas' gradients are aligned. Here
    the per-replica clip is switched off and the clip is applied right after the all-reduce
    that sums the gradients (the same values on every replica, so they stay in sync); no
    extra communication. This hooks a private method of Keras' TensorFlow optimizer; when a
    Keras version lacks it, the fallback clips each replica's share at ``c / replicas``.
    """
    inner = getattr(optimizer, "inner_optimizer", optimizer)  # LossScaleOptimizer wraps one
    clipnorm = getattr(inner, "global_clipnorm", None)
    if not clipnorm or replicas <= 1:
        return
    reduce_sum = getattr(inner, "_all_reduce_sum_gradients", None)
    if reduce_sum is None or getattr(reduce_sum, "_mrcnn_clips", False):
        if reduce_sum is None:
            logger.warning("This Keras has no hook for clipping summed gradients: each replica's "
                           "gradient is clipped at GRADIENT_CLIP_NORM / %d instead", replicas)
            inner.global_clipnorm = clipnorm / replicas
        return

    def sum_then_clip(grads_and_vars):
        summed = reduce_sum(grads_and_vars)
        present = [i for i, (g, _) in enumerate(summed) if g is not None]
        clipped, _ = tf.clip_by_global_norm([summed[i][0] for i in present], clipnorm)
        out = list(summed)
        for i, g in zip(present, clipped):
            out[i] = (g, summed[i][1])
        return out

    sum_then_clip._mrcnn_clips = True
    inner.global_clipnorm = None  # no clip inside each replica
    inner._all_reduce_sum_gradients = sum_then_clip


def is_multi_worker(strategy: Optional[tf.distribute.Strategy]) -> bool:
    """True when ``strategy`` has replicas in other processes (more replicas than local devices)."""
    if strategy is None:
        return False
    local = getattr(strategy.extended, "worker_devices", None)
    return local is not None and strategy.num_replicas_in_sync > len(local)


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
