"""Augmentation: imgaug (Matterport's API) on NumPy 2, albumentations, and the mask rule.

imgaug 0.4.0 reads ``np.sctypes``, ``np.bool`` and ``np.complex``, which NumPy 2
removed. :func:`import_imgaug` restores those aliases (only if missing) before
importing it; nothing else of imgaug needs patching for what Matterport uses.

Only geometric augmenters may touch masks (a colour jitter must not change a mask);
:data:`MASK_AUGMENTERS` lists them by class name, as Matterport does.
"""
from __future__ import annotations

import contextlib
import importlib
import threading
from typing import Any, Tuple

import numpy as np

MASK_AUGMENTERS = ["Sequential", "SomeOf", "OneOf", "Sometimes", "Fliplr", "Flipud", "CropAndPad",
                   "Affine", "PiecewiseAffine"]


def apply_numpy2_shim() -> None:
    """Add back the NumPy aliases imgaug 0.4.0 needs (no-op on NumPy 1)."""
    if not hasattr(np, "sctypes"):
        np.sctypes = {
            "int": [np.int8, np.int16, np.int32, np.int64],
            "uint": [np.uint8, np.uint16, np.uint32, np.uint64],
            "float": [np.float16, np.float32, np.float64, np.longdouble],
            "complex": [np.complex64, np.complex128, np.clongdouble],
            "others": [bool, object, bytes, str, np.void],
        }
    for name, value in (("bool", np.bool_), ("complex", complex), ("float", float), ("int", int),
                        ("object", object), ("str", str)):
        if name not in np.__dict__:
            setattr(np, name, value)


def import_imgaug():
    """Import imgaug after the NumPy-2 shim; returns the ``imgaug`` module."""
    apply_numpy2_shim()
    try:
        return importlib.import_module("imgaug")
    except ImportError as exc:
        raise ImportError("augmentation= with imgaug augmenters needs imgaug: pip install imgaug==0.4.0") from exc


def is_imgaug(augmentation: Any) -> bool:
    return type(augmentation).__module__.startswith("imgaug")


def is_albumentations(augmentation: Any) -> bool:
    return type(augmentation).__module__.startswith("albumentations")


# Re-seeding an augmenter and drawing from it must not interleave between loader threads.
_SEED_LOCK = threading.Lock()


def augment(image: np.ndarray, mask: np.ndarray, augmentation: Any,
            seed: Any = None) -> Tuple[np.ndarray, np.ndarray]:
    """Apply ``augmentation`` to an image and its [H, W, N] masks.

    imgaug augmenters follow Matterport's rule (masks only see the geometric
    augmenters of :data:`MASK_AUGMENTERS`, through one deterministic copy so image and
    masks move together). albumentations pipelines get the masks as a list and apply
    their own geometric-only rule. Any other callable is called as
    ``augmentation(image=..., mask=...)`` and must return ``(image, mask)``.
    Shapes must be preserved. With ``seed`` an imgaug augmenter (or an albumentations >= 2
    ``Compose``) is re-seeded under a lock first, so the result depends only on the seed even
    when several threads share it (plain callables draw from their own generators).
    """
    if is_albumentations(augmentation):
        masks_in = list(np.moveaxis(mask.astype(np.uint8), -1, 0))
        seeded = seed is not None and hasattr(augmentation, "set_random_seed")  # albumentations >= 2
        with _SEED_LOCK if seeded else contextlib.nullcontext():
            if seeded:
                augmentation.set_random_seed(int(seed) % (2 ** 31))
            out = augmentation(image=image, masks=masks_in)
        new_image = out["image"]
        masks = out.get("masks", [])
        new_mask = (np.stack(masks, axis=-1) if len(masks) else
                    np.zeros(new_image.shape[:2] + (0,), dtype=bool)).astype(bool)
    elif is_imgaug(augmentation) or hasattr(augmentation, "to_deterministic"):
        imgaug = import_imgaug()

        def hook(images, augmenter, parents, default):
            return augmenter.__class__.__name__ in MASK_AUGMENTERS

        if seed is not None:
            with _SEED_LOCK:
                augmentation.seed_(int(seed) % (2 ** 31))
                det = augmentation.to_deterministic()
        else:
            det = augmentation.to_deterministic()
        new_image = det.augment_image(image)
        new_mask = det.augment_image(mask.astype(np.uint8), hooks=imgaug.HooksImages(activator=hook)).astype(bool)
    elif callable(augmentation):
        new_image, new_mask = augmentation(image=image, mask=mask)
        new_mask = np.asarray(new_mask).astype(bool)
    else:
        raise TypeError(f"augmentation must be an imgaug augmenter, an albumentations pipeline or a callable, "
                        f"got {type(augmentation).__name__}")
    if new_image.shape != image.shape:
        raise ValueError(f"augmentation changed the image shape {image.shape} -> {new_image.shape}; "
                         "use shape-preserving augmenters (e.g. CropAndPad with keep_size=True)")
    if new_mask.shape[:2] != mask.shape[:2]:
        raise ValueError(f"augmentation changed the mask shape {mask.shape} -> {new_mask.shape}")
    return new_image, new_mask
