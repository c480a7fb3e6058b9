"""Training-graph helper: run the mask head on the positive ROIs only.

DetectionTargetLayer emits each image's ROIs as positives first, then negatives, then
zero padding, and never more than ``int(TRAIN_ROIS_PER_IMAGE * ROI_POSITIVE_RATIO)``
positives. The mask loss only looks at positive ROIs, so feeding the mask head the first
that-many rows gives the same loss and gradients as Matterport's graph (which runs the
head on every ROI) for about a third of the cost: the mask head is the most expensive
part of a training step on a CPU.
"""
from __future__ import annotations

from typing import Any

from keras import layers as KL


def positive_roi_count(config) -> int:
    """Upper bound of positive ROIs per image produced by DetectionTargetLayer."""
    return max(1, int(config.TRAIN_ROIS_PER_IMAGE * config.ROI_POSITIVE_RATIO))


class FirstRows(KL.Layer):
    """``x[:, :count]`` for each input (a list of tensors with ROIs on axis 1)."""

    def __init__(self, count: int, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.count = int(count)

    def call(self, inputs):
        if isinstance(inputs, (list, tuple)):
            return [x[:, :self.count] for x in inputs]
        return inputs[:, :self.count]

    def compute_output_shape(self, input_shape):
        def one(s):
            s = list(s)
            if len(s) > 1:
                s[1] = self.count if s[1] is None else min(self.count, s[1])
            return tuple(s)
        if isinstance(input_shape, list):
            return [one(s) for s in input_shape]
        return one(input_shape)

    def get_config(self) -> dict:
        return {**super().get_config(), "count": self.count}
