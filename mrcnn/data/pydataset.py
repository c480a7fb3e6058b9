"""Training batches as ``keras.utils.PyDataset`` s: the input path for non-TF backends.

Two forms: :class:`TrainingStream`, the ``tf.data`` pipeline's endless stream (what
``MaskRCNN.train`` feeds ``fit`` off TensorFlow), and :class:`TrainingPyDataset`, finite
epochs with random access for a ``fit`` of your own (described below).

The samples are :meth:`mrcnn.data.pipeline.InputPipeline.sample`'s, the same
per-image numpy code the ``tf.data`` pipeline runs inside ``tf.numpy_function``:
no TensorFlow op runs to load, augment or batch (``mrcnn.data.pipeline`` still
imports TensorFlow at the top, so TensorFlow must be installed). Keras runs
``__getitem__`` on ``workers`` threads (or processes with
``use_multiprocessing``).

Order and seeds follow the ``tf.data`` pipeline: epoch ``e`` visits
``InputPipeline.order(e)`` and the image at position ``p`` gets the sample seed
``(seed * 7919 + e * 1000003 + p) % 2**31``, so with a seed each image is
augmented and subsampled as in the ``tf.data`` stream. Batches have a fixed
size: an image that is skipped (no instances) or fails to load is replaced by
the next images of the epoch's order (wrapping around); more than
``max_errors`` failed loads in a row raise.
"""
from __future__ import annotations

import collections
import concurrent.futures
import threading
from typing import Optional, Sequence, Tuple

import keras
import numpy as np

from mrcnn.data.fast import mold_image_fast
from mrcnn.data.pipeline import STATUS_CLOSED, STATUS_ERROR, STATUS_OK, InputPipeline
from mrcnn.data.workers import host_cores

__all__ = ["TrainingPyDataset", "TrainingStream"]


