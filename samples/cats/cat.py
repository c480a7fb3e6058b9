"""Cats from Open Images: download with the ``openimages`` package, fine-tune from COCO, detect.

    pip install "mask-rcnn[openimages]"        # the optional downloader
    python samples/cats/cat.py download --dataset data/cats --limit 500
    python samples/cats/cat.py train --dataset data/cats --weights coco --epochs 10
    python samples/cats/cat.py evaluate --dataset data/cats --weights last
    python samples/cats/cat.py detect --dataset data/cats --weights last --images my_photos/

Open Images gives **boxes only** for this download: every cat's mask is its filled
bounding box (rasterised from the PASCAL VOC XML the package writes). The mask head
therefore learns boxes; detections and box AP are meaningful, mask outlines are not.

Layout under ``--dataset``::

    csv/            Open Images class list and box CSVs (kept: reused by later downloads)
    openimages/cat/images/<ImageID>.jpg, openimages/cat/pascal/<ImageID>.xml
    split.json      the train/val split: seeded (``--seed``), 20% held out, fixed at download

Offline, ``download`` stops with a message saying which files to place where: the
package reads ``csv/class-descriptions-boxable.csv`` and
``csv/{train,validation,test}-annotations-bbox.csv`` when present and needs the
network for the images only.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
from typing import Dict, List, Optional, Sequence

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))

from mrcnn.config import Config  # noqa: E402
from mrcnn.data.formats import OpenImagesDataset, split_ids  # noqa: E402
from samples.common import (SampleError, build_parser, evaluate_or_detect,  # noqa: E402
                            make_config, parse_overrides, require_dataset, run_cli,
                            train_model)

LABEL = "Cat"
FOLDER = LABEL.lower()  # the package writes lower-case label folders
OPENIMAGES_DIR = "openimages"
CSV_DIR = "csv"
SPLIT_FILE = "split.json"
VAL_FRACTION = 0.2
DEFAULT_DOWNLOAD_LIMIT = 500
CSV_FILES = ("class-descriptions-boxable.csv", "train-annotations-bbox.csv",
             "validation-annotations-bbox.csv", "test-annotations-bbox.csv")


class CatConfig(Config):
    """Cats + background, fine-tuned from COCO (ResNet-101, as mask_rcnn_coco.h5)."""
    NAME = "cat"
    IMAGES_PER_GPU = 1
    NUM_CLASSES = 1 + 1
    IMAGE_MIN_DIM = 512
    IMAGE_MAX_DIM = 512
    STEPS_PER_EPOCH = 100
    VALIDATION_STEPS = 10
    DETECTION_MIN_CONFIDENCE = 0.9


# ----------------------------------------------------------------------------------------------
# Download
# ----------------------------------------------------------------------------------------------
def import_openimages():
    """``openimages.download``, or a SampleError saying how to install it."""
    try:
        import openimages.download as oi_download
    except ImportError as exc:
        raise SampleError("the cats download needs the optional 'openimages' package: "
                          "pip install 'mask-rcnn[openimages]' (or pip install openimages). "
                          f"({exc})") from exc
    return oi_download


def _network_errors() -> tuple:
    errors: List[type] = [OSError, ConnectionError]
    try:
        import requests
        errors.append(requests.exceptions.RequestException)
    except ImportError:
        pass
    try:
        import botocore.exceptions
        errors += [botocore.exceptions.BotoCoreError, botocore.exceptions.ClientError]
    except ImportError:
        pass
    return tuple(errors)


def download_cats(root: str, limit: int = DEFAULT_DOWNLOAD_LIMIT, seed: int = 0,
                  verbose: int = 1) -> Dict[str, List[str]]:
    """Download up to ``limit`` Open Images cat images + boxes into ``root`` and fix the split.

    Returns:
        The split, ``{"train": [...], "val": [...]}`` (Open Images ImageIDs).
    Raises:
        SampleError: the package is missing, or the network is unreachable (offline).
    """
    oi = import_openimages()
    csv_dir = os.path.join(root, CSV_DIR)
    dest = os.path.join(root, OPENIMAGES_DIR)
    os.makedirs(csv_dir, exist_ok=True)
    os.makedirs(dest, exist_ok=True)
    try:
        oi.download_dataset(dest_dir=dest, class_labels=[LABEL], annotation_format="pascal",
                            csv_dir=csv_dir, limit=limit or None)
    except _network_errors() as exc:
        _remove_empty_images(os.path.join(dest, FOLDER, "images"))
        missing = [f for f in CSV_FILES if not os.path.isfile(os.path.join(csv_dir, f))]
        raise SampleError(
            f"could not download Open Images cats ({type(exc).__name__}: {exc}).\n"
            "Offline? The openimages package needs the network for the images (Amazon S3) and, "
            f"unless present, for the CSVs. Missing CSVs in {csv_dir}: {missing or 'none'}. "
            f"Copy a previously downloaded '{root}' folder here, or run this command on a machine "
            "with internet access and copy the folder over.") from exc
    _remove_empty_images(os.path.join(dest, FOLDER, "images"))
    split = write_split(root, seed=seed, verbose=verbose)
    if verbose:
        report = load_subset(root, "all", seed).load_report
        print(f"{report.kept['instances']} cats; their masks are the filled boxes of the "
              "PASCAL XML (Open Images has no outlines for this download)")
    return split


def _remove_empty_images(folder: str) -> None:
    """Drop 0-byte files a failed S3 transfer leaves behind."""
    if not os.path.isdir(folder):
        return
    for name in os.listdir(folder):
        path = os.path.join(folder, name)
        if os.path.isfile(path) and os.path.getsize(path) == 0:
            os.remove(path)


def image_keys(root: str) -> List[str]:
    """ImageIDs that have both a picture and a PASCAL XML."""
    base = os.path.join(root, OPENIMAGES_DIR, FOLDER)
    xml_dir, image_dir = os.path.join(base, "pascal"), os.path.join(base, "images")
    if not os.path.isdir(xml_dir):
        raise SampleError(f"{root!r} has no {os.path.join(OPENIMAGES_DIR, FOLDER, 'pascal')} folder: "
                          "run the 'download' command first")
    images = {os.path.splitext(f)[0] for f in os.listdir(image_dir)} if os.path.isdir(image_dir) else set()
    return sorted(os.path.splitext(f)[0] for f in os.listdir(xml_dir)
                  if f.endswith(".xml") and os.path.splitext(f)[0] in images)


def write_split(root: str, seed: int = 0, val_fraction: float = VAL_FRACTION,
                verbose: int = 1) -> Dict[str, List[str]]:
    """Seeded train/val split of the downloaded ImageIDs, saved to ``split.json``.

    The split depends only on the set of ids, ``seed`` and ``val_fraction``.
    """
    keys = image_keys(root)
    if not keys:
        raise SampleError(f"no cat image with annotations under {root!r}")
    train, val = split_ids(keys, val_fraction=val_fraction, seed=seed)
    split = {"seed": seed, "val_fraction": val_fraction, "train": train, "val": val}
    with open(os.path.join(root, SPLIT_FILE), "w") as f:
        json.dump(split, f, indent=1)
    if verbose:
        print(f"{len(keys)} cat images: {len(train)} train, {len(val)} val -> {os.path.join(root, SPLIT_FILE)}")
    return split


def read_split(root: str, seed: int = 0) -> Dict[str, List[str]]:
    """``split.json`` (written by ``download``), else a fresh split written now."""
    path = os.path.join(root, SPLIT_FILE)
    if not os.path.isfile(path):
        return write_split(root, seed=seed, verbose=0)
    with open(path) as f:
        return json.load(f)


# ----------------------------------------------------------------------------------------------
# Dataset
# ----------------------------------------------------------------------------------------------
class CatDataset(OpenImagesDataset):
    """The downloaded cats; masks are the filled boxes (see the module docstring)."""

    def load_cats(self, root: str, subset: str, seed: int = 0) -> None:
        """Add the ``"train"``, ``"val"`` or ``"all"`` images of ``root``."""
        if subset not in ("train", "val", "all"):
            raise ValueError(f"subset must be 'train', 'val' or 'all', got {subset!r}")
        self.load_openimages(os.path.join(root, OPENIMAGES_DIR), labels=[FOLDER])
        if subset != "all":
            # load_openimages has no split option: keep this subset's images only.
            keep = set(read_split(root, seed)[subset])
            self.image_info = [info for info in self.image_info if str(info["id"]) in keep]


def load_subset(root: str, subset: str, seed: int = 0) -> CatDataset:
    dataset = CatDataset()
    try:
        dataset.load_cats(root, subset, seed)
    except FileNotFoundError as exc:
        raise SampleError(f"{exc}: run the 'download' command first") from exc
    dataset.prepare()
    if not len(dataset.image_ids):
        raise SampleError(f"{root}: no {subset} cat image ({dataset.load_report.summary()})")
    return dataset


# ----------------------------------------------------------------------------------------------
# Commands
# ----------------------------------------------------------------------------------------------
def make_parser() -> argparse.ArgumentParser:
    return build_parser("cat.py", __doc__.split("\n\n")[0],
                        dataset_help="folder of the cats download (created by 'download')",
                        default_limit=DEFAULT_DOWNLOAD_LIMIT)


def main_args(args: argparse.Namespace) -> int:
    config = make_config(CatConfig, parse_overrides(args.overrides))
    if args.command == "download":
        require_dataset(args, "where to put the cats")
        download_cats(args.dataset, limit=args.limit, seed=args.seed, verbose=args.verbose)
        return 0
    require_dataset(args, "the cats download folder")
    if args.command == "train":
        train_model(args, config, load_subset(args.dataset, "train", args.seed),
                    load_subset(args.dataset, "val", args.seed))
        return 0
    val = load_subset(args.dataset, "val", args.seed)
    return evaluate_or_detect(args, config, val, "cat")


def main(argv: Optional[Sequence[str]] = None) -> int:
    return run_cli(main_args, make_parser(), argv)


if __name__ == "__main__":
    sys.exit(main())
