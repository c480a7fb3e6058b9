"""Mask R-CNN on MS COCO (or any COCO-format instances JSON): train, evaluate, detect, download.

    # fetch COCO 2017 (images.cocodataset.org; progress bar; resumable per archive)
    python samples/coco/coco.py download --dataset /data/coco --year 2017
    # fine-tune from Matterport's COCO weights, evaluate boxes and masks with COCOeval
    python samples/coco/coco.py train --dataset /data/coco --year 2017 --weights coco --epochs 40
    python samples/coco/coco.py evaluate --dataset /data/coco --year 2017 --weights last --limit 500

``--dataset`` may be

- COCO's own layout: ``annotations/instances_<subset><year>.json`` and ``<subset><year>/``
  image folders (``minival``/``valminusminival`` 2014 use the ``val2014`` images), or
- a folder holding one COCO JSON (``annotations.json``, or the only ``*.json``) with the
  images in ``images/`` or beside it, or that JSON file itself. Such a folder has no
  train/val split: a seeded 80/20 split of its annotated images is used (``--seed``).

Evaluation reports COCO box AND mask AP (Matterport's script did boxes only).
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import zipfile
from typing import Any, Dict, List, Optional, Sequence, Tuple

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))

from mrcnn.config import Config  # noqa: E402
from mrcnn.data.formats import CocoDataset as _FormatsCocoDataset  # noqa: E402
from mrcnn.evaluation.coco import build_coco_results  # noqa: E402,F401  (Matterport's name, kept here)
from samples.common import (SampleError, build_parser, inference_model,  # noqa: E402
                            make_config, parse_overrides, require_dataset, run_cli, run_detect,
                            train_model)

DEFAULT_DATASET_YEAR = "2017"
DEFAULT_DATA_URL = "http://images.cocodataset.org"
#: Matterport's links for the 2014 minival split (COCO itself never hosted it).
MINIVAL_URLS = {
    "minival": "https://dl.dropboxusercontent.com/s/o43o90bna78omob/instances_minival2014.json.zip?dl=0",
    "valminusminival": "https://dl.dropboxusercontent.com/s/s3tw5zcg7395368/"
                       "instances_valminusminival2014.json.zip?dl=0",
}
VAL_FRACTION = 0.2


class CocoConfig(Config):
    """Matterport's CocoConfig: 80 COCO classes + background, two images per GPU."""
    NAME = "coco"
    IMAGES_PER_GPU = 2
    NUM_CLASSES = 1 + 80


# ----------------------------------------------------------------------------------------------
# Data
# ----------------------------------------------------------------------------------------------
def coco_files(dataset_dir: str, subset: str, year: str) -> Tuple[str, str, bool]:
    """Locate ``(annotation_json, image_dir, is_single_file)`` for ``subset`` under ``dataset_dir``.

    Raises:
        SampleError: neither layout is found (the message lists what was looked for).
    """
    if os.path.isfile(dataset_dir) and dataset_dir.endswith(".json"):
        folder = os.path.dirname(os.path.abspath(dataset_dir))
        return dataset_dir, _image_dir_beside(folder), True
    official = os.path.join(dataset_dir, "annotations", f"instances_{subset}{year}.json")
    if os.path.isfile(official):
        image_subset = "val" if subset in ("minival", "valminusminival") else subset
        return official, os.path.join(dataset_dir, f"{image_subset}{year}"), False
    single = os.path.join(dataset_dir, "annotations.json")
    jsons = sorted(f for f in os.listdir(dataset_dir) if f.endswith(".json")) if os.path.isdir(dataset_dir) else []
    if os.path.isfile(single) or len(jsons) == 1:
        path = single if os.path.isfile(single) else os.path.join(dataset_dir, jsons[0])
        return path, _image_dir_beside(dataset_dir), True
    raise SampleError(f"{dataset_dir!r} is not a COCO folder: no {official} and no single COCO JSON "
                      "(annotations.json) inside. Run the 'download' command or point --dataset at "
                      "a COCO JSON.")


