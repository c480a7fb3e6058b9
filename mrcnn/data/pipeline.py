"""tf.data input pipeline for training.

Each sample is made by :class:`mrcnn.data.workers.SampleMaker` (the fast numpy path of
:func:`mrcnn.data.fast.load_image_gt_fast`, same results as Matterport's
:func:`mrcnn.data.loader.load_image_gt`, + :func:`mrcnn.data.targets.build_rpn_targets`
with an anchor index). Where it runs (``worker_mode``):

* ``"process"``: in a pool of spawned worker processes, one per worker; the ``tf.data``
  thread that asked for the sample only waits for it without holding the GIL, so the rate
  grows with the cores. Needs a picklable ``Dataset`` (and config, augmentation).
* ``"thread"``: inside ``tf.numpy_function`` on ``num_parallel_calls`` threads (the GIL
  limits the gain from a second core to ~1.4x).
* ``"auto"`` (default): processes if the dataset pickles, else threads with a warning
  saying why.

The stream carries the resized image as uint8 and the anchor labels as int8: the training
model molds them on the device (``image - MEAN_PIXEL`` in float64 then float32, as Matterport's
``mold_image``, by an exact 256-entry table per channel, and int8 -> int32:
:func:`mrcnn.modeling.maskrcnn.mold_raw_inputs`), so the host copies and the accelerator
receives 4x fewer bytes per image (3.4 MB instead of 13.6 at 1024 px). ``dataset_fn(molded=True)``
molds in the pipeline instead, for a consumer other than this package's training model. A worker
process writes both arrays into a shared-memory slot (:class:`mrcnn.data.workers.SlotRing`)
that the fetch hands to ``tf.numpy_function`` without a copy; the ``batch`` op copies it once
and the slot is reused only after that. Everything after the fetch is TensorFlow ops: failure counting (``scan``),
filtering, batching and prefetching.

Determinism: with a ``seed`` the image order of every epoch and every random choice
inside a sample (RPN subsampling, crop, imgaug/albumentations) are derived from
``(seed, epoch, position)``, so the stream is the same whatever the number of workers
and the worker mode. Without a seed the order is shuffled freshly.

Bad samples: an image without instances (or whose instances all vanish under
augmentation) is skipped and counted; an image that fails to load is logged with its id
and path, counted and skipped. :attr:`InputPipeline.skips` holds the counts; more than
``max_errors`` consecutive failures stop training with an error naming the last image.

Teardown: the only Python work inside the ``tf.data`` graph is the sample fetch. Dropping
an iterator waits for fetches in flight with the GIL released (TF 2.21's tensor dealloc
releases it), so they finish. At interpreter exit Python threads can no longer take the
GIL, so an iterator destroyed then must have no fetch in flight: an ``atexit`` hook closes
every pipeline first (waiting fetches return at once, later ones return "closed", which
ends the stream with ``take_while``) and waits until none is in flight. Closing a pipeline
(explicitly or at exit) unlinks its shared-memory segments; if the process is killed,
``multiprocessing``'s resource tracker unlinks them, and the workers exit when they see their
owner gone.
"""
from __future__ import annotations

import atexit
import logging
import threading
import time
import weakref
from concurrent.futures.process import BrokenProcessPool
from typing import Optional, Sequence, Tuple

import numpy as np
import tensorflow as tf

from mrcnn.core.anchors import get_pixel_anchors
from mrcnn.core.image import mold_table
from mrcnn.data.loader import SkipCounter
from mrcnn.data.workers import (STATUS_CLOSED, STATUS_ERROR, STATUS_OK, STATUS_SKIP, PoolShutDown,
                                PoolUnavailable, SampleMaker, SlotRing, close_rings, host_cores, make_pool,
                                request, shutdown_pools)

logger = logging.getLogger("mrcnn.data")

INPUT_NAMES = ("input_image", "input_image_meta", "input_rpn_match", "input_rpn_bbox",
               "input_gt_class_ids", "input_gt_boxes", "input_gt_masks")