class TrainingPyDataset(keras.utils.PyDataset):
    """Batches of the 7 training inputs for ``keras_model.fit``.

    Args:
        dataset: prepared ``mrcnn.utils.Dataset``.
        config: the model's Config.
        batch_size: images per batch, default ``config.BATCH_SIZE``.
        shuffle, augmentation, no_augmentation_sources, seed, max_errors: as
            :class:`~mrcnn.data.pipeline.InputPipeline`.
        first_epoch: epoch number of the first image order (to resume).
        workers, use_multiprocessing, max_queue_size: ``keras.utils.PyDataset``'s.

    Each item is ``(inputs,)`` with ``inputs`` the tuple ``(images [B, H, W, C] float32,
    image_meta [B, META] float32, rpn_match [B, A, 1] int32, rpn_bbox [B, R, 4] float32,
    gt_class_ids [B, G] int32, gt_boxes [B, G, 4] int32 pixels (y1, x1, y2, x2),
    gt_masks [B, h, w, G] bool)``, as the ``tf.data`` pipeline yields.
    """

    def __init__(self, dataset, config, batch_size: Optional[int] = None, shuffle: bool = True,
                 augmentation=None, no_augmentation_sources: Optional[Sequence[str]] = None,
                 seed: Optional[int] = None, max_errors: int = 5, first_epoch: int = 0,
                 workers: int = 1, use_multiprocessing: bool = False, max_queue_size: int = 10):
        super().__init__(workers=workers, use_multiprocessing=use_multiprocessing,
                         max_queue_size=max_queue_size)
        self.pipeline = InputPipeline(dataset, config, shuffle=shuffle, augmentation=augmentation,
                                      no_augmentation_sources=no_augmentation_sources, seed=seed,
                                      max_errors=max_errors, name="train")
        self.batch_size = int(batch_size or config.BATCH_SIZE)
        if self.batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size!r}")
        self.epoch = int(first_epoch)
        self.max_errors = int(max_errors)
        self._order = self.pipeline.order(self.epoch)

    @property
    def skips(self):
        """Counts of skipped images by reason (the pipeline's ``SkipCounter``)."""
        return self.pipeline.skips

    def __len__(self) -> int:
        return max(1, len(self._order) // self.batch_size)

    def _seed(self, position: int) -> int:
        seed = self.pipeline.seed
        if seed is None:
            return -1
        return (seed * 7_919 + self.epoch * 1_000_003 + position) % (2 ** 31)

    def _one(self, position: int) -> Tuple[np.ndarray, ...]:
        """The sample at ``position`` of the epoch, or the next good one after it."""
        order = self._order
        errors = 0
        for step in range(len(order)):
            p = (position + step) % len(order)
            image, meta, rpn_match, *rest = self.pipeline.sample(int(order[p]), self._seed(p))
            status = rest[4]
            if status == STATUS_OK:
                # As the tf.data stream does: molded by a table, anchor labels widened.
                return (mold_image_fast(image, self.pipeline.config), meta,
                        rpn_match.astype(np.int32)[:, None]) + tuple(rest[:4])
            if status == STATUS_ERROR:
                errors += 1
                if errors > self.max_errors:
                    raise RuntimeError(f"{errors} images in a row failed to load; last was image id "
                                       f"{int(order[p])} (see the log for the error)")
        raise RuntimeError("no image of the dataset gives a training sample "
                           f"(skipped: {dict(self.pipeline.skips.counts)})")

    def __getitem__(self, index: int):
        if not 0 <= index < len(self):
            raise IndexError(f"batch {index} of {len(self)}")
        start = index * self.batch_size
        samples = [self._one(start + i) for i in range(self.batch_size)]
        inputs = tuple(np.stack(column) for column in zip(*samples))
        return (inputs,)

    def on_epoch_end(self) -> None:
        self.epoch += 1
        self._order = self.pipeline.order(self.epoch)


class TrainingStream(keras.utils.PyDataset):
    """``InputPipeline.dataset_fn``'s endless batch stream as a ``keras.utils.PyDataset``.

    What ``MaskRCNN.train`` feeds ``fit`` on backends other than TensorFlow. The
    batches are the ``tf.data`` stream's, bit for bit and in the same order: stream
    position ``s`` is image ``s % n`` of epoch ``first_epoch + s // n`` with the same
    sample seed; skipped images are dropped and the next ones fill the batch; more
    than ``max_errors`` failed loads in a row raise. Keras epochs (``steps_per_epoch``)
    only cut the stream, as they cut the repeated ``tf.data`` dataset.

    The samples are made ``parallel`` at a time, in the pipeline's worker processes
    when it has them (as the ``tf.data`` map does), else in threads; Keras itself
    reads the stream from one thread (``workers=1``), so the order is fixed.

    Args:
        pipeline: the :class:`~mrcnn.data.pipeline.InputPipeline` (its skip counts
            and strict-mode error are the stream's).
        batch_size: default ``config.BATCH_SIZE``.
        first_epoch: epoch number of the first image order (to resume).
        parallel: samples in flight; default the host's cores.

    Each item is ``(inputs,)`` as :class:`TrainingPyDataset` gives. ``__getitem__``
    returns the next batch of the stream whatever its ``index`` (a stream has no
    random access; Keras asks for 0, 1, 2, ... in order).
    """

    def __init__(self, pipeline: InputPipeline, batch_size: Optional[int] = None, first_epoch: int = 0,
                 parallel: Optional[int] = None):
        super().__init__(workers=1, use_multiprocessing=False)
        self.pipeline = pipeline
        self.batch_size = int(batch_size or pipeline.config.BATCH_SIZE)
        if self.batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size!r}")
        calls, pool = pipeline.workers_for(parallel)
        if calls is None or int(calls) < 1:  # thread mode answers AUTOTUNE (-1): all cores
            calls = host_cores()
        self.parallel = int(calls)
        self._fetch = pipeline._fetcher(int(first_epoch), pool)
        self._executor = concurrent.futures.ThreadPoolExecutor(self.parallel,
                                                               thread_name_prefix="mrcnn-stream")
        self._pending: collections.deque = collections.deque()
        self._position = 0
        self._failed_in_a_row = 0
        self._lock = threading.Lock()
        self._closed = False
        # Enough in flight to keep every worker busy while a batch is assembled.
        self._depth = max(2 * self.parallel, self.batch_size + self.parallel)

    @property
    def skips(self):
        return self.pipeline.skips

    @property
    def num_batches(self):
        return None  # endless, like the repeated tf.data dataset

    def _next_sample(self):
        while len(self._pending) < self._depth:
            self._pending.append(self._executor.submit(self._fetch, self._position))
            self._position += 1
        return self._pending.popleft().result()

    def __getitem__(self, index: int):
        with self._lock:  # one batch at a time, in stream order
            if self._closed:
                raise RuntimeError("the training stream was closed")
            samples = []
            while len(samples) < self.batch_size:
                out = self._next_sample()
                status = int(out[7])
                if status == STATUS_CLOSED:
                    raise RuntimeError(f"the {self.pipeline.name} pipeline was closed")
                if status == STATUS_ERROR:
                    self._failed_in_a_row += 1
                    if self._failed_in_a_row > self.pipeline.max_errors:
                        raise RuntimeError(f"{self._failed_in_a_row} images in a row failed to load; "
                                           f"last was {out[9].decode('utf-8', 'replace')}")
                elif status == STATUS_OK:
                    self._failed_in_a_row = 0
                    # uint8 image, int8 labels [A, 1], as in the tf.data stream (the model molds
                    # them); with worker processes they are views of shared-memory slots, which
                    # np.stack copies once (the slots are reused when these views are gone).
                    samples.append(out[:7])
            return (tuple(np.stack(column) for column in zip(*samples)),)

    def on_epoch_end(self) -> None:
        pass  # Keras epochs cut the stream; the pipeline's own epochs run on

    def close(self) -> None:
        """Stops loading ahead: pending samples are cancelled, running ones finish. Idempotent."""
        with self._lock:
            self._closed = True
            pending, self._pending = self._pending, collections.deque()
        for future in pending:
            future.cancel()
        self._executor.shutdown(wait=True, cancel_futures=True)
