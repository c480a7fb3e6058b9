"""Training batches as a ``keras.utils.PyDataset``: the input path for non-TF backends.

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

from typing import Optional, Sequence, Tuple

import keras
import numpy as np

from mrcnn.data.fast import mold_image_fast
from mrcnn.data.pipeline import STATUS_ERROR, STATUS_OK, InputPipeline

__all__ = ["TrainingPyDataset"]


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
                # The tf.data pipeline molds and widens these after batching, in TF ops.
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