WORKER_MODES = ("auto", "process", "thread")

_LIVE: "weakref.WeakSet[InputPipeline]" = weakref.WeakSet()


class InputPipeline:
    """Builds ``tf.data.Dataset`` s of training batches from a prepared :class:`Dataset`.

    Args:
        dataset: prepared ``mrcnn.utils.Dataset``.
        config: the model's Config (image size, anchors, MAX_GT_INSTANCES, mini masks).
        shuffle: shuffle the image order each epoch.
        augmentation: imgaug / albumentations / callable (see :mod:`mrcnn.data.augment`).
        no_augmentation_sources: dataset sources never augmented.
        seed: makes the stream deterministic (see module doc).
        max_errors: consecutive load failures tolerated before raising.
        worker_mode: ``"auto"``, ``"process"`` or ``"thread"`` (see module doc).
    """

    def __init__(self, dataset, config, shuffle: bool = True, augmentation=None,
                 no_augmentation_sources: Optional[Sequence[str]] = None, seed: Optional[int] = None,
                 max_errors: int = 5, name: str = "train", worker_mode: str = "auto"):
        if not len(dataset.image_ids):
            raise ValueError(f"{name} dataset has no images (did you call prepare()?)")
        if worker_mode not in WORKER_MODES:
            raise ValueError(f"worker_mode must be one of {WORKER_MODES}, got {worker_mode!r}")
        self.dataset = dataset
        self.config = config
        self.shuffle = shuffle
        self.augmentation = augmentation
        self.no_aug = set(no_augmentation_sources or [])
        self.seed = seed
        self.max_errors = max_errors
        self.name = name
        self.worker_mode = worker_mode
        self.skips = SkipCounter(f"{name} pipeline")
        self.strict_error = None
        self.maker = SampleMaker(dataset, config, augmentation, self.no_aug)
        self.anchors = get_pixel_anchors(config, config.IMAGE_SHAPE)
        self._lock = threading.Lock()
        self._pools: dict = {}  # processes -> workers.WorkerPool (shared, see workers.make_pool)
        self._pool_refused: Optional[str] = None
        self._closed = False
        self._in_flight = 0
        self._zeros = None  # sample()'s arrays of a dropped sample
        self._fetch_zeros = None  # the fetch's
        # Shared-memory slots the workers write images into (see workers.SlotRing). At most
        # what TensorFlow can hold at once: map calls in flight and buffered, the batch being
        # filled, TrainingStream's look-ahead; beyond that samples travel through the pipe.
        self._slots = SlotRing(config.IMAGE_SHAPE, self.anchors.shape[0], max_slots=8 + 4 * host_cores())
        _LIVE.add(self)

    # ----------------------------------------------------------------------------------------
    def sample(self, image_id: int, sample_seed: int):
        """One training sample, logged and counted here.

        Made in this thread (a stream's fetch has its samples made by the worker processes).

        Returns ``(image uint8 [H, W, 3] (not molded), image_meta float32, rpn_match int8 [A],
        rpn_bbox float32, gt_class_ids int32, gt_boxes int32, gt_masks bool, status int32,
        image_id int64, message bytes)``; zeros for a skipped sample (``STATUS_SKIP`` /
        ``STATUS_ERROR``) or a closed pipeline (``STATUS_CLOSED``).
        """
        image_id, sample_seed = int(image_id), int(sample_seed)
        return self._accept(image_id, self.maker(image_id, sample_seed))

    def _make(self, image_id: int, sample_seed: int, pool, slot=None):
        """The maker's result, made in a worker of ``pool`` (writing the image and the
        anchor labels into shared-memory ``slot`` when given: they come back as None) or here;
        None if the pipeline was closed while waiting.

        A slot is released by the caller; here it is discarded when a worker may still write
        into it (closed while the request runs, pool broken)."""
        if pool is None or self._pool_refused is not None:
            return self.maker(image_id, sample_seed)
        name = slot[1] if slot is not None else None
        try:
            result = pool.run(request(image_id, sample_seed, name), lambda: self._closed)
            if result is None and slot is not None:  # closed while waiting: the worker may still write
                self._slots.discard(slot[0])
            return result
        except BrokenProcessPool as exc:
            # A worker could not start (e.g. a script without an ``if __name__ == "__main__":``
            # guard, whose code a spawned child runs again) or died: make the sample here.
            if slot is not None:
                self._slots.discard(slot[0])
            self._fall_back(f"worker processes failed ({exc}). If the Dataset is defined in a script, "
                            f"guard the script's code with if __name__ == '__main__': (spawned workers "
                            f"import it)")
            return self.maker(image_id, sample_seed)
        except RuntimeError as exc:  # shut down (close(), exit, evicted) or an unexpected worker error
            if slot is not None:
                self._slots.discard(slot[0])
            if self._closed:
                return None
            if not isinstance(exc, PoolShutDown):
                logger.warning("%s pipeline: %s; making image id %s here", self.name, exc, image_id)
            return self.maker(image_id, sample_seed)

    def _fall_back(self, why: str) -> None:
        with self._lock:
            first = self._pool_refused is None
            self._pool_refused = why
        if first:
            logger.warning("%s pipeline: loading in threads from now on: %s", self.name, why)

    def _accept(self, image_id: int, result):
        """Logs/counts a maker result (in the owner process) and returns the fetch outputs."""
        arrays, status, message, strict_error = result
        if status == STATUS_ERROR:
            if strict_error is not None:
                self.strict_error = strict_error  # train() re-raises it as itself, not wrapped by TF
                raise strict_error
            logger.error("Skipping %s", message)
            self.skips.add("error", image_id, message)
        elif status == STATUS_SKIP:
            self.skips.add(message or "no instances", image_id)
        if arrays is None:
            arrays = self._empty()
        return tuple(arrays) + (np.int32(status), np.int64(image_id), message.encode("utf-8", "replace"))

    def _empty(self):
        """Zeros for the arrays of a dropped sample (made once: read-only, shared by all)."""
        if self._zeros is None:
            zeros = tuple(np.zeros(s, d.as_numpy_dtype) for s, d in zip(self._shapes(), self._dtypes()))
            for z in zeros:
                z.flags.writeable = False
            self._zeros = zeros
        return self._zeros

    def close(self) -> None:
        """Ends every stream of this pipeline (fetches waiting for a worker return at once,
        iterators then end). Idempotent. Worker processes are shared between pipelines of the
        same dataset: :func:`mrcnn.data.workers.shutdown_pools` stops them (done at exit).
        Unlinks the pipeline's shared-memory segments.
        """
        self._closed = True
        deadline = time.monotonic() + 10.0
        while time.monotonic() < deadline:
            with self._lock:
                if self._in_flight == 0:
                    break
            time.sleep(0.01)
        self._pools.clear()
        self._slots.close()

    def _pool(self, workers: int):
        """The process pool for ``workers`` processes, or None to run in threads."""
        if self.worker_mode == "thread" or self._pool_refused is not None:
            return None
        try:
            pool = make_pool(self.maker, workers)  # shared with pipelines of the same maker
        except PoolUnavailable as exc:
            if self.worker_mode == "process":
                raise
            self._pool_refused = str(exc)
            logger.warning("%s pipeline: %s", self.name, exc)
            return None
        self._pools[workers] = pool
        return pool

    def _shapes(self):
        """Shapes of the sample arrays (image and anchor labels as made, before molding)."""
        cfg = self.config
        mask_hw = tuple(cfg.MINI_MASK_SHAPE) if cfg.USE_MINI_MASK else tuple(cfg.IMAGE_SHAPE[:2])
        return (tuple(cfg.IMAGE_SHAPE), (cfg.IMAGE_META_SIZE,), (self.anchors.shape[0],),
                (cfg.RPN_TRAIN_ANCHORS_PER_IMAGE, 4), (cfg.MAX_GT_INSTANCES,), (cfg.MAX_GT_INSTANCES, 4),
                mask_hw + (cfg.MAX_GT_INSTANCES,))

    @staticmethod
    def _dtypes():
        return (tf.uint8, tf.float32, tf.int8, tf.float32, tf.int32, tf.int32, tf.bool)

    # ----------------------------------------------------------------------------------------
    def order(self, epoch: int) -> np.ndarray:
        """Image ids in the order of ``epoch`` (0-based)."""
        ids = np.array(self.dataset.image_ids)
        if not self.shuffle:
            return ids
        if self.seed is None:
            return np.random.permutation(ids)
        return np.random.RandomState((self.seed * 1_000_003 + epoch) % (2 ** 32)).permutation(ids)

    def _fetcher(self, first_epoch: int, pool):
        """The function ``tf.numpy_function`` calls with a stream position (int64).

        Position ``s`` is image ``s % n`` of epoch ``first_epoch + s // n`` in that epoch's
        order; its seed is ``(seed * 7919 + epoch * 1000003 + position) mod 2**31``.
        """
        n = len(self.dataset.image_ids)
        orders: dict = {}
        orders_lock = threading.Lock()

        def fetch(s):
            s = int(s)
            epoch, pos = first_epoch + s // n, s % n
            with orders_lock:  # one order per epoch of this stream, also when unseeded
                order = orders.get(epoch)
                if order is None:
                    order = orders[epoch] = self.order(epoch)
                    for old in [e for e in orders if e < epoch - 2]:
                        del orders[old]
            image_id = int(order[pos])
            seed = -1 if self.seed is None else (self.seed * 7_919 + epoch * 1_000_003 + pos) % (2 ** 31)
            with self._lock:
                if self._closed:
                    return self._closed_fetch(image_id)
                self._in_flight += 1
            try:
                return self._fetch_one(image_id, seed, pool)
            finally:
                with self._lock:
                    self._in_flight -= 1

        return fetch

    def _fetch_one(self, image_id: int, seed: int, pool):
        """The fetch's outputs for one sample: ``sample()``'s with the anchor labels as int8
        ``[A, 1]`` (the image stays uint8: the model molds it).

        With worker processes the worker writes both into a shared-memory slot and this returns
        arrays over the slot, which ``tf.numpy_function`` aliases: the ``batch`` op copies them
        once and the slot is reused after that (see ``SlotRing.views``). This keeps the training
        process's work per image to the batch copy: it shares the cores with the workers, and
        receiving, unpickling and molding 12 MB here was what limited the 1 -> 2 worker scaling.
        """
        slot = self._slots.acquire() if pool is not None and self._pool_refused is None else None
        try:
            result = self._make(image_id, seed, pool, slot)
            if result is None:
                return self._closed_fetch(image_id)
            out = self._accept(image_id, result)
            if out[7] != STATUS_OK:
                return self._dropped_fetch(out)
            if out[0] is None:  # written into the slot by the worker
                image, match = self._slots.views(slot[0])
                slot = None  # released by the views' finalizers
            else:
                image, match = out[0], out[2][:, None]
            return (image, out[1], match) + tuple(out[3:])
        finally:
            if slot is not None:  # not handed to TensorFlow
                self._slots.release(slot[0])

    def _dropped_fetch(self, out):
        """The fetch's outputs for a sample the stream drops (skipped, failed, closed): shared
        zeros in the fetch's dtypes, made once (the filter drops them before anything reads them)."""
        if self._fetch_zeros is None:
            self._fetch_zeros = (np.zeros(tuple(self.config.IMAGE_SHAPE), np.uint8),
                                 np.zeros((self.anchors.shape[0], 1), np.int8))
        image, match = self._fetch_zeros
        return (image, out[1], match) + tuple(out[3:])

    def _closed_fetch(self, image_id: int):
        return self._dropped_fetch(self._closed_result(image_id))

    def _closed_result(self, image_id: int):
        return self._empty() + (np.int32(STATUS_CLOSED), np.int64(image_id), b"closed")

    def workers_for(self, num_parallel_calls) -> Tuple[int, Optional[object]]:
        """``(map parallelism, pool or None)`` for a ``num_parallel_calls`` request.

        With processes the pool (shared per dataset) may hold up to all cores; the number of
        requests in flight, ``num_parallel_calls`` capped at the cores (AUTOTUNE = all cores),
        is the number of processes at work.
        """
        cores = host_cores()
        if self.worker_mode != "thread":
            pool = self._pool(cores)
            if pool is not None:
                wanted = cores if num_parallel_calls in (None, tf.data.AUTOTUNE) else int(num_parallel_calls)
                return max(1, min(wanted, cores)), pool
        return (num_parallel_calls if num_parallel_calls is not None else tf.data.AUTOTUNE), None

    def dataset_fn(self, batch_size: Optional[int] = None, first_epoch: int = 0, epochs: Optional[int] = None,
                   num_parallel_calls: Optional[int] = tf.data.AUTOTUNE, prefetch: int = tf.data.AUTOTUNE,
                   drop_remainder: bool = True, shard: Optional[Tuple[int, int]] = None,
                   molded: bool = False) -> tf.data.Dataset:
        """A batched ``tf.data.Dataset`` yielding ``(inputs,)`` with the 7 training inputs.

        Args:
            batch_size: default ``config.BATCH_SIZE`` (the global batch under a strategy).
            first_epoch: epoch number of the first image order (to resume mid-schedule).
            epochs: number of passes; None repeats forever (Keras ``steps_per_epoch`` cuts epochs).
            num_parallel_calls: workers: processes (``worker_mode`` process/auto; at most the
                host's cores; AUTOTUNE = all cores) or ``tf.data`` threads (thread mode).
            shard: ``(index, count)``: this is input pipeline ``index`` of ``count`` (one per
                worker). Each global batch of ``batch_size`` images in the seeded order is cut
                into ``count`` consecutive parts and only part ``index`` is loaded, batched by
                ``batch_size // count``; together the pipelines load every image once, in the
                global batches one pipeline would make (as long as none is skipped).
            molded: yield the image molded (float32) and the labels int32, as Matterport's
                ``data_generator`` does, for a consumer other than this package's training
                model. Default False: uint8 image and int8 labels, which the training model
                molds on the device (:func:`mrcnn.modeling.maskrcnn.mold_raw_inputs`): 4x fewer
                bytes per image to copy on the host and to send to the accelerator.
        Returns:
            Elements ``((image [B, H, W, 3] uint8 resized (float32 molded if ``molded``),
            image_meta [B, META] float32, rpn_match [B, A, 1] int8 (int32 if ``molded``),
            rpn_bbox [B, R, 4] float32, gt_class_ids [B, G] int32, gt_boxes [B, G, 4] int32,
            gt_masks [B, h, w, G] bool),)``.
        """
        batch_size = batch_size or self.config.BATCH_SIZE
        shard_spec = None
        if shard is not None:
            index, count = int(shard[0]), int(shard[1])
            if count < 1 or not 0 <= index < count or batch_size % count:
                raise ValueError(f"shard {shard!r}: need 0 <= index < count and batch_size ({batch_size}) "
                                 f"divisible by count")
            if count > 1:
                shard_spec = (index, count, batch_size)
                batch_size //= count
        n = len(self.dataset.image_ids)
        # The schedule is a TF counter (no Python generator to tear down); the fetch maps a
        # position to its image and seed.
        positions = tf.data.Dataset.range(epochs * n if epochs is not None else 2 ** 62)
        if shard_spec is not None:
            index, count, global_batch = shard_spec
            positions = positions.filter(lambda s: (s % global_batch) * count // global_batch == index)
        calls, pool = self.workers_for(num_parallel_calls)
        fetch = self._fetcher(first_epoch, pool)
        # The fetch's outputs: the sample's arrays with the anchor labels [A, 1] (as the model takes them).
        shapes = list(self._shapes()) + [(), (), ()]
        shapes[2] = shapes[2] + (1,)
        dtypes = list(self._dtypes()) + [tf.int32, tf.int64, tf.string]

        def load(s):
            out = tf.numpy_function(fetch, [s], dtypes, stateful=True, name="load_sample")
            for t, shape in zip(out, shapes):
                t.set_shape(shape)
            return tuple(out)

        max_errors = int(self.max_errors)

        def count_failures(run, x):
            # Sequential, in stream order: "in a row" means in the order of the schedule.
            status, message = x[7], x[9]
            run = tf.where(status == STATUS_ERROR, run + 1, tf.where(status == STATUS_OK, 0, run))
            text = tf.strings.join([tf.strings.as_string(run), " images in a row failed to load; last was ",
                                    message])
            check = tf.debugging.Assert(run <= max_errors, [text], summarize=1)
            with tf.control_dependencies([check]):
                run = tf.identity(run)
            return run, x

        table = tf.constant(mold_table(self.config.MEAN_PIXEL).reshape(-1)) if molded else None

        def to_inputs(*x):
            x = tuple(x[:7])
            if molded:  # as mold_raw_inputs does in the model (flat table index: value * C + channel)
                channels = int(x[0].shape[-1])
                index = tf.cast(x[0], tf.int32) * channels + tf.range(channels, dtype=tf.int32)
                x = (tf.gather(table, index), x[1], tf.cast(x[2], tf.int32)) + x[3:]
            return (x,)

        ds = positions.map(load, num_parallel_calls=calls, deterministic=True)
        ds = ds.take_while(lambda *x: x[7] != STATUS_CLOSED)
        ds = ds.scan(tf.constant(0, tf.int32), count_failures)
        ds = ds.filter(lambda *x: x[7] == STATUS_OK)
        ds = ds.batch(batch_size, drop_remainder=drop_remainder)
        ds = ds.map(to_inputs)
        return ds.prefetch(prefetch)


def distribute(dataset: tf.data.Dataset, strategy: Optional[tf.distribute.Strategy] = None,
               buffer_size: int = 2):
    """Batches of ``dataset`` delivered onto the accelerator(s) ahead of the step.

    With a ``strategy`` (e.g. ``MirroredStrategy``): the strategy's distributed dataset, which
    splits each global batch between the replicas and prefetches every replica's part onto its
    device (``experimental_fetch_to_device``, ``buffer_size`` batches per replica); Keras
    ``fit`` does the same with a plain dataset under a strategy scope. Without a strategy and
    with a GPU: ``prefetch_to_device`` onto the first GPU. Otherwise the dataset itself.
    """
    if strategy is not None:
        options = tf.distribute.InputOptions(experimental_fetch_to_device=True,
                                             experimental_per_replica_buffer_size=int(buffer_size))
        return strategy.experimental_distribute_dataset(dataset, options)
    gpus = tf.config.list_logical_devices("GPU")
    if gpus:
        return dataset.apply(tf.data.experimental.prefetch_to_device(gpus[0].name, buffer_size=int(buffer_size)))
    return dataset


def build_dataset(dataset, config, shuffle: bool = True, augmentation=None, seed: Optional[int] = None,
                  batch_size: Optional[int] = None, no_augmentation_sources=None, worker_mode: str = "auto",
                  **kwargs) -> tf.data.Dataset:
    """Shortcut: ``InputPipeline(...).dataset_fn(...)``."""
    pipe = InputPipeline(dataset, config, shuffle=shuffle, augmentation=augmentation,
                         no_augmentation_sources=no_augmentation_sources, seed=seed, worker_mode=worker_mode)
    return pipe.dataset_fn(batch_size=batch_size, **kwargs)


@atexit.register
def _close_all() -> None:
    """Before the interpreter finalises: no fetch may be in flight when iterators are destroyed."""
    for pipe in list(_LIVE):
        pipe.close()
    shutdown_pools()
    close_rings()
