"""Datasets for the worker-process tests, in a module without TensorFlow so spawned workers start fast."""
import numpy as np

from samples.shapes.shapes import ShapesDataset


class Broken(ShapesDataset):
    """Image 1 cannot be read, image 2 has no instance."""

    def load_image(self, image_id):
        if image_id == 1:
            raise OSError("truncated file")
        return super().load_image(image_id)

    def load_mask(self, image_id):
        if image_id == 2:
            return np.zeros((128, 128, 0), bool), np.zeros([0], np.int32)
        return super().load_mask(image_id)


class BadClassIds(ShapesDataset):
    """Image 1 has a class id out of range (a SampleError)."""

    def load_mask(self, image_id):
        masks, class_ids = super().load_mask(image_id)
        return masks, (np.full_like(class_ids, 99) if image_id == 1 else class_ids)


class OnlyHere(ShapesDataset):
    """Pickles, but cannot be rebuilt in another process (like a dataset holding a path that
    only the training process can see): a worker process fails to start with it."""

    def __getstate__(self):
        import os
        return dict(self.__dict__, _owner=os.getpid())

    def __setstate__(self, state):
        import os
        if state["_owner"] != os.getpid():
            raise RuntimeError("annotation database is locked by the training process")
        self.__dict__.update(state)
