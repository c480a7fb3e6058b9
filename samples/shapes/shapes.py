"""Matterport's toy "shapes" dataset: squares, circles and triangles on a plain background.

Images are generated on the fly (nothing to download), reproducibly from a seed, so it
is the dataset of the demo and of the training tests. Drawn with scikit-image
(Matterport used OpenCV); the geometry and the occlusion rule are Matterport's: later
shapes are drawn on top and cover earlier ones' masks.
"""
from __future__ import annotations

import math
from typing import List, Tuple

import numpy as np
import skimage.draw

from mrcnn.config import Config
from mrcnn.core.boxes import non_max_suppression
from mrcnn.data.dataset import Dataset

SHAPES = ("square", "circle", "triangle")


class ShapesConfig(Config):
    """Matterport's ShapesConfig: 3 classes + background, 128x128 images."""
    NAME = "shapes"
    GPU_COUNT = 1
    IMAGES_PER_GPU = 8
    NUM_CLASSES = 1 + 3
    IMAGE_MIN_DIM = 128
    IMAGE_MAX_DIM = 128
    RPN_ANCHOR_SCALES = (8, 16, 32, 64, 128)
    TRAIN_ROIS_PER_IMAGE = 32
    STEPS_PER_EPOCH = 100
    VALIDATION_STEPS = 5


class ShapesDataset(Dataset):
    """Generates images of random shapes.

    ``load_shapes(count, height, width, seed=None)`` registers ``count`` images; each
    image's specification (background colour and shapes) is drawn once from ``seed``, so
    the same seed gives the same dataset everywhere.
    """

    def load_shapes(self, count: int, height: int, width: int, seed: int | None = None) -> None:
        for i, name in enumerate(SHAPES, 1):
            self.add_class("shapes", i, name)
        rng = np.random.RandomState(seed)
        for i in range(count):
            bg_color, shapes = random_image(rng, height, width)
            self.add_image("shapes", image_id=i, path=None, width=width, height=height,
                           bg_color=bg_color, shapes=shapes)

    def load_image(self, image_id: int) -> np.ndarray:
        info = self.image_info[image_id]
        image = np.empty((info["height"], info["width"], 3), dtype=np.uint8)
        image[:] = np.asarray(info["bg_color"], dtype=np.uint8)
        for shape, color, dims in info["shapes"]:
            rr, cc = shape_pixels(shape, dims, image.shape[:2])
            image[rr, cc] = color
        return image

    def image_reference(self, image_id: int) -> str:
        info = self.image_info[image_id]
        return f"shapes image {image_id}: " + ", ".join(s for s, _, _ in info["shapes"])

    def load_mask(self, image_id: int) -> Tuple[np.ndarray, np.ndarray]:
        info = self.image_info[image_id]
        shapes = info["shapes"]
        mask = np.zeros([info["height"], info["width"], len(shapes)], dtype=bool)
        for i, (shape, _, dims) in enumerate(shapes):
            rr, cc = shape_pixels(shape, dims, mask.shape[:2])
            mask[rr, cc, i] = True
        # A shape drawn later hides what is under it.
        visible = np.ones(mask.shape[:2], dtype=bool)
        for i in range(len(shapes) - 1, -1, -1):
            mask[:, :, i] &= visible
            visible &= ~mask[:, :, i]
        class_ids = np.array([self.class_names.index(s) for s, _, _ in shapes], dtype=np.int32)
        return mask, class_ids


def shape_pixels(shape: str, dims, image_shape) -> Tuple[np.ndarray, np.ndarray]:
    """Pixel rows/cols of one filled shape centred at ``(x, y)`` with half-size ``s``."""
    x, y, s = dims
    if shape == "square":
        return skimage.draw.rectangle((y - s, x - s), (y + s, x + s), shape=image_shape)
    if shape == "circle":
        return skimage.draw.disk((y, x), s, shape=image_shape)
    if shape == "triangle":
        h = s / math.sin(math.radians(60))
        rows = np.array([y - s, y + s, y + s])
        cols = np.array([x, x - h, x + h])
        return skimage.draw.polygon(rows, cols, shape=image_shape)
    raise ValueError(f"unknown shape {shape!r}")


def random_shape(rng: np.random.RandomState, height: int, width: int):
    """One random shape: (name, RGB colour, (x, y, half_size)), fully inside a 20 px margin."""
    shape = SHAPES[rng.randint(len(SHAPES))]
    color = tuple(int(c) for c in rng.randint(0, 256, 3))
    buffer = 20
    y = int(rng.randint(buffer, height - buffer))
    x = int(rng.randint(buffer, width - buffer))
    s = int(rng.randint(buffer, height // 4 + 1))
    return shape, color, (x, y, s)


def random_image(rng: np.random.RandomState, height: int, width: int):
    """Background colour and 1-4 shapes, dropping shapes that overlap too much (NMS at 0.3)."""
    bg_color = tuple(int(c) for c in rng.randint(0, 256, 3))
    shapes: List = []
    boxes = []
    for _ in range(rng.randint(1, 5)):
        shape, color, dims = random_shape(rng, height, width)
        shapes.append((shape, color, dims))
        x, y, s = dims
        boxes.append([y - s, x - s, y + s, x + s])
    keep = non_max_suppression(np.array(boxes), np.arange(len(shapes)), 0.3)
    shapes = [s for i, s in enumerate(shapes) if i in keep]
    return bg_color, shapes


def make_datasets(n_train: int = 500, n_val: int = 50, size: int = 128, seed: int = 0):
    """Prepared train and validation ShapesDatasets (disjoint seeds)."""
    train = ShapesDataset()
    train.load_shapes(n_train, size, size, seed=seed)
    train.prepare()
    val = ShapesDataset()
    val.load_shapes(n_val, size, size, seed=seed + 1_000_003)
    val.prepare()
    return train, val
