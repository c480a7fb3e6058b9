"""``MaskRCNN.train``: Matterport's training semantics on Keras 3 ``fit`` and tf.data.

Matterport behaviour kept: ``layers`` is a regex or a preset (``heads``, ``3+``, ``4+``,
``5+``, ``all``); ``epochs`` is cumulative (training runs from ``model.epoch`` up to
``epochs``, so ``train(..., epochs=40, layers="heads")`` then ``train(..., epochs=120,
layers="all")`` continues); SGD with LEARNING_MOMENTUM and global-norm clipping at
GRADIENT_CLIP_NORM; LOSS_WEIGHTS; TensorBoard logs and one checkpoint per epoch named
``mask_rcnn_<name>_<epoch:04d>.h5`` in ``model.log_dir``.

Added: ``resume=True`` continues the newest run of this config (``find_last``) with its
epoch counter; checkpoints are written atomically; a NaN/inf loss stops the run with
:class:`NaNLossError` naming the epoch, step and last good checkpoint; samples skipped by
the pipeline are counted and reported; ``strategy=`` (or GPU_COUNT > 1) trains through
``tf.distribute``.

Backends: on TensorFlow the input is the ``tf.data`` pipeline. On other Keras backends
(JAX) ``fit`` reads the same batch stream from :class:`mrcnn.data.pydataset.TrainingStream`
(no TensorFlow op at run time; same batches with the same seed); training runs on one
device there (``strategy=`` and GPU_COUNT > 1 raise), and ``xla=`` is ignored: JAX always
compiles the whole step with XLA (``jax.jit``).
"""
from __future__ import annotations

import contextlib
import logging
import os
from typing import Optional, Sequence

import keras
import tensorflow as tf

from mrcnn.data.pipeline import InputPipeline
from mrcnn.data.validate import check_dataset
from mrcnn.engine.callbacks import MatterportCheckpoint, NaNLossError, SkipReport, StopOnNaN
from mrcnn.engine.distribute import (adapt_fit_to_strategy, clip_summed_gradients, is_multi_worker,
                                      per_worker_datasets, rebuild_in_scope, resolve_strategy)

logger = logging.getLogger("mrcnn.train")


