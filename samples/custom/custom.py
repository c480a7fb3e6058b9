"""Your own classes: LabelMe polygons or a COCO JSON (e.g. from labelme2coco), fine-tuned from COCO.

    # a folder of LabelMe JSON files (one per image, images beside them)
    python samples/custom/custom.py train --dataset my_labelme/ --weights coco --epochs 20
    # a COCO JSON (labelme2coco output or any COCO instances file) and its images
    python samples/custom/custom.py train --dataset my_coco/annotations.json --weights coco
    python samples/custom/custom.py evaluate --dataset my_labelme/ --weights last
    python samples/custom/custom.py detect --dataset my_labelme/ --weights last --images new_photos/

Classes are discovered from the annotations (LabelMe labels sorted by name; COCO
categories in id order, a ``_background_`` category dropped), or chosen with
``--classes car,sign board``. ``NUM_CLASSES`` follows, and with ``--weights coco`` the
four class-specific head layers are skipped automatically because mask_rcnn_coco.h5 has
81 classes. A seeded 80/20 split (``--seed``, ``--val-fraction``) holds images out for
``evaluate`` (VOC mask mAP@0.5). Walkthrough: samples/README.md.
"""
from __future__ import annotations

import argparse
import glob
import json
import os
import sys
from typing import List, Optional, Sequence

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))

from mrcnn.config import Config  # noqa: E402
from samples.common import (SampleError, build_parser, evaluate_or_detect,  # noqa: E402
                            make_config, parse_overrides, require_dataset, run_cli,
                            train_model)

VAL_FRACTION = 0.2
FORMATS = ("auto", "labelme", "coco")


class CustomConfig(Config):
    """Defaults for fine-tuning mask_rcnn_coco.h5 (ResNet-101) on a few hundred images.

    NUM_CLASSES is set from the dataset at run time.
    """
    NAME = "custom"
    IMAGES_PER_GPU = 1
    NUM_CLASSES = 1 + 1
    IMAGE_MIN_DIM = 512
    IMAGE_MAX_DIM = 512
    STEPS_PER_EPOCH = 100
    VALIDATION_STEPS = 10
    DETECTION_MIN_CONFIDENCE = 0.7


def detect_format(path: str) -> str:
    """``"coco"`` for a JSON file or a folder with ``annotations.json``; ``"labelme"`` for a
    folder of LabelMe files (JSON with a ``shapes`` key).

    Raises:
        SampleError: neither fits.
    """
    if os.path.isfile(path):
        if path.endswith(".json"):
            with open(path) as f:
                data = json.load(f)
            if isinstance(data, dict) and "annotations" in data and "images" in data:
                return "coco"
            if isinstance(data, dict) and "shapes" in data:
                return "labelme"
        raise SampleError(f"{path!r} is neither a COCO JSON nor a LabelMe JSON")
    if os.path.isfile(os.path.join(path, "annotations.json")):
        return "coco"
    for candidate in sorted(glob.glob(os.path.join(path, "*.json")))[:5]:
        try:
            with open(candidate) as f:
                if "shapes" in json.load(f):
                    return "labelme"
        except (OSError, ValueError):
            continue
    raise SampleError(f"{path!r}: found neither annotations.json (COCO) nor LabelMe *.json files; "
                      "pass --format")


def used_categories(json_path: str) -> List[str]:
    """Names of the COCO categories that have at least one annotation, in id order.

    Converters such as labelme2coco list every label of their label file; classes that
    never occur would only waste outputs of the heads.
    """
    with open(json_path) as f:
        data = json.load(f)
    used = {a.get("category_id") for a in data.get("annotations", [])}
    from mrcnn.data.formats.coco import BACKGROUND_CATEGORY_NAMES
    return [c["name"] for c in sorted(data.get("categories", []), key=lambda c: c["id"])
            if c["id"] in used and c["name"] not in BACKGROUND_CATEGORY_NAMES]


def load_subset(path: str, fmt: str, subset: str, class_names: Optional[List[str]] = None,
                seed: int = 0, val_fraction: float = VAL_FRACTION):
    """A prepared dataset of ``subset`` (``"train"``, ``"val"``, ``"all"``) in format ``fmt``."""
    if fmt == "auto":
        fmt = detect_format(path)
    if fmt == "coco":
        from samples.coco.coco import coco_files, load_coco_subset
        if class_names is None:
            class_names = used_categories(coco_files(path, subset, "")[0])
        return load_coco_subset(path, subset, seed=seed, val_fraction=val_fraction,
                                class_names=class_names)[0]
    from mrcnn.data.formats import LabelMeDataset
    dataset = LabelMeDataset()
    try:
        dataset.load_labelme(path, class_names=class_names, subset=None if subset == "all" else subset,
                             val_fraction=val_fraction, seed=seed, skip_empty=True)
    except FileNotFoundError as exc:
        raise SampleError(str(exc)) from exc
    dataset.prepare()
    if not len(dataset.image_ids):
        raise SampleError(f"{path}: no {subset} image with an instance ({dataset.load_report.summary()})")
    return dataset


def make_parser() -> argparse.ArgumentParser:
    parser = build_parser("custom.py", __doc__.split("\n\n")[0],
                          dataset_help="a folder of LabelMe JSON files, or a COCO JSON (or a folder "
                                       "holding annotations.json)")
    parser.add_argument("--format", choices=FORMATS, default="auto",
                        help="annotation format (default: %(default)s, detected from --dataset)")
    parser.add_argument("--classes", default=None,
                        help="comma-separated class names to keep (LabelMe: class ids in this "
                             "order; COCO: in category-id order) (default: every label found)")
    parser.add_argument("--val-fraction", type=float, default=VAL_FRACTION,
                        help="share of images held out for evaluate (default: %(default)s)")
    return parser


def main_args(args: argparse.Namespace) -> int:
    if args.command == "download":
        raise SampleError("custom datasets are yours: there is nothing to download. "
                          "See samples/README.md for how to annotate with LabelMe.")
    require_dataset(args, "LabelMe folder or COCO JSON")
    classes = [c.strip() for c in args.classes.split(",") if c.strip()] if args.classes else None

    def subset(name: str):
        return load_subset(args.dataset, args.format, name, classes, args.seed, args.val_fraction)

    val = subset("val")
    config = make_config(CustomConfig, parse_overrides(args.overrides), NUM_CLASSES=val.num_classes)
    if args.verbose:
        print(f"classes: {', '.join(val.class_names[1:])}")
    if args.command == "train":
        train = subset("train")
        train_model(args, config, train, val)
        return 0
    return evaluate_or_detect(args, config, val, "custom")


def main(argv: Optional[Sequence[str]] = None) -> int:
    return run_cli(main_args, make_parser(), argv)


if __name__ == "__main__":
    sys.exit(main())