def _image_dir_beside(folder: str) -> str:
    images = os.path.join(folder, "images")
    return images if os.path.isdir(images) else folder


def load_coco_subset(dataset_dir: str, subset: str, year: str = DEFAULT_DATASET_YEAR,
                     seed: int = 0, limit: int = 0, val_fraction: float = VAL_FRACTION,
                     class_names: Optional[Sequence[str]] = None):
    """A prepared :class:`mrcnn.data.formats.CocoDataset` of ``subset`` and its ``COCO`` object.

    In a single-JSON folder ``subset`` ``"train"``/``"val"`` is a seeded split of the
    images that have annotations; ``"all"`` keeps every annotated image.
    ``class_names``: keep only these categories (by name; default all but background).
    """
    from mrcnn.data.formats import CocoDataset, split_ids

    path, image_dir, single = coco_files(dataset_dir, subset, year)
    try:
        with open(path) as f:
            data = json.load(f)
    except (OSError, json.JSONDecodeError) as exc:
        raise SampleError(f"cannot read COCO JSON {path!r}: {exc}") from exc
    class_ids = _category_ids(data, class_names, path) if class_names else None
    image_ids = None
    if single and subset != "all":
        annotated = sorted({a["image_id"] for a in data.get("annotations", [])
                            if class_ids is None or a.get("category_id") in class_ids})
        train, val = split_ids(annotated, val_fraction=val_fraction, seed=seed)
        image_ids = train if subset == "train" else val  # val, minival, ...: the held-out part
    dataset = CocoDataset()
    try:
        coco = dataset.load_coco(data, image_dir=image_dir, image_ids=image_ids, limit=limit or None,
                                 class_ids=class_ids, return_coco=True)
    except ValueError as exc:
        raise SampleError(f"{path}: {exc}") from exc
    dataset.prepare()
    if not len(dataset.image_ids):
        raise SampleError(f"{path}: no usable image for subset {subset!r} "
                          f"({dataset.load_report.summary()})")
    return dataset, coco


def _category_ids(data: Dict[str, Any], names: Sequence[str], path: str) -> List[int]:
    by_name = {c["name"]: c["id"] for c in data.get("categories", [])}
    unknown = [n for n in names if n not in by_name]
    if unknown:
        raise SampleError(f"{path}: no category named {unknown}; categories are {sorted(by_name)}")
    return [by_name[n] for n in names]


def train_val_subsets(dataset_dir: str, year: str) -> Tuple[List[str], str]:
    """Matterport's choice: train (+ valminusminival for 2014) vs minival (2014) or val."""
    if year == "2014" and os.path.isfile(os.path.join(dataset_dir, "annotations",
                                                      "instances_minival2014.json")):
        return ["train", "valminusminival"], "minival"
    return ["train"], "val"


def load_training_data(dataset_dir: str, year: str, seed: int):
    """Prepared (train, val) datasets; several train subsets are merged into one dataset."""
    from mrcnn.data.formats import CocoDataset

    train_subsets, val_subset = train_val_subsets(dataset_dir, year)
    parts = []
    for s in train_subsets:
        try:
            parts.append(load_coco_subset(dataset_dir, s, year, seed)[0])
        except SampleError:
            if s == train_subsets[0]:
                raise
    if len(parts) == 1:
        train = parts[0]
    else:
        train = CocoDataset()
        for part in parts:
            for c in part.class_info[1:]:
                train.add_class(c["source"], c["id"], c["name"])
            for info in part.image_info:
                train.add_image(**{k: v for k, v in info.items() if k not in ("source", "id", "path")},
                                source=info["source"], image_id=info["id"], path=info["path"])
        train.prepare()
    val = load_coco_subset(dataset_dir, val_subset, year, seed)[0]
    return train, val