def train(model, train_dataset, val_dataset, learning_rate: float, epochs: int, layers: str,
          augmentation=None, custom_callbacks: Optional[Sequence[keras.callbacks.Callback]] = None,
          no_augmentation_sources: Optional[Sequence[str]] = None, *, resume: bool = False,
          seed: Optional[int] = None, strategy: Optional[tf.distribute.Strategy] = None,
          steps_per_epoch: Optional[int] = None, validation_steps: Optional[int] = None,
          verbose: int = 1, tensorboard: Optional[bool] = None,
          optimizer: Optional[keras.optimizers.Optimizer] = None,
          xla=False, keep: Optional[int] = None) -> keras.callbacks.History:
    """Train ``model`` (a training-mode :class:`mrcnn.model.MaskRCNN`).

    Args:
        train_dataset, val_dataset: prepared ``mrcnn.utils.Dataset`` objects (val may be None).
        learning_rate: SGD learning rate. epochs: train until this epoch (cumulative).
        layers: regex or preset naming the layers to train; the rest are frozen.
        augmentation: imgaug augmenter, albumentations pipeline or callable.
        custom_callbacks: extra Keras callbacks.
        no_augmentation_sources: dataset sources that are never augmented.
        resume: first load the newest checkpoint of this config under ``model_dir``.
        seed: makes the input stream deterministic.
        strategy: a ``tf.distribute.Strategy``; default from ``config.GPU_COUNT``
            (TensorFlow backend only).
        steps_per_epoch, validation_steps: default STEPS_PER_EPOCH / VALIDATION_STEPS.
        tensorboard: write TensorBoard logs to ``model.log_dir`` (default: when the
            ``tensorboard`` package is installed, which requirements.txt does).
        optimizer: a Keras optimizer to use instead of Matterport's SGD (e.g. Adam when
            training from scratch); ``learning_rate`` is then ignored.
        xla: ``True`` compiles the whole training step (forward pass, losses, gradients
            and the SGD update) with XLA (Keras ``jit_compile=True``): every layer of the
            training graph has static shapes. ``"autoclustering"`` instead lets
            TensorFlow's auto-clustering compile the parts it picks. Off by default: on
            this 2-core CPU the compiled step was slower than the oneDNN one (1.1-2.4x
            the time for R50 at 128 px and R101 at 512 px, 3.6x for the compact demo
            model, ``benchmarks/train.py``) and takes 1-4 minutes to compile; measure it on
            your GPU before turning it on. Losses match the uncompiled step to float32
            noise (same ROI draws with a seed). TensorFlow only: on JAX the step is always
            compiled (the value is checked, then ignored).
        keep: checkpoints to keep: the ``keep`` newest plus the one with the lowest
            validation loss (train loss without validation); older ones are deleted.
            Default ``config.CHECKPOINTS_KEEP``, whose default None keeps all (Matterport).
    Returns:
        The Keras ``History``.
    Raises:
        NaNLossError: the loss became NaN or infinite.
        SampleError: a bad sample, when ``config.STRICT_DATA_CHECKS`` is True (otherwise
            bad samples are skipped, logged and counted).
    """
    if model.mode != "training":
        raise ValueError("Create the model in training mode: MaskRCNN(mode='training', ...)")
    config = model.config
    if resume:
        _resume(model)
    if epochs <= model.epoch:
        logger.warning("Nothing to train: the model is at epoch %d and epochs=%d (epochs are cumulative)",
                       model.epoch, epochs)

    on_tf = keras.backend.backend() == "tensorflow"
    if on_tf:
        strategy = resolve_strategy(config, strategy)
    else:
        _check_single_device(config, strategy)
    policy = getattr(config, "MIXED_PRECISION", None)
    if strategy is not None or policy is not None:
        rebuild_in_scope(model, strategy, policy)

    check_dataset(train_dataset, config, "train")
    if val_dataset is not None:
        check_dataset(val_dataset, config, "validation")
    train_pipe = InputPipeline(train_dataset, config, shuffle=True, augmentation=augmentation,
                               no_augmentation_sources=no_augmentation_sources, seed=seed, name="train")
    val_pipe = (InputPipeline(val_dataset, config, shuffle=True, seed=None if seed is None else seed + 1,
                              name="validation") if val_dataset is not None else None)
    streams = []
    multi_worker = is_multi_worker(strategy)
    if not on_tf:
        # No tf.data: the same batch stream from a PyDataset (no TensorFlow op at run time).
        from mrcnn.data.pydataset import TrainingStream
        train_ds = TrainingStream(train_pipe, first_epoch=model.epoch)
        val_ds = TrainingStream(val_pipe) if val_pipe is not None else None
        streams = [s for s in (train_ds, val_ds) if s is not None]
    elif multi_worker:
        # Each worker loads only its part of every global batch.
        train_ds = per_worker_datasets(strategy, lambda shard: train_pipe.dataset_fn(
            first_epoch=model.epoch, shard=shard))
        val_ds = (per_worker_datasets(strategy, lambda shard: val_pipe.dataset_fn(shard=shard))
                  if val_pipe is not None else None)
        if seed is None:
            logger.warning("Multi-worker training without seed=: each worker shuffles its own image order")
    else:
        train_ds = train_pipe.dataset_fn(first_epoch=model.epoch)
        val_ds = val_pipe.dataset_fn() if val_pipe is not None else None
    if strategy is not None:
        adapt_fit_to_strategy(model.keras_model, strategy)

    os.makedirs(model.log_dir, exist_ok=True)
    steps = steps_per_epoch or config.STEPS_PER_EPOCH
    guard = StopOnNaN(steps)
    checkpoint = MatterportCheckpoint(model, model.checkpoint_path, guard=guard,
                                      keep=keep if keep is not None else config.CHECKPOINTS_KEEP)
    callbacks = [guard, checkpoint, SkipReport(train_pipe, val_pipe)]
    if tensorboard is None:
        tensorboard = _tensorboard_available()
    if tensorboard:
        callbacks.append(keras.callbacks.TensorBoard(log_dir=model.log_dir, histogram_freq=0,
                                                     write_graph=False, write_images=False))
    callbacks += list(custom_callbacks or [])

    if verbose:
        print(f"\nStarting at epoch {model.epoch}. LR={learning_rate}\n")
        print(f"Checkpoint Path: {model.checkpoint_path}")
    scope = strategy.scope() if strategy is not None else _null_scope()
    with scope:
        model.set_trainable(layers, verbose=1 if verbose > 1 else 0)
        replicas = strategy.num_replicas_in_sync if strategy is not None else 1
        if optimizer is None and replicas > 1:
            optimizer = keras.optimizers.SGD(learning_rate=learning_rate, momentum=config.LEARNING_MOMENTUM,
                                             global_clipnorm=config.GRADIENT_CLIP_NORM)
        if optimizer is not None and replicas > 1:
            clip_summed_gradients(optimizer, replicas)
        jit_compile, autocluster = _xla_mode(xla)
        if not on_tf:
            # xla= is TensorFlow's switch: JAX compiles the whole step with XLA (jax.jit)
            # whatever it says (other backends: Keras' default for them).
            jit_compile, autocluster = "auto", False
        if optimizer is None:
            model.compile(learning_rate, config.LEARNING_MOMENTUM, jit_compile=jit_compile)
        else:
            model.keras_model.compile(optimizer=optimizer, jit_compile=jit_compile)

    try:
        with xla_autoclustering(autocluster), _strict_errors_unwrapped(train_pipe, val_pipe):
            history = model.keras_model.fit(
                train_ds, initial_epoch=model.epoch, epochs=epochs, steps_per_epoch=steps,
                callbacks=callbacks, validation_data=val_ds,
                validation_steps=(validation_steps or config.VALIDATION_STEPS) if val_ds is not None else None,
                verbose=verbose, shuffle=False)
    finally:
        for stream in streams:
            stream.close()
    if guard.bad_step is not None:
        last = checkpoint.last_saved or _last_checkpoint(model)
        raise NaNLossError(
            f"Training stopped: the loss became {guard.bad_logs.get('loss')} at epoch {guard.bad_epoch}, "
            f"step {guard.bad_step} (losses: {guard.bad_logs}). Last good checkpoint: "
            f"{last or 'none written yet'}. Lower the learning rate or check the data, then resume from it.")
    model.epoch = max(model.epoch, epochs)
    return history


