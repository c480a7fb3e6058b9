"""White blood cells (LISC layout): five leukocyte classes, trained from scratch on a CPU.

    python samples/lisc/lisc.py train --dataset "LISC Database" --weights none --epochs 30 --augment
    python samples/lisc/lisc.py evaluate --dataset "LISC Database" --weights last
    python samples/lisc/lisc.py detect --dataset "LISC Database" --weights last --out wbc_pictures

``--dataset`` is a folder in LISC's layout (``Main Dataset/<class>/<n>.bmp`` and
``Ground Truth Segmentation/<class>/areaforexpert1/<n>_expert.bmp``), read by
:class:`mrcnn.data.formats.LiscDataset`: one instance per connected cell of the expert
mask (nucleus + cytoplasm), tiny specks dropped, the ``mixt`` folder skipped (no class
per cell). Classes: basophil, eosinophil, lymphocyte, monocyte, neutrophil.

The held-out split is reproducible: a seeded (``--seed``) split stratified by class,
``--val-fraction`` (20%) of each class held out, so rare basophils are on both sides.
``train`` never sees the held-out images; ``evaluate`` reports VOC mask mAP@0.5 on them.

LISC may not be redistributed; ``shared/tools/make_lisc_layout.py OUT`` writes the
leukocytes of Zheng et al. 2018 in the same layout for trying this sample.
The default configuration is small enough to train from scratch on a laptop CPU
(a compact backbone, 256x256, narrow FPN and heads, Adam).
"""
from __future__ import annotations

import argparse
import os
import sys
from typing import Optional, Sequence

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))

from mrcnn.config import Config  # noqa: E402
from mrcnn.data.formats import LISC_CLASSES, LiscDataset  # noqa: E402
from mrcnn.modeling.compact import CompactModel  # noqa: E402
from samples.common import (SampleError, build_parser, evaluate_or_detect,  # noqa: E402
                            make_config, parse_overrides, require_dataset, run_cli,
                            train_model)

VAL_FRACTION = 0.2


class LiscConfig(CompactModel, Config):
    """Five leukocyte classes + background; one or a few large cells per image.

    Sized to train from scratch on a CPU with the compact model
    (:class:`mrcnn.modeling.compact.CompactModel`: small backbone, 64-channel FPN, RPN conv
    and mask head; Matterport's ResNet widths would need a GPU or pretrained weights).
    ``--set BACKBONE='resnet50'`` together with Matterport's widths (``--set
    RPN_CONV_CHANNELS=512 --set MASK_HEAD_CHANNELS=256 --set TOP_DOWN_PYRAMID_SIZE=256``)
    gives the ResNet model that ``--weights coco`` fits.
    """
    NAME = "lisc"
    IMAGES_PER_GPU = 4
    NUM_CLASSES = 1 + len(LISC_CLASSES)
    IMAGE_MIN_DIM = 256
    IMAGE_MAX_DIM = 256
    # Cells cover a quarter to most of a 256 px image: no need for the 32 px anchors of COCO.
    RPN_ANCHOR_SCALES = (16, 32, 64, 128, 256)
    MAX_GT_INSTANCES = 10
    DETECTION_MAX_INSTANCES = 10
    DETECTION_MIN_CONFIDENCE = 0.5
    STEPS_PER_EPOCH = 50
    VALIDATION_STEPS = 5
    # Adam (the sample's default --optimizer) from scratch; 1e-3 is its usual rate.
    LEARNING_RATE = 0.001


def cell_augmentation():
    """Flips and quarter turns: a smear has no up, down, left or right (``--augment``).

    Turns are ``Affine`` rotations (applied to the masks too, unlike ``Rot90``, which is
    not one of the mask-safe augmenters); they keep the image size, so on non-square
    images the corners are cut, where LISC has background only.
    """
    from mrcnn.data.augment import import_imgaug
    iaa = import_imgaug().augmenters
    turns = iaa.OneOf([iaa.Affine(rotate=angle) for angle in (0, 90, 180, 270)])
    return iaa.Sequential([iaa.Fliplr(0.5), iaa.Flipud(0.5), turns])


def load_subset(root: str, subset: str, seed: int = 0, val_fraction: float = VAL_FRACTION,
                limit: int = 0) -> LiscDataset:
    """Prepared LISC ``subset`` (``"train"``, ``"val"`` or ``"all"``), ``limit`` images at most."""
    dataset = LiscDataset()
    try:
        dataset.load_lisc(root, subset=subset, val_fraction=val_fraction, seed=seed)
    except FileNotFoundError as exc:
        raise SampleError(str(exc)) from exc
    if limit:
        dataset.image_info = dataset.image_info[:limit]
    dataset.prepare()
    if not len(dataset.image_ids):
        raise SampleError(f"{root}: no {subset} image with an expert mask "
                          f"({dataset.load_report.summary()})")
    return dataset


def make_parser() -> argparse.ArgumentParser:
    parser = build_parser("lisc.py", __doc__.split("\n\n")[0],
                          dataset_help="folder in LISC's layout (holds 'Main Dataset' and "
                                       "'Ground Truth Segmentation')",
                          default_weights="none", default_epochs=30, default_optimizer="adam")
    parser.add_argument("--val-fraction", type=float, default=VAL_FRACTION,
                        help="share of each class held out for evaluation (default: %(default)s)")
    return parser


def main_args(args: argparse.Namespace) -> int:
    config = make_config(LiscConfig, parse_overrides(args.overrides))
    if args.command == "download":
        raise SampleError("LISC cannot be downloaded automatically: its terms forbid redistribution. "
                          "Ask its authors for 'LISC Database' and pass that folder as --dataset "
                          "(or build a stand-in with shared/tools/make_lisc_layout.py OUT).")
    require_dataset(args, "a folder in LISC's layout")
    if args.command == "train":
        train = load_subset(args.dataset, "train", args.seed, args.val_fraction)
        val = load_subset(args.dataset, "val", args.seed, args.val_fraction)
        print(f"LISC: {len(train.image_ids)} train / {len(val.image_ids)} held-out images")
        train_model(args, config, train, val, augmentation=cell_augmentation())
        return 0
    val = load_subset(args.dataset, "val", args.seed, args.val_fraction)
    return evaluate_or_detect(args, config, val, "lisc")


def main(argv: Optional[Sequence[str]] = None) -> int:
    return run_cli(main_args, make_parser(), argv)


if __name__ == "__main__":
    sys.exit(main())