class CocoDataset(_FormatsCocoDataset):
    """Matterport's ``samples/coco/coco.py`` dataset class, on the package's COCO loader.

    ``load_coco(dataset_dir, subset, year)`` reads COCO's own layout as Matterport's did
    (``auto_download=True`` fetches missing parts first); called with a JSON path (or
    dict) and no ``subset`` it is :meth:`mrcnn.data.formats.CocoDataset.load_coco`.
    """

    def load_coco(self, dataset_dir, subset: Optional[str] = None, year: str = DEFAULT_DATASET_YEAR,
                  class_ids: Optional[Sequence[int]] = None, class_map: Any = None,
                  return_coco: bool = False, auto_download: bool = False, **kwargs: Any) -> Any:
        if subset is None:
            return super().load_coco(dataset_dir, class_ids=class_ids, return_coco=return_coco, **kwargs)
        if auto_download:
            download_coco(dataset_dir, subset, year)
        path, image_dir, _ = coco_files(dataset_dir, subset, year)
        return super().load_coco(path, image_dir, class_ids=class_ids, return_coco=return_coco, **kwargs)


def evaluate_coco(model, dataset, coco, eval_type: str = "bbox", limit: int = 0,
                  image_ids: Optional[Sequence[int]] = None) -> Dict[str, float]:
    """Matterport's helper: detect on ``limit`` images and run COCOeval for ``eval_type``
    (``"bbox"`` or ``"segm"``). Returns the stats dict (AP, AP50, ...)."""
    from mrcnn.evaluation.coco import evaluate_model_coco
    return evaluate_model_coco(model, dataset, coco, iou_types=(eval_type,), limit=limit,
                               image_ids=image_ids)[eval_type]


# ----------------------------------------------------------------------------------------------
# Download
# ----------------------------------------------------------------------------------------------
def download_coco(dataset_dir: str, subset: str, year: str, base_url: Optional[str] = None,
                  verbose: int = 1) -> Tuple[str, str]:
    """Download and unpack the images and annotations of ``subset`` ``year`` into ``dataset_dir``.

    Archives come from ``base_url`` (default ``$MRCNN_COCO_DATA_URL`` or
    images.cocodataset.org) through :func:`mrcnn.io.download.download_file` (progress
    bar, atomic write); each is deleted once unpacked. Parts already present are skipped.

    Returns:
        ``(annotation_json, image_dir)``.
    Raises:
        SampleError: the download failed (offline: says where to get the files).
    """
    from mrcnn.io.download import DownloadError, download_file

    base = (base_url or os.environ.get("MRCNN_COCO_DATA_URL") or DEFAULT_DATA_URL).rstrip("/")
    image_subset = "val" if subset in ("minival", "valminusminival") else subset
    image_dir = os.path.join(dataset_dir, f"{image_subset}{year}")
    ann_file = os.path.join(dataset_dir, "annotations", f"instances_{subset}{year}.json")
    os.makedirs(dataset_dir, exist_ok=True)
    jobs = []
    if not os.path.isdir(image_dir) or not os.listdir(image_dir):
        jobs.append((f"{base}/zips/{image_subset}{year}.zip", dataset_dir, f"{image_subset}{year} images"))
    if not os.path.isfile(ann_file):
        if subset in MINIVAL_URLS and year == "2014" and not os.environ.get("MRCNN_COCO_DATA_URL") \
                and base_url is None:
            url = MINIVAL_URLS[subset]
        elif subset in MINIVAL_URLS:
            url = f"{base}/annotations/instances_{subset}{year}.json.zip"
        else:
            url = f"{base}/annotations/annotations_trainval{year}.zip"
        target = os.path.join(dataset_dir, "annotations") if subset in MINIVAL_URLS else dataset_dir
        jobs.append((url, target, f"{subset}{year} annotations"))
    for url, target, what in jobs:
        archive = os.path.join(dataset_dir, "downloads", os.path.basename(url.split("?")[0]))
        try:
            download_file(url, archive, progress=verbose > 0, what=what)
        except DownloadError as exc:
            raise SampleError(
                f"could not download COCO {what}.\n{exc}\nOffline: fetch {url} elsewhere and unpack it "
                f"into {target} (COCO layout: annotations/instances_<subset><year>.json and "
                f"<subset><year>/*.jpg), or point --dataset at a folder with a COCO JSON and its "
                "images.") from exc
        if verbose:
            print(f"Unpacking {archive} into {target}")
        try:
            with zipfile.ZipFile(archive) as z:
                z.extractall(target)
        except zipfile.BadZipFile as exc:
            raise SampleError(f"{archive} (from {url}) is not a zip archive: {exc}") from exc
        os.remove(archive)
    if not os.path.isfile(ann_file):
        raise SampleError(f"after download, {ann_file} is still missing: the archive had another layout")
    return ann_file, image_dir


