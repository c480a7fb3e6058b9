"""Training curves: read losses from TensorBoard logs or a Keras History and plot them.

Keras' ``TensorBoard`` callback writes one event-file folder per run,
``<log_dir>/train`` and ``<log_dir>/validation``, with per-epoch scalars
tagged ``epoch_<metric>`` (validation values lose their ``val_`` prefix) and,
with ``update_freq="batch"``, per-batch ``batch_<metric>``. A Keras
``History`` (or its ``.history`` dict) holds the same numbers as lists with
``val_``-prefixed validation keys. Both are brought to one shape,
``{run: {metric: [(step, value), ...]}}`` with runs ``"train"`` and
``"validation"``, and :func:`plot_training_curves` draws one panel per loss.
"""
from __future__ import annotations

import glob
import os
from typing import Any, Dict, List, Mapping, Optional, Sequence, Tuple, Union

import numpy as np

__all__ = ["MATTERPORT_LOSSES", "read_tensorboard_scalars", "history_to_series",
           "load_training_series", "plot_training_curves"]

Series = Dict[str, Dict[str, List[Tuple[int, float]]]]

# The losses Matterport's MaskRCNN reports, in its order.
MATTERPORT_LOSSES = ("loss", "rpn_class_loss", "rpn_bbox_loss", "mrcnn_class_loss",
                     "mrcnn_bbox_loss", "mrcnn_mask_loss")

_RUNS = ("train", "validation")


def _event_files(run_dir: str) -> List[str]:
    # Several files appear when training is resumed; names start with the
    # creation time, so sorting replays them in order.
    return sorted(glob.glob(os.path.join(run_dir, "events.out.tfevents.*")))


def _scalar_value(value: Any) -> Optional[float]:
    """The float in a summary value: TF1 ``simple_value`` or a TF2 scalar tensor."""
    if value.HasField("simple_value"):
        return float(value.simple_value)
    if value.HasField("tensor"):
        from tensorflow import make_ndarray

        arr = make_ndarray(value.tensor)
        if arr.size == 1 and arr.dtype.kind in "fiu":
            return float(arr.reshape(()))
    return None


def _tag_to_metric(tag: str, level: str) -> Optional[str]:
    """Metric name for a TensorBoard tag at ``level`` ("epoch" or "batch"), or None to skip."""
    if tag.endswith("_vs_iterations"):
        return None
    for prefix in ("epoch_", "batch_"):
        if tag.startswith(prefix):
            return tag[len(prefix):] if prefix == level + "_" else None
    # Tags written by hand with tf.summary.scalar carry no level prefix.
    return tag


def read_tensorboard_scalars(log_dir: str, level: str = "epoch") -> Series:
    """Scalars from ``<log_dir>/train`` and ``<log_dir>/validation`` event files.

    level: ``"epoch"`` reads ``epoch_*`` tags, ``"batch"`` reads ``batch_*``
    tags; tags without either prefix are read in both cases.
    If ``log_dir`` itself holds event files (no run folders) they form the
    ``"train"`` run. Returns ``{run: {metric: [(step, value), ...]}}`` sorted
    by step; a step logged twice keeps the last value.
    """
    if level not in ("epoch", "batch"):
        raise ValueError(f"level must be 'epoch' or 'batch', got {level!r}")
    if not os.path.isdir(log_dir):
        raise FileNotFoundError(f"TensorBoard log folder not found: {log_dir}")
    runs = {r: os.path.join(log_dir, r) for r in _RUNS if os.path.isdir(os.path.join(log_dir, r))}
    if not runs and _event_files(log_dir):
        runs = {"train": log_dir}
    if not runs or not any(_event_files(d) for d in runs.values()):
        raise FileNotFoundError(f"{log_dir}: no TensorBoard event files in it or in "
                                f"its 'train'/'validation' folders")
    import tensorflow as tf  # lazy: only this reader needs TensorFlow

    out: Series = {}
    for run, run_dir in runs.items():
        collected: Dict[str, Dict[int, float]] = {}
        for path in _event_files(run_dir):
            try:
                for event in tf.compat.v1.train.summary_iterator(path):
                    for value in event.summary.value:
                        metric = _tag_to_metric(value.tag, level)
                        number = _scalar_value(value) if metric else None
                        if number is not None:
                            collected.setdefault(metric, {})[int(event.step)] = number
            except tf.errors.DataLossError as e:
                # A file still being written ends mid-record; keep what was read.
                if not collected:
                    raise ValueError(f"{path}: unreadable TensorBoard event file ({e})") from e
        out[run] = {m: sorted(steps.items()) for m, steps in collected.items()}
    return out