def _check_single_device(config, strategy) -> None:
    """Off TensorFlow training runs on one device: refuse what asks for more."""
    backend = keras.backend.backend()
    if strategy is not None:
        raise ValueError(f"strategy= is a tf.distribute strategy: it needs the TensorFlow backend "
                         f"(Keras runs on {backend!r}). Train on one device, or set KERAS_BACKEND=tensorflow.")
    if int(getattr(config, "GPU_COUNT", 1)) > 1:
        raise ValueError(f"GPU_COUNT={config.GPU_COUNT}: multi-device training goes through tf.distribute, "
                         f"which needs the TensorFlow backend (Keras runs on {backend!r}). Set GPU_COUNT = 1 "
                         f"(and IMAGES_PER_GPU to the batch), or set KERAS_BACKEND=tensorflow.")


def _xla_mode(xla) -> tuple:
    """``train(xla=...)`` as ``(jit_compile, autoclustering)``."""
    if xla is None or xla is False:
        return False, False
    if xla is True:
        return True, False
    if isinstance(xla, str) and xla.lower() in ("autoclustering", "autocluster", "auto"):
        return False, True
    raise ValueError(f"xla must be False, True or 'autoclustering', got {xla!r}")


def _tensorboard_available() -> bool:
    try:
        import tensorboard  # noqa: F401
        return True
    except ImportError:
        logger.warning("tensorboard is not installed: no TensorBoard logs (pip install tensorboard)")
        return False


@contextlib.contextmanager
def xla_autoclustering(enabled: bool = True):
    """TensorFlow's XLA auto-clustering for the functions traced inside (restored after).

    On a CPU, TF only auto-clusters with ``--tf_xla_cpu_global_jit`` in ``TF_XLA_FLAGS``;
    that flag is added (TF reads it when it first builds a cluster).
    """
    if not enabled:
        yield
        return
    flags = os.environ.get("TF_XLA_FLAGS", "")
    if "--tf_xla_cpu_global_jit" not in flags:
        os.environ["TF_XLA_FLAGS"] = (flags + " --tf_xla_cpu_global_jit").strip()
    previous = tf.config.optimizer.get_jit()
    tf.config.optimizer.set_jit("autoclustering")
    try:
        yield
    finally:
        tf.config.optimizer.set_jit(previous or False)


@contextlib.contextmanager
def _strict_errors_unwrapped(*pipelines):
    """Re-raise a pipeline's strict-mode :class:`SampleError` as itself.

    Raised inside ``tf.numpy_function`` it reaches ``fit`` wrapped in a TensorFlow
    error with a long traceback; the pipeline keeps the original for this.
    """
    try:
        yield
    except Exception:
        for p in pipelines:
            error = getattr(p, "strict_error", None)
            if error is not None:
                raise error from None
        raise


class _null_scope:
    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False


def _last_checkpoint(model) -> Optional[str]:
    try:
        return model.find_last()
    except FileNotFoundError:
        return None


def _resume(model) -> None:
    """Load the newest checkpoint of this config and restore its log dir and epoch."""
    try:
        path = model.find_last()
    except FileNotFoundError:
        logger.info("resume=True but no checkpoint under %s yet: starting fresh", model.model_dir)
        return
    model.load_weights(path, by_name=True)
    logger.info("Resumed from %s at epoch %d", path, model.epoch)