# ----------------------------------------------------------------------------------------------
# Commands
# ----------------------------------------------------------------------------------------------
def make_parser() -> argparse.ArgumentParser:
    parser = build_parser(
        "coco.py", __doc__.split("\n\n")[0],
        dataset_help="COCO root (annotations/instances_<subset><year>.json + <subset><year>/), or a "
                     "folder with one COCO JSON and its images, or the JSON itself",
        default_limit=500)
    parser.add_argument("--year", default=DEFAULT_DATASET_YEAR, choices=["2014", "2017"],
                        help="COCO release (default: %(default)s)")
    parser.add_argument("--subset", default=None,
                        help="evaluate/detect/download: subset (default: evaluate/detect 'val' "
                             "('minival' for 2014 when present); download 'train,val')")
    return parser


def config_for(dataset, overrides: Dict[str, Any]) -> CocoConfig:
    """CocoConfig with NUM_CLASSES taken from the dataset's categories."""
    return make_config(CocoConfig, overrides, NUM_CLASSES=dataset.num_classes)


def _eval_subset(args: argparse.Namespace) -> str:
    if args.subset:
        return args.subset
    return train_val_subsets(args.dataset, args.year)[1]


def main_args(args: argparse.Namespace) -> int:
    overrides = parse_overrides(args.overrides)
    if args.command == "download":
        require_dataset(args, "where to put COCO")
        for subset in (args.subset or "train,val").split(","):
            ann, images = download_coco(args.dataset, subset.strip(), args.year, verbose=args.verbose)
            print(f"COCO {subset}{args.year}: {ann}, {images}")
        return 0
    require_dataset(args, "COCO root or a folder with a COCO JSON")
    if args.command == "train":
        train, val = load_training_data(args.dataset, args.year, args.seed)
        config = config_for(train, overrides)
        print(f"COCO training: {len(train.image_ids)} train / {len(val.image_ids)} val images, "
              f"{config.NUM_CLASSES} classes")
        train_model(args, config, train, val)
        return 0
    dataset, coco = load_coco_subset(args.dataset, _eval_subset(args), args.year, args.seed)
    config = config_for(dataset, overrides)
    if args.command == "evaluate":
        from mrcnn.evaluation.coco import evaluate_model_coco
        # Matterport evaluates with every detection kept, whatever its score.
        model = inference_model(args, config, DETECTION_MIN_CONFIDENCE=0.0)
        stats = evaluate_model_coco(model, dataset, coco, iou_types=("bbox", "segm"), limit=args.limit,
                                    verbose=args.verbose > 0)
        for kind in ("bbox", "segm"):
            print(f"COCO {kind}: AP={stats[kind]['AP']:.4f} AP50={stats[kind]['AP50']:.4f} "
                  f"AP75={stats[kind]['AP75']:.4f}")
        return 0
    run_detect(args, config, dataset.class_names, dataset=dataset, sample="coco")
    return 0


def main(argv: Optional[Sequence[str]] = None) -> int:
    return run_cli(main_args, make_parser(), argv)


if __name__ == "__main__":
    sys.exit(main())