def history_to_series(history: Any) -> Series:
    """``{run: {metric: [(epoch, value)]}}`` from a Keras ``History`` or a dict of lists.

    Keys starting with ``val_`` go to the ``"validation"`` run. Epoch numbers
    come from ``History.epoch`` when present (so resumed training keeps its
    numbering), else 0, 1, 2...
    """
    logs = getattr(history, "history", history)
    if not isinstance(logs, Mapping):
        raise TypeError(f"expected a Keras History or a dict of lists, got {type(history).__name__}")
    epochs = list(getattr(history, "epoch", []) or [])
    out: Series = {"train": {}, "validation": {}}
    for key, values in logs.items():
        values = np.asarray(values, dtype=np.float64).reshape(-1)
        steps = epochs if len(epochs) == len(values) else list(range(len(values)))
        run, metric = ("validation", key[4:]) if key.startswith("val_") else ("train", key)
        out[run][metric] = [(int(s), float(v)) for s, v in zip(steps, values)]
    return {r: m for r, m in out.items() if m}


def load_training_series(source: Union[str, os.PathLike, Any], level: str = "epoch") -> Series:
    """Series from a TensorBoard log folder (path), a Keras History, or a dict of lists."""
    if isinstance(source, (str, os.PathLike)):
        return read_tensorboard_scalars(os.fspath(source), level=level)
    return history_to_series(source)


def _default_metrics(series: Series) -> List[str]:
    names: List[str] = []
    for run in series.values():
        for m in run:
            if m not in names:
                names.append(m)
    losses = [m for m in names if "loss" in m]
    known = [m for m in MATTERPORT_LOSSES if m in losses]
    return known + sorted(m for m in losses if m not in known) if losses else sorted(names)


def plot_training_curves(source: Union[str, os.PathLike, Any], names: Optional[Sequence[str]] = None,
                         save_path: Optional[str] = None, title: str = "", cols: int = 3,
                         level: str = "epoch", log_scale: bool = False) -> Optional[Any]:
    """One panel per metric with the train and validation curves.

    source: TensorBoard log folder, Keras ``History`` or dict of lists.
    names: metrics to draw (without ``val_``/``epoch_`` prefixes); default every
        metric whose name contains "loss" (Matterport's losses first).
    save_path: write a PNG there. Returns the matplotlib ``Figure`` under a
    non-interactive backend (Agg); with a display backend it is shown and
    None is returned (see :mod:`mrcnn.visualize`).
    """
    import matplotlib.pyplot as plt

    series = load_training_series(source, level=level)
    names = list(names) if names is not None else _default_metrics(series)
    if not names:
        raise ValueError("no metrics to plot: the logs are empty")
    missing = [n for n in names if not any(n in run for run in series.values())]
    if missing:
        available = sorted({m for run in series.values() for m in run})
        raise ValueError(f"metrics {missing} are not in the logs; available: {available}")
    cols = max(1, min(cols, len(names)))
    rows = (len(names) + cols - 1) // cols
    fig, axes = plt.subplots(rows, cols, figsize=(4.5 * cols, 3.2 * rows), squeeze=False)
    for ax, name in zip(axes.flat, names):
        for run, style in (("train", "-"), ("validation", "--")):
            points = series.get(run, {}).get(name)
            if points:
                steps, values = zip(*points)
                ax.plot(steps, values, style, marker="o" if len(points) < 30 else None,
                        markersize=3, label=run)
        ax.set_title(name)
        ax.set_xlabel(level)
        if log_scale:
            ax.set_yscale("log")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    for ax in list(axes.flat)[len(names):]:
        ax.axis("off")
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    from mrcnn.visualize import _finish  # same show/return rules as the other plots

    return _finish(fig, True, save_path)
