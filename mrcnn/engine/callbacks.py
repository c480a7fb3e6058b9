"""Keras callbacks used by ``MaskRCNN.train``: atomic per-epoch checkpoints, NaN stop, skip report."""
from __future__ import annotations

import json
import logging
import math
import os
import re
from typing import Dict, List, Optional, Tuple

import keras

logger = logging.getLogger("mrcnn.train")


class NaNLossError(FloatingPointError):
    """Training produced a NaN or infinite loss."""


class MatterportCheckpoint(keras.callbacks.Callback):
    """Writes ``checkpoint_path.format(epoch=N)`` after epoch N (1-based) in Matterport's h5 layout.

    The file is written next to its final name and renamed into place, so a run killed
    at any moment leaves either the previous checkpoint set or the new one complete.
    Nothing is written for an epoch that ended because the loss diverged.

    Keep policy: ``keep=None`` keeps every checkpoint (Matterport). ``keep=N`` keeps the
    N newest checkpoints of the log dir plus the one with the lowest ``val_loss`` (``loss``
    when there is no validation); older ones are deleted only after the new file is in
    place. The losses are recorded in ``checkpoint_losses.json`` next to the checkpoints,
    so the best epoch survives a resumed or a second ``train()`` call in the same log dir.
    """

    LOSSES_FILE = "checkpoint_losses.json"

    def __init__(self, mrcnn_model, checkpoint_path: str, guard: Optional["StopOnNaN"] = None,
                 keep: Optional[int] = None):
        super().__init__()
        if keep is not None and (isinstance(keep, bool) or int(keep) != keep or keep < 1):
            raise ValueError(f"keep must be None (keep all) or a positive integer, got {keep!r}")
        self.mrcnn_model = mrcnn_model
        self.checkpoint_path = checkpoint_path
        self.guard = guard
        self.keep = None if keep is None else int(keep)
        self.last_saved: Optional[str] = None
        self.deleted: List[str] = []

    def on_epoch_end(self, epoch, logs=None):
        if self.guard is not None and self.guard.bad_step is not None:
            return
        path = self.checkpoint_path.format(epoch=epoch + 1)
        self.mrcnn_model.save_weights(path)
        self.last_saved = path
        logger.info("Saved checkpoint %s", path)
        if self.keep is not None:
            self._record_loss(path, logs or {})
            self._prune()

    # -- keep policy ------------------------------------------------------------------------
    def _losses_path(self) -> str:
        return os.path.join(os.path.dirname(self.checkpoint_path), self.LOSSES_FILE)

    def _read_losses(self) -> Dict[str, float]:
        try:
            with open(self._losses_path()) as f:
                data = json.load(f)
            return {str(k): float(v) for k, v in data.items()}
        except (OSError, ValueError, AttributeError, TypeError):
            return {}  # missing or damaged record: prune by age only

    def _record_loss(self, path: str, logs: dict) -> None:
        value = logs.get("val_loss", logs.get("loss"))
        try:
            value = float(value)
        except (TypeError, ValueError):
            return
        if not math.isfinite(value):
            return
        losses = self._read_losses()
        losses[os.path.basename(path)] = value
        self._write_losses(losses)

    def _checkpoints(self) -> List[Tuple[int, str]]:
        """(epoch, path) of this run's checkpoints in the log dir, oldest first."""
        directory = os.path.dirname(self.checkpoint_path)
        head, tail = os.path.basename(self.checkpoint_path).split("{epoch:04d}")
        pattern = re.compile(re.escape(head) + r"(\d{4,})" + re.escape(tail) + "$")
        found = []
        for name in os.listdir(directory):
            m = pattern.match(name)
            if m:
                found.append((int(m.group(1)), os.path.join(directory, name)))
        return sorted(found)

    def _prune(self) -> None:
        checkpoints = self._checkpoints()
        keep = {path for _, path in checkpoints[-self.keep:]}
        losses = self._read_losses()
        scored = [(losses[os.path.basename(p)], e, p) for e, p in checkpoints
                  if os.path.basename(p) in losses]
        if scored:
            keep.add(min(scored)[2])  # lowest loss; the earlier epoch on ties
        for _, path in checkpoints:
            if path not in keep:
                try:
                    os.remove(path)
                    self.deleted.append(path)
                    logger.info("Deleted checkpoint %s (keep=%d)", path, self.keep)
                except OSError as e:
                    logger.warning("Could not delete old checkpoint %s: %s", path, e)
        stale = {os.path.basename(p) for p in self.deleted}
        if stale & set(losses):
            self._write_losses({k: v for k, v in losses.items() if k not in stale})

    def _write_losses(self, losses: Dict[str, float]) -> None:
        """Atomic like the checkpoints: written beside, then renamed into place."""
        target = self._losses_path()
        tmp = target + ".tmp"
        with open(tmp, "w") as f:
            json.dump(losses, f, indent=1, sort_keys=True)
        os.replace(tmp, target)


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
