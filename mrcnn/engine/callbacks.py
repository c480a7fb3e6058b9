"""Keras callbacks used by ``MaskRCNN.train``: atomic per-epoch checkpoints, NaN stop, skip report."""
from __future__ import annotations

import logging
import math
import os
from typing import Optional

import keras

logger = logging.getLogger("mrcnn.train")


class NaNLossError(FloatingPointError):
    """Training produced a NaN or infinite loss."""


class MatterportCheckpoint(keras.callbacks.Callback):
    """Writes ``checkpoint_path.format(epoch=N)`` after epoch N (1-based) in Matterport's h5 layout.

    The file is written next to its final name and renamed into place, so a run killed
    at any moment leaves either the previous checkpoint set or the new one complete.
    Nothing is written for an epoch that ended because the loss diverged.
    """

    def __init__(self, mrcnn_model, checkpoint_path: str, guard: Optional["StopOnNaN"] = None):
        super().__init__()
        self.mrcnn_model = mrcnn_model
        self.checkpoint_path = checkpoint_path
        self.guard = guard
        self.last_saved: Optional[str] = None

    def on_epoch_end(self, epoch, logs=None):
        if self.guard is not None and self.guard.bad_step is not None:
            return
        path = self.checkpoint_path.format(epoch=epoch + 1)
        self.mrcnn_model.save_weights(path)
        self.last_saved = path
        logger.info("Saved checkpoint %s", path)


class StopOnNaN(keras.callbacks.Callback):
    """Stops training at the first non-finite loss and remembers where it happened."""

    def __init__(self, steps_per_epoch: int):
        super().__init__()
        self.steps_per_epoch = steps_per_epoch
        self.bad_step: Optional[int] = None
        self.bad_epoch: Optional[int] = None
        self.bad_logs: dict = {}
        self._epoch = 0

    def on_epoch_begin(self, epoch, logs=None):
        self._epoch = epoch

    def on_train_batch_end(self, batch, logs=None):
        logs = logs or {}
        loss = logs.get("loss")
        if loss is None:
            return
        try:
            value = float(loss)
        except (TypeError, ValueError):
            return
        if not math.isfinite(value):
            self.bad_step = batch + 1
            self.bad_epoch = self._epoch + 1
            self.bad_logs = {k: float(v) for k, v in logs.items() if _is_number(v)}
            self.model.stop_training = True


def _is_number(v) -> bool:
    try:
        float(v)
        return True
    except (TypeError, ValueError):
        return False


class SkipReport(keras.callbacks.Callback):
    """Logs, after each epoch, how many samples the input pipelines skipped and why."""

    def __init__(self, *pipelines):
        super().__init__()
        self.pipelines = [p for p in pipelines if p is not None]

    def on_epoch_end(self, epoch, logs=None):
        for p in self.pipelines:
            if p.skips.total:
                logger.warning("%s: %d samples skipped so far (%s)", p.skips.name, p.skips.total,
                               ", ".join(f"{k}: {v}" for k, v in sorted(p.skips.counts.items())))


def last_checkpoint_in(log_dir: str) -> Optional[str]:
    """Newest ``mask_rcnn_*.h5`` in ``log_dir`` or None."""
    if not os.path.isdir(log_dir):
        return None
    files = sorted(f for f in os.listdir(log_dir) if f.startswith("mask_rcnn") and f.endswith(".h5"))
    return os.path.join(log_dir, files[-1]) if files else None
