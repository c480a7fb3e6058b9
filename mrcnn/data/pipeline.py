"""tf.data input pipeline for training.

Each sample is produced by the fast numpy path (:func:`mrcnn.data.fast.load_image_gt_fast`,
same results as Matterport's :func:`mrcnn.data.loader.load_image_gt`, +
:func:`mrcnn.data.targets.build_rpn_targets` with an anchor index) inside ``tf.numpy_function`` running on
``num_parallel_calls`` workers; results are then filtered, batched and prefetched.

Determinism: with a ``seed`` the image order of every epoch and every random choice
inside a sample (RPN subsampling, crop, imgaug) are derived from
``(seed, epoch, position)``, so the stream is the same whatever the number of workers.
Without a seed the order is shuffled freshly.

Bad samples: an image without instances (or whose instances all vanish under
augmentation) is skipped and counted; an image that fails to load is logged with its id
and path, counted and skipped. :attr:`InputPipeline.skips` holds the counts; more than
``max_errors`` consecutive failures stop training with an error naming the last image.
"""
from __future__ import annotations

import logging
import random
import threading
from typing import Optional, Sequence, Tuple

import numpy as np
import tensorflow as tf

from mrcnn.core.anchors import get_anchor_index, get_pixel_anchors

from mrcnn.data.fast import load_image_gt_fast, mold_image_fast
from mrcnn.data.loader import SkipCounter, _reference
from mrcnn.data.targets import build_rpn_targets
from mrcnn.data.validate import SampleError

logger = logging.getLogger("mrcnn.data")

STATUS_OK, STATUS_SKIP, STATUS_ERROR = 0, 1, 2

