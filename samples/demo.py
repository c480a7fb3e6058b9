"""Detect objects in every image of a folder and save pictures and JSON of the detections.

    python samples/demo.py --images photos/ --out detections/                # COCO weights, 80 classes
    python samples/demo.py --images cells/ --config lisc --weights logs/lisc.../mask_rcnn_lisc_0030.h5
    python samples/demo.py --images shop/ --classes car,"sign board" --weights my_weights.h5

For each image ``<name>`` the output folder gets ``<name>.png`` (boxes, labels, scores and
masks drawn by ``mrcnn.visualize.display_instances``) and ``<name>.json`` (boxes as pixel
``[y1, x1, y2, x2]``, class names, scores, masks as COCO RLE). ``coco_results.json`` holds
every detection in COCO's results format (``image_id`` = position in ``images.json``,
``category_id`` = the model's class id).

``--weights coco`` (the default) uses mask_rcnn_coco.h5 from ``$MRCNN_COCO_WEIGHTS``, the
working folder or ``~/.keras/models``, else downloads it; see mask_rcnn_coco.h5.txt.
samples/demo.ipynb runs the same steps as a notebook.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
from typing import Any, Dict, List, Optional, Sequence, Tuple

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from samples.common import (COCO_CLASS_NAMES, SampleError, detect_and_save, inference_config,  # noqa: E402
                            list_images, make_config, parse_overrides, read_image_files,
                            resolve_weights)

CONFIGS = ("coco", "lisc", "cat")


def config_and_names(config: str = "coco", classes: Optional[Sequence[str]] = None,
                     overrides: Optional[Dict[str, Any]] = None) -> Tuple[Any, List[str]]:
    """The inference config and class names (index = class id, 0 = ``"BG"``).

    config: a sample name (``coco``, ``lisc``, ``cat``) or a JSON file of config values
        (as written by ``Config.to_json()``) applied on top of the COCO config.
    classes: class names without background; sets NUM_CLASSES to ``1 + len(classes)``.
    """
    from samples.coco.coco import CocoConfig
    values: Dict[str, Any] = {}
    if config == "coco":
        base, names = CocoConfig, list(COCO_CLASS_NAMES)
    elif config == "lisc":
        from mrcnn.data.formats import LISC_CLASSES
        from samples.lisc.lisc import LiscConfig
        base, names = LiscConfig, ["BG"] + list(LISC_CLASSES)
    elif config == "cat":
        from samples.cats.cat import CatConfig
        base, names = CatConfig, ["BG", "cat"]
    elif os.path.isfile(config):
        from mrcnn.config import DERIVED
        with open(config) as f:
            values = {k: v for k, v in json.load(f).items() if k not in DERIVED and k.isupper()}
        base = CocoConfig
        names = ["BG"] + [f"class {i}" for i in range(1, int(values.get("NUM_CLASSES", 81)))]
        if int(values.get("NUM_CLASSES", 81)) == len(COCO_CLASS_NAMES):
            names = list(COCO_CLASS_NAMES)
    else:
        raise SampleError(f"--config {config!r}: use one of {', '.join(CONFIGS)} or a JSON file of "
                          "config values")
    if classes:
        names = ["BG"] + [c for c in classes]
        values["NUM_CLASSES"] = len(names)
    values.update(overrides or {})
    cfg = make_config(base, values)
    if cfg.NUM_CLASSES != len(names):
        raise SampleError(f"NUM_CLASSES is {cfg.NUM_CLASSES} but there are {len(names)} class names "
                          "(BG included); pass --classes")
    return inference_config(cfg), names


def run_demo(images: str, weights: str = "coco", out: str = "demo_output", config: str = "coco",
             classes: Optional[Sequence[str]] = None, overrides: Optional[Dict[str, Any]] = None,
             limit: int = 0, logs: str = "logs", verbose: int = 1) -> Dict[str, Any]:
    """Load the model and weights, detect on every image of ``images``, write to ``out``.

    Returns:
        ``{"images": [...], "results": [...], "class_names": [...], "out": out}``.
    """
    import mrcnn.model as modellib

    paths = list_images(images, limit)
    cfg, names = config_and_names(config, classes, overrides)
    model = modellib.MaskRCNN(mode="inference", config=cfg, model_dir=logs)
    resolve_weights(model, weights, verbose=verbose)
    result = detect_and_save(model, read_image_files(paths), names, out, verbose=verbose)
    if verbose:
        print(f"Wrote {len(paths)} pictures, their JSON and coco_results.json to {out}")
    return dict(result, class_names=names, out=out)


def make_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="demo.py", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--images", metavar="DIR", required=True, help="folder of images to run on")
    parser.add_argument("--weights", metavar="{coco,last,PATH}", default="coco",
                        help="weights: 'coco' (mask_rcnn_coco.h5, downloaded if missing), 'last' "
                             "(newest checkpoint of --config under --logs) or an .h5 path "
                             "(default: %(default)s)")
    parser.add_argument("--out", metavar="DIR", default="demo_output",
                        help="output folder for pictures and JSON (default: %(default)s)")
    parser.add_argument("--config", default="coco",
                        help="model configuration and class names: coco (80 COCO classes), lisc, cat, "
                             "or a JSON file of config values (default: %(default)s)")
    parser.add_argument("--classes", default=None,
                        help="comma-separated class names (no background) of your own model; sets "
                             "NUM_CLASSES")
    parser.add_argument("--limit", type=int, default=0, help="at most N images (0 = all)")
    parser.add_argument("--logs", metavar="DIR", default="logs", help="where --weights last looks")
    parser.add_argument("--set", metavar="KEY=VALUE", action="append", default=[], dest="overrides",
                        help="override a config attribute, e.g. --set DETECTION_MIN_CONFIDENCE=0.5")
    parser.add_argument("--verbose", type=int, default=1, help="0 quiet, 1 one line per image")
    return parser


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = make_parser()
    args = parser.parse_args(argv)
    try:
        classes = [c.strip() for c in args.classes.split(",") if c.strip()] if args.classes else None
        run_demo(args.images, args.weights, args.out, args.config, classes,
                 parse_overrides(args.overrides), args.limit, args.logs, args.verbose)
    except SampleError as exc:
        print(f"demo.py: error: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