INPUT_NAMES = ("input_image", "input_image_meta", "input_rpn_match", "input_rpn_bbox",
               "input_gt_class_ids", "input_gt_boxes", "input_gt_masks")


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
    """

    def __init__(self, dataset, config, shuffle: bool = True, augmentation=None,
                 no_augmentation_sources: Optional[Sequence[str]] = None, seed: Optional[int] = None,
                 max_errors: int = 5, name: str = "train"):
        if not len(dataset.image_ids):
            raise ValueError(f"{name} dataset has no images (did you call prepare()?)")
        self.dataset = dataset
        self.config = config
        self.shuffle = shuffle
        self.augmentation = augmentation
        self.no_aug = set(no_augmentation_sources or [])
        self.seed = seed
        self.max_errors = max_errors
        self.skips = SkipCounter(f"{name} pipeline")
        self._consecutive_errors = 0
        self._errors = {}  # image id -> last load error, for the message of _check
        self._lock = threading.Lock()
        self.anchors = get_pixel_anchors(config, config.IMAGE_SHAPE)
        self.anchor_index = get_anchor_index(config, config.IMAGE_SHAPE)

    # ----------------------------------------------------------------------------------------
    def sample(self, image_id: int, sample_seed: int):
        """One training sample as numpy arrays plus a status (``STATUS_*``; numpy path, no TF)."""
        cfg = self.config
        image_id = int(image_id)
        sample_seed = int(sample_seed)
        rng = np.random.RandomState(sample_seed % (2 ** 32)) if sample_seed >= 0 else np.random
        py_rng = random.Random(sample_seed) if sample_seed >= 0 else None
        try:
            source = self.dataset.image_info[image_id]["source"]
            aug = None if source in self.no_aug else self.augmentation
            image, meta, class_ids, boxes, masks = load_image_gt_fast(
                self.dataset, cfg, image_id, augmentation=aug, use_mini_mask=cfg.USE_MINI_MASK,
                rng=py_rng, augment_seed=sample_seed if sample_seed >= 0 else None)
        except Exception as exc:  # noqa: BLE001 - every failure is logged with the image and counted
            if isinstance(exc, SampleError) and getattr(cfg, "STRICT_DATA_CHECKS", False):
                self.strict_error = exc  # train() re-raises it as itself, not wrapped by TF
                raise
            logger.error("Skipping image id %s (%s): %s: %s", image_id, _reference(self.dataset, image_id),
                         type(exc).__name__, exc)
            self.skips.add("error", image_id, str(exc))
            with self._lock:
                self._errors[image_id] = f"{type(exc).__name__}: {exc}"
            return self._empty(STATUS_ERROR)
        if not np.any(class_ids > 0):
            self.skips.add("no instances", image_id)
            return self._empty(STATUS_SKIP)

        rpn_match, rpn_bbox = build_rpn_targets(image.shape, self.anchors, class_ids, boxes, cfg, rng=rng,
                                                anchor_index=self.anchor_index)
        if boxes.shape[0] > cfg.MAX_GT_INSTANCES:
            ids = rng.choice(np.arange(boxes.shape[0]), cfg.MAX_GT_INSTANCES, replace=False)
            class_ids, boxes, masks = class_ids[ids], boxes[ids], masks[:, :, ids]
        n = boxes.shape[0]
        gt_class_ids = np.zeros([cfg.MAX_GT_INSTANCES], np.int32)
        gt_boxes = np.zeros([cfg.MAX_GT_INSTANCES, 4], np.int32)
        gt_masks = np.zeros(masks.shape[:2] + (cfg.MAX_GT_INSTANCES,), bool)
        gt_class_ids[:n] = class_ids
        gt_boxes[:n] = boxes
        gt_masks[:, :, :n] = masks
        return (mold_image_fast(image, cfg), meta.astype(np.float32),
                rpn_match[:, None].astype(np.int32), rpn_bbox.astype(np.float32),
                gt_class_ids, gt_boxes, gt_masks, np.int32(STATUS_OK))

    def _empty(self, status: int):
        shapes = self._shapes()
        dtypes = self._dtypes()
        return tuple(np.zeros(s, d.as_numpy_dtype) for s, d in zip(shapes, dtypes)) + (np.int32(status),)

    def _check(self, image_id, status) -> bool:
        """Runs sequentially, in stream order: counts consecutive load failures.

        Parallel workers finish out of order, so the count is kept here, after the
        (deterministic) parallel map, where "in a row" means in the order of the schedule.
        """
        image_id, status = int(image_id), int(status)
        if status != STATUS_ERROR:
            if status == STATUS_OK:
                self._consecutive_errors = 0
            return np.bool_(status == STATUS_OK)
        self._consecutive_errors += 1
        n = self._consecutive_errors
        if n > self.max_errors:
            with self._lock:
                why = self._errors.get(image_id, "load failed")
            raise RuntimeError(f"{n} images in a row failed to load; last was image id {image_id} "
                               f"({_reference(self.dataset, image_id)}): {why}")
        return np.bool_(False)

    def _shapes(self):
        cfg = self.config
        mask_hw = tuple(cfg.MINI_MASK_SHAPE) if cfg.USE_MINI_MASK else tuple(cfg.IMAGE_SHAPE[:2])
        return (tuple(cfg.IMAGE_SHAPE), (cfg.IMAGE_META_SIZE,), (self.anchors.shape[0], 1),
                (cfg.RPN_TRAIN_ANCHORS_PER_IMAGE, 4), (cfg.MAX_GT_INSTANCES,), (cfg.MAX_GT_INSTANCES, 4),
                mask_hw + (cfg.MAX_GT_INSTANCES,))

    @staticmethod
    def _dtypes():
        return (tf.float32, tf.float32, tf.int32, tf.float32, tf.int32, tf.int32, tf.bool)

    # ----------------------------------------------------------------------------------------
    def order(self, epoch: int) -> np.ndarray:
        """Image ids in the order of ``epoch`` (0-based)."""
        ids = np.array(self.dataset.image_ids)
        if not self.shuffle:
            return ids
        if self.seed is None:
            return np.random.permutation(ids)
        return np.random.RandomState((self.seed * 1_000_003 + epoch) % (2 ** 32)).permutation(ids)

    def _schedule(self, first_epoch: int, epochs: Optional[int], shard: Optional[Tuple[int, int, int]] = None):
        index, count, global_batch = shard or (0, 1, 1)
        epoch = first_epoch
        served = -1  # index in the whole stream: global batches run across epochs
        while epochs is None or epoch < first_epoch + epochs:
            for pos, image_id in enumerate(self.order(epoch)):
                served += 1
                if (served % global_batch) * count // global_batch != index:
                    continue  # another worker's part of this global batch
                if self.seed is None:
                    sample_seed = -1
                else:
                    sample_seed = (self.seed * 7_919 + epoch * 1_000_003 + pos) % (2 ** 31)
                yield int(image_id), sample_seed
            epoch += 1

    def dataset_fn(self, batch_size: Optional[int] = None, first_epoch: int = 0, epochs: Optional[int] = None,
                   num_parallel_calls: Optional[int] = tf.data.AUTOTUNE, prefetch: int = tf.data.AUTOTUNE,
                   drop_remainder: bool = True,
                   shard: Optional[Tuple[int, int]] = None) -> tf.data.Dataset:
        """A batched ``tf.data.Dataset`` yielding ``(inputs,)`` with the 7 training inputs.

        Args:
            batch_size: default ``config.BATCH_SIZE`` (the global batch under a strategy).
            first_epoch: epoch number of the first image order (to resume mid-schedule).
            epochs: number of passes; None repeats forever (Keras ``steps_per_epoch`` cuts epochs).
            shard: ``(index, count)``: this is input pipeline ``index`` of ``count`` (one per
                worker). Each global batch of ``batch_size`` images in the seeded order is cut
                into ``count`` consecutive parts and only part ``index`` is loaded, batched by
                ``batch_size // count``; together the pipelines load every image once, in the
                global batches one pipeline would make (as long as none is skipped).
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
        schedule = tf.data.Dataset.from_generator(
            lambda: self._schedule(first_epoch, epochs, shard_spec),
            output_signature=(tf.TensorSpec([], tf.int64), tf.TensorSpec([], tf.int64)))
        shapes = self._shapes()
        dtypes = self._dtypes()

        def load(image_id, sample_seed):
            out = tf.numpy_function(self.sample, [image_id, sample_seed], list(dtypes) + [tf.int32],
                                    stateful=True, name="load_sample")
            for t, s in zip(out, list(shapes) + [()]):
                t.set_shape(s)
            return (image_id,) + tuple(out)

        def check(image_id, *x):
            keep = tf.numpy_function(self._check, [image_id, x[-1]], tf.bool, stateful=True,
                                     name="check_sample")
            keep.set_shape(())
            return x[:-1] + (keep,)

        ds = schedule.map(load, num_parallel_calls=num_parallel_calls, deterministic=True)
        ds = ds.map(check)  # sequential on purpose: see _check
        ds = ds.filter(lambda *x: x[-1])
        ds = ds.map(lambda *x: (tuple(x[:-1]),))
        ds = ds.batch(batch_size, drop_remainder=drop_remainder)
        return ds.prefetch(prefetch)


def build_dataset(dataset, config, shuffle: bool = True, augmentation=None, seed: Optional[int] = None,
                  batch_size: Optional[int] = None, no_augmentation_sources=None, **kwargs) -> tf.data.Dataset:
    """Shortcut: ``InputPipeline(...).dataset_fn(...)``."""
    pipe = InputPipeline(dataset, config, shuffle=shuffle, augmentation=augmentation,
                         no_augmentation_sources=no_augmentation_sources, seed=seed)
    return pipe.dataset_fn(batch_size=batch_size, **kwargs)
