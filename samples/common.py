"""What every sample shares: one command line, weights resolution, training, detection output.

Every sample is run the same way::

    python samples/<name>/<name>.py {train,evaluate,detect,download} --dataset DIR \\
        --weights {coco,imagenet,last,none,PATH} --logs DIR [--limit N] [--epochs N] [--steps N]

``--weights`` is resolved by :func:`resolve_weights`:

- ``coco``: Matterport's ``mask_rcnn_coco.h5``, looked for in ``$MRCNN_COCO_WEIGHTS``,
  ``./mask_rcnn_coco.h5``, ``<repo>/mask_rcnn_coco.h5`` and ``~/.keras/models/``, else
  downloaded (``mrcnn.io.download.download_trained_weights``) to ``~/.keras/models/``.
  Offline, the error says where to put the file (see ``mask_rcnn_coco.h5.txt``).
- ``imagenet``: the ResNet-50 ImageNet weights (backbone only).
- ``last``: the newest checkpoint of this sample under ``--logs``.
- ``none``: random initialisation (training from scratch).
- anything else: a path to an ``.h5`` file.

When the file's class count (read from its ``mrcnn_class_logits`` layer) differs from
the config's ``NUM_CLASSES``, the four class-specific head layers are excluded
automatically, so ``--weights coco`` fine-tunes on any class list.
"""
from __future__ import annotations

import argparse
import ast
import importlib.util
import json
import logging
import os
import sys
from typing import Any, Callable, Dict, Iterable, List, Optional, Sequence, Tuple

import numpy as np

# TensorFlow's C++ warnings (grappler cost estimates for CropAndResize, ...) would bury the output.
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

ROOT_DIR = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if ROOT_DIR not in sys.path:  # samples run as scripts from a checkout
    sys.path.insert(0, ROOT_DIR)

DEFAULT_LOGS_DIR = os.path.join(ROOT_DIR, "logs")
COCO_WEIGHTS_NAME = "mask_rcnn_coco.h5"
COCO_WEIGHTS_HELP_FILE = os.path.join(ROOT_DIR, "mask_rcnn_coco.h5.txt")
COCO_CLASS_COUNT = 81
#: Layers whose shapes depend on NUM_CLASSES; left out when fine-tuning on other classes.
HEAD_LAYERS = ["mrcnn_class_logits", "mrcnn_bbox_fc", "mrcnn_bbox", "mrcnn_mask"]
COMMANDS = ("train", "evaluate", "detect", "download")
WEIGHT_KEYWORDS = ("coco", "imagenet", "last", "none")

#: Matterport's class names of mask_rcnn_coco.h5, index = class id (0 is background).
COCO_CLASS_NAMES = [
    "BG", "person", "bicycle", "car", "motorcycle", "airplane", "bus", "train", "truck", "boat",
    "traffic light", "fire hydrant", "stop sign", "parking meter", "bench", "bird", "cat", "dog",
    "horse", "sheep", "cow", "elephant", "bear", "zebra", "giraffe", "backpack", "umbrella",
    "handbag", "tie", "suitcase", "frisbee", "skis", "snowboard", "sports ball", "kite",
    "baseball bat", "baseball glove", "skateboard", "surfboard", "tennis racket", "bottle",
    "wine glass", "cup", "fork", "knife", "spoon", "bowl", "banana", "apple", "sandwich", "orange",
    "broccoli", "carrot", "hot dog", "pizza", "donut", "cake", "chair", "couch", "potted plant",
    "bed", "dining table", "toilet", "tv", "laptop", "mouse", "remote", "keyboard", "cell phone",
    "microwave", "oven", "toaster", "sink", "refrigerator", "book", "clock", "vase", "scissors",
    "teddy bear", "hair drier", "toothbrush",
]

logger = logging.getLogger("mrcnn.samples")


class SampleError(RuntimeError):
    """A problem the user can fix (missing data, weights, offline); printed without a traceback."""


# ----------------------------------------------------------------------------------------------
# Command line
# ----------------------------------------------------------------------------------------------
def build_parser(prog: str, description: str, dataset_help: str,
                 default_weights: str = "coco", commands: Sequence[str] = COMMANDS,
                 default_epochs: int = 1, default_limit: int = 0,
                 default_optimizer: str = "sgd") -> argparse.ArgumentParser:
    """The shared argparse parser; a sample may add its own flags to the result."""
    parser = argparse.ArgumentParser(
        prog=prog, description=description, formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="Config values can be changed with --set, e.g. --set IMAGE_MAX_DIM=512 --set BACKBONE=resnet50.")
    parser.add_argument("command", choices=list(commands),
                        help="train: fit the model; evaluate: print metrics on the held-out images; "
                             "detect: draw detections to --out; download: fetch the dataset")
    parser.add_argument("--dataset", metavar="DIR", default=None, help=dataset_help)
    parser.add_argument("--weights", metavar="{coco,imagenet,last,none,PATH}", default=default_weights,
                        help="initial weights: 'coco' (mask_rcnn_coco.h5: $MRCNN_COCO_WEIGHTS, ./, "
                             "~/.keras/models/, else downloaded), 'imagenet' (ResNet-50 backbone), "
                             "'last' (newest checkpoint of this sample in --logs), 'none' (from scratch) "
                             "or a path to an .h5 file. Class-specific head layers are skipped "
                             "automatically when the class count differs. (default: %(default)s)")
    parser.add_argument("--logs", metavar="DIR", default=DEFAULT_LOGS_DIR,
                        help="folder for checkpoints and TensorBoard logs (default: %(default)s)")
    parser.add_argument("--limit", metavar="N", type=int, default=default_limit,
                        help="use at most N images (evaluate/detect; also caps download) "
                             "(0 = all; default: %(default)s)")
    parser.add_argument("--epochs", metavar="N", type=int, default=default_epochs,
                        help="train: number of epochs to run now (added to the epoch a 'last' "
                             "checkpoint reached) (default: %(default)s)")
    parser.add_argument("--steps", metavar="N", type=int, default=None,
                        help="train: steps per epoch (default: the config's STEPS_PER_EPOCH)")
    parser.add_argument("--val-steps", metavar="N", type=int, default=None,
                        help="train: validation steps per epoch, 0 = no validation "
                             "(default: the config's VALIDATION_STEPS)")
    parser.add_argument("--layers", default=None,
                        help="train: layers to train, 'heads', '3+', '4+', '5+', 'all' or a regex "
                             "(default: 'heads' with --weights coco, else 'all')")
    parser.add_argument("--lr", type=float, default=None,
                        help="train: learning rate (default: the config's LEARNING_RATE)")
    parser.add_argument("--lr-drop", type=float, default=0.8, metavar="FRACTION",
                        help="train: after this fraction of --epochs the learning rate drops to a "
                             "tenth for the rest (1 = never) (default: %(default)s)")
    parser.add_argument("--optimizer", choices=("sgd", "adam"), default=default_optimizer,
                        help="train: 'sgd' (Matterport's SGD with momentum) or 'adam' (converges faster "
                             "when training from scratch) (default: %(default)s)")
    parser.add_argument("--augment", action="store_true",
                        help="train: augment the training images (random flips; see the sample)")
    parser.add_argument("--keep", metavar="N", type=int, default=3,
                        help="checkpoints kept: the N newest plus the lowest validation loss "
                             "(default: %(default)s; 0 keeps all, as Matterport)")
    parser.add_argument("--seed", type=int, default=0,
                        help="seed of the train/val split and of the input order (default: %(default)s)")
    parser.add_argument("--images", metavar="DIR", default=None,
                        help="detect: run on the images of this folder instead of the held-out set")
    parser.add_argument("--out", metavar="DIR", default=None,
                        help="detect: output folder (default: <logs>/detect_<sample>)")
    parser.add_argument("--set", metavar="KEY=VALUE", action="append", default=[], dest="overrides",
                        help="override a config attribute (Python literal), repeatable")
    parser.add_argument("--verbose", type=int, default=1, help="0 quiet, 1 progress (default: %(default)s)")
    return parser


def parse_overrides(items: Iterable[str]) -> Dict[str, Any]:
    """``["KEY=VALUE", ...]`` → ``{KEY: value}``; values are Python literals, else strings."""
    out: Dict[str, Any] = {}
    for item in items or []:
        key, sep, text = str(item).partition("=")
        key = key.strip()
        if not sep or not key.isupper():
            raise SampleError(f"--set {item!r}: expected KEY=VALUE with an upper-case config attribute, "
                              "e.g. --set IMAGE_MAX_DIM=512")
        try:
            out[key] = ast.literal_eval(text.strip())
        except (ValueError, SyntaxError):
            out[key] = text.strip()
    return out


def make_config(config_class: type, overrides: Optional[Dict[str, Any]] = None, **values: Any):
    """An instance of ``config_class`` with ``values`` then ``overrides`` applied (validated)."""
    from mrcnn.config import ConfigError
    try:
        return config_class.from_dict({**values, **(overrides or {})})
    except ConfigError as exc:
        raise SampleError(str(exc)) from exc


def inference_config(config, **extra: Any):
    """The same configuration for detection: one image per batch, plus ``extra`` values."""
    values = dict(config.to_dict())
    values.update(GPU_COUNT=1, IMAGES_PER_GPU=1, **extra)
    return type(config).from_dict(values)


def run_cli(main: Callable[[argparse.Namespace], int], parser: argparse.ArgumentParser,
            argv: Optional[Sequence[str]] = None) -> int:
    """Parse ``argv``, run ``main(args)``; a :class:`SampleError` becomes a message and exit code 2."""
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING if args.verbose <= 1 else logging.INFO,
                        format="%(levelname)s %(name)s: %(message)s")
    try:
        return int(main(args) or 0)
    except SampleError as exc:
        print(f"{parser.prog}: error: {exc}", file=sys.stderr)
        return 2


def require_dataset(args: argparse.Namespace, what: str) -> str:
    """``--dataset``, checked to be given (and to exist, except for ``download``)."""
    if not args.dataset:
        raise SampleError(f"{args.command} needs --dataset DIR ({what})")
    if args.command != "download" and not os.path.exists(args.dataset):
        raise SampleError(f"--dataset {args.dataset!r} does not exist")
    return args.dataset


# ----------------------------------------------------------------------------------------------
# Weights
# ----------------------------------------------------------------------------------------------
def coco_weight_candidates() -> List[str]:
    """Where ``--weights coco`` looks for mask_rcnn_coco.h5, in order."""
    env = os.environ.get("MRCNN_COCO_WEIGHTS")
    places = [env] if env else []
    places += [os.path.abspath(COCO_WEIGHTS_NAME), os.path.join(ROOT_DIR, COCO_WEIGHTS_NAME),
               os.path.join(os.path.expanduser("~"), ".keras", "models", COCO_WEIGHTS_NAME)]
    seen: List[str] = []
    for p in places:
        if p not in seen:
            seen.append(p)
    return seen


def locate_coco_weights(download: bool = True, verbose: int = 1) -> str:
    """Path of a local mask_rcnn_coco.h5, downloading it to ``~/.keras/models`` if needed.

    Raises:
        SampleError: ``$MRCNN_COCO_WEIGHTS`` names a missing file, or the file is not
            local and cannot be downloaded (the message says what to do offline).
    """
    env = os.environ.get("MRCNN_COCO_WEIGHTS")
    if env and not os.path.isfile(env):
        raise SampleError(f"MRCNN_COCO_WEIGHTS={env!r} does not exist. Point it at mask_rcnn_coco.h5 "
                          "or unset it.")
    candidates = coco_weight_candidates()
    for path in candidates:
        if os.path.isfile(path):
            return path
    target = candidates[-1]
    if not download:
        raise SampleError(f"{COCO_WEIGHTS_NAME} not found in: {', '.join(candidates)}")
    from mrcnn.io.download import DownloadError, download_trained_weights
    try:
        return download_trained_weights(target, verbose=verbose)
    except DownloadError as exc:
        raise SampleError(
            f"--weights coco: {COCO_WEIGHTS_NAME} is not on this machine (looked in: "
            f"{', '.join(candidates)}) and downloading it failed.\n{exc}\n"
            f"What to do: copy {COCO_WEIGHTS_NAME} (about 246 MB) to one of those places, or pass "
            f"--weights /path/to/{COCO_WEIGHTS_NAME}, or set MRCNN_COCO_WEIGHTS=/path/to/it. "
            f"Details in {COCO_WEIGHTS_HELP_FILE}.") from exc


def weights_class_count(path: str) -> Optional[int]:
    """NUM_CLASSES of an h5 weights file, from its ``mrcnn_class_logits`` kernel; None if unknown."""
    import h5py
    try:
        with h5py.File(path, "r") as f:
            group = f["model_weights"] if "layer_names" not in f.attrs and "model_weights" in f else f
            if "mrcnn_class_logits" not in group:
                return None
            layer = group["mrcnn_class_logits"]
            for name in layer.attrs.get("weight_names", []):
                name = name.decode("utf8") if isinstance(name, bytes) else str(name)
                if "kernel" in name and name in layer:
                    return int(layer[name].shape[-1])
    except (OSError, KeyError):
        return None
    return None


def resolve_weights(model, spec: Optional[str], verbose: int = 1):
    """Load ``--weights spec`` into ``model`` (a :class:`mrcnn.model.MaskRCNN`).

    Returns:
        ``(path, report)``: the file loaded and the :class:`LoadReport`, or
        ``(None, None)`` for ``none``.
    Raises:
        SampleError: the weights cannot be found, fetched or loaded; the message says why.
    """
    spec = (spec or "none").strip()
    key = spec.lower()
    if key == "none":
        return None, None
    if key == "coco":
        path = locate_coco_weights(verbose=verbose)
    elif key == "last":
        try:
            path = model.find_last()
        except FileNotFoundError as exc:
            raise SampleError(f"--weights last: no checkpoint of {model.config.NAME!r} under "
                              f"{model.model_dir} yet ({exc}). Train first or pass a path.") from exc
    elif key == "imagenet":
        try:
            path = model.get_imagenet_weights()
        except Exception as exc:  # keras.utils.get_file raises plain Exception when offline
            raise SampleError(f"--weights imagenet: could not get the ResNet-50 ImageNet weights ({exc}). "
                              "Offline: copy resnet50_weights_tf_dim_ordering_tf_kernels_notop.h5 to "
                              "~/.keras/models/ or pass --weights none / a path.") from exc
    else:
        path = os.path.expanduser(spec)
        if not os.path.isfile(path):
            raise SampleError(f"--weights {spec!r}: no such file (use coco, imagenet, last, none or a path)")
    exclude = heads_to_exclude(model.config, path)
    from mrcnn.modeling.weights import WeightsError
    try:
        report = model.load_weights(path, by_name=True, exclude=exclude or None)
    except WeightsError as exc:
        raise SampleError(f"--weights {spec}: {exc}") from exc
    if verbose:
        print(f"Loaded weights from {path}" + (f" (class-specific heads excluded: the file has "
                                              f"{weights_class_count(path)} classes, the model "
                                              f"{model.config.NUM_CLASSES})" if exclude else ""))
        print(report.summary())
    return path, report


def heads_to_exclude(config, path: str) -> List[str]:
    """:data:`HEAD_LAYERS` when the file's class count differs from ``config.NUM_CLASSES``."""
    file_classes = weights_class_count(path)
    if file_classes is not None and file_classes != config.NUM_CLASSES:
        return list(HEAD_LAYERS)
    return []


# ----------------------------------------------------------------------------------------------
# Training and evaluation glue
# ----------------------------------------------------------------------------------------------
def train_model(args: argparse.Namespace, config, train_ds, val_ds, augmentation=None) -> str:
    """Build a training model, load ``--weights``, train ``--epochs`` x ``--steps``.

    ``augmentation`` is used when ``--augment`` is given (default: imgaug ``Fliplr(0.5)``).

    Returns:
        The path of the last checkpoint written.
    """
    import mrcnn.model as modellib

    if len(train_ds.image_ids) == 0:
        raise SampleError("the training set is empty; check --dataset")
    import keras
    # --seed fixes the weight initialisation and Keras' own draws too, not only the input order:
    # two runs of the same command train the same model.
    keras.utils.set_random_seed(args.seed)
    model = modellib.MaskRCNN(mode="training", config=config, model_dir=args.logs)
    resolve_weights(model, args.weights, verbose=args.verbose)
    layers = args.layers or ("heads" if str(args.weights).lower() == "coco" else "all")
    if not args.augment:
        augmentation = None
    elif augmentation is None:
        from mrcnn.data.augment import import_imgaug
        augmentation = import_imgaug().augmenters.Fliplr(0.5)
    lr = args.lr if args.lr is not None else config.LEARNING_RATE
    if args.val_steps == 0 or (val_ds is not None and not len(val_ds.image_ids)):
        val_ds = None  # --val-steps 0: no validation pass (quicker smoke runs)
    if args.verbose:
        print(f"Training {layers!r} layers for {args.epochs} epoch(s) on {len(train_ds.image_ids)} images "
              f"({len(val_ds.image_ids) if val_ds is not None else 'no'} validation images), lr={lr}")
    from mrcnn.engine.callbacks import NaNLossError
    try:
        _fit(model, train_ds, val_ds, lr, layers, augmentation, args)
    except NaNLossError as exc:
        raise SampleError(f"{exc} Resume with --weights last (and a lower --lr).") from exc
    last = model.find_last()
    print(f"Last checkpoint: {last}")
    return last


def _fit(model, train_ds, val_ds, lr: float, layers: str, augmentation, args: argparse.Namespace) -> None:
    import keras
    optimizer = None  # train() builds Matterport's SGD with momentum
    if getattr(args, "optimizer", "sgd") == "adam":
        optimizer = keras.optimizers.Adam(learning_rate=lr, global_clipnorm=model.config.GRADIENT_CLIP_NORM)
    callbacks = []
    schedule = lr_drop_schedule(lr, model.epoch, args.epochs, getattr(args, "lr_drop", 1.0))
    if schedule is not None:
        callbacks.append(keras.callbacks.LearningRateScheduler(schedule))
    model.train(train_ds, val_ds, optimizer=optimizer,
                learning_rate=lr, epochs=model.epoch + args.epochs, layers=layers,
                augmentation=augmentation, seed=args.seed, steps_per_epoch=args.steps,
                validation_steps=args.val_steps or None, verbose=args.verbose,
                tensorboard=importlib.util.find_spec("tensorboard") is not None,
                custom_callbacks=callbacks, keep=checkpoint_keep(args))


def checkpoint_keep(args: argparse.Namespace) -> Optional[int]:
    """``--keep N`` as ``train(keep=...)``: None (all) for 0, SampleError for negatives."""
    keep = getattr(args, "keep", 3)
    if keep is None or keep == 0:
        return None
    if keep < 0:
        raise SampleError(f"--keep must be >= 0 (0 keeps every checkpoint), got {keep}")
    return int(keep)


def lr_drop_schedule(lr: float, start_epoch: int, epochs: int, fraction: float):
    """A Keras ``LearningRateScheduler`` function: ``lr`` for the first ``fraction`` of the
    ``epochs`` run now (counted from ``start_epoch``, the epoch a resumed checkpoint reached),
    ``lr / 10`` after; ``None`` when nothing would drop (``fraction >= 1`` or a single epoch).
    """
    if fraction <= 0:
        raise SampleError(f"--lr-drop must be in (0, 1], got {fraction}")
    if fraction >= 1 or epochs < 2:
        return None
    drop_at = start_epoch + max(1, int(round(epochs * fraction)))
    return lambda epoch, _current: float(lr if epoch < drop_at else lr / 10)


def inference_model(args: argparse.Namespace, config, **extra: Any):
    """An inference-mode model with ``--weights`` loaded (``extra``: config values for inference)."""
    import mrcnn.model as modellib

    model = modellib.MaskRCNN(mode="inference", config=inference_config(config, **extra),
                              model_dir=args.logs)
    if str(args.weights).lower() == "none":
        print("warning: --weights none: detecting with random weights", file=sys.stderr)
    resolve_weights(model, args.weights, verbose=args.verbose)
    return model


def evaluate_mask_map(model, dataset, limit: int = 0, class_names: Optional[Sequence[str]] = None,
                      verbose: int = 1, min_instances: int = 10):
    """VOC-style mask mAP@0.5 (and 0.5:0.95) of ``model`` on ``dataset``; prints a table.

    Printed: the mean of per-image APs (Matterport's notebook metric), per-class pooled AP with
    instance counts, the confusion matrix of matched detections, and the pooled mAP over the
    classes with at least ``min_instances`` ground-truth instances.

    Returns:
        The :class:`mrcnn.evaluation.voc.DatasetEvaluation`.
    """
    from mrcnn.evaluation.voc import evaluate_model

    ids = list(dataset.image_ids)
    if limit:
        ids = ids[:limit]
    if not ids:
        raise SampleError("no images to evaluate")
    result = evaluate_model(model, dataset, model.config, image_ids=ids)
    print(result.summary(class_names or dataset.class_names))
    print(f"mask mAP@0.5 = {result.mAP:.4f} on {len(ids)} images")
    frequent = [c for c, n in result.gt_counts.items() if n >= min_instances]
    print(f"class mask mAP@0.5 = {result.mAP_over_classes(min_instances):.4f} over the {len(frequent)} "
          f"classes with at least {min_instances} instances")
    return result


def list_images(folder: str, limit: int = 0) -> List[str]:
    """Image files of ``folder`` (jpg, jpeg, png, bmp, tif), sorted by name."""
    if not os.path.isdir(folder):
        raise SampleError(f"--images {folder!r} is not a folder")
    exts = (".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff")
    files = sorted(f for f in os.listdir(folder) if f.lower().endswith(exts))
    if not files:
        raise SampleError(f"--images {folder!r} holds no image (looked for {', '.join(exts)})")
    files = [os.path.join(folder, f) for f in files]
    return files[:limit] if limit else files


# ----------------------------------------------------------------------------------------------
# Detection output
# ----------------------------------------------------------------------------------------------
def detections_to_json(name: str, image_shape: Tuple[int, ...], r: Dict[str, np.ndarray],
                       class_names: Sequence[str]) -> Dict[str, Any]:
    """A simple, self-describing record of one image's detections.

    Boxes are pixel ``[y1, x1, y2, x2]`` (y2/x2 exclusive); masks are COCO RLE of the
    full image (``pycocotools.mask.decode`` gives them back).
    """
    from mrcnn.evaluation.coco import encode_masks

    masks = np.asarray(r["masks"]).astype(bool)
    rles = encode_masks(masks) if masks.shape[-1] else []
    instances = []
    for i in range(len(r["class_ids"])):
        cid = int(r["class_ids"][i])
        instances.append({
            "class_id": cid, "class_name": class_names[cid] if cid < len(class_names) else str(cid),
            "score": float(r["scores"][i]), "box": [int(v) for v in r["rois"][i]],
            "mask_area": int(masks[..., i].sum()), "mask_rle": rles[i]})
    return {"image": name, "height": int(image_shape[0]), "width": int(image_shape[1]),
            "instances": instances}


def detect_and_save(model, images: Iterable[Tuple[str, np.ndarray]], class_names: Sequence[str],
                    out_dir: str, verbose: int = 1,
                    category_ids: Optional[Callable[[int], int]] = None) -> Dict[str, Any]:
    """Detect on each ``(name, image)``; write ``<stem>.png``, ``<stem>.json`` and ``coco_results.json``.

    ``coco_results.json`` is a COCO results list (``image_id`` = 1-based position
    in this run, listed in ``images.json``; ``category_id`` = ``category_ids(class_id)``,
    the model's class id by default). Returns ``{"images": [...], "results": [...]}``.
    """
    import matplotlib
    if matplotlib.get_backend().lower() not in ("agg", "pdf", "svg", "ps", "cairo"):
        matplotlib.use("Agg")  # files only: never open windows from a batch run
    from mrcnn import visualize
    from mrcnn.evaluation.coco import build_coco_results

    os.makedirs(out_dir, exist_ok=True)
    index: List[Dict[str, Any]] = []
    coco_results: List[Dict[str, Any]] = []
    to_category = category_ids or int
    for k, (name, image) in enumerate(images, start=1):
        r = model.detect([image], verbose=0)[0]
        stem = os.path.splitext(os.path.basename(name))[0]
        png = os.path.join(out_dir, stem + ".png")
        visualize.display_instances(image, r["rois"], r["masks"], r["class_ids"], class_names,
                                    r["scores"], title=os.path.basename(name), figsize=(8, 8),
                                    save_path=png)
        record = detections_to_json(name, image.shape, r, class_names)
        with open(os.path.join(out_dir, stem + ".json"), "w") as f:
            json.dump(record, f, indent=1)
        coco_results += build_coco_results(to_category, [k], r["rois"], r["class_ids"], r["scores"],
                                           np.asarray(r["masks"]).astype(np.uint8))
        index.append({"id": k, "file_name": name, "height": int(image.shape[0]),
                      "width": int(image.shape[1]), "detections": len(r["class_ids"])})
        if verbose:
            found = ", ".join(f"{i['class_name']} {i['score']:.2f}" for i in record["instances"]) or "nothing"
            print(f"{name}: {found} -> {png}")
    with open(os.path.join(out_dir, "coco_results.json"), "w") as f:
        json.dump(coco_results, f)
    with open(os.path.join(out_dir, "images.json"), "w") as f:
        json.dump(index, f, indent=1)
    return {"images": index, "results": coco_results}


def read_image_files(paths: Sequence[str]) -> Iterable[Tuple[str, np.ndarray]]:
    """``(path, RGB uint8 image)`` for each path (grey/RGBA/16-bit converted)."""
    from mrcnn.data.dataset import read_image
    for p in paths:
        yield p, read_image(p)


def dataset_images(dataset, limit: int = 0) -> Iterable[Tuple[str, np.ndarray]]:
    """``(path or reference, image)`` for the images of a prepared dataset."""
    ids = list(dataset.image_ids)[:limit] if limit else list(dataset.image_ids)
    for i in ids:
        info = dataset.image_info[i]
        yield str(info.get("path") or dataset.image_reference(i)), dataset.load_image(i)


def evaluate_or_detect(args: argparse.Namespace, config, val, sample: str) -> int:
    """The ``evaluate`` (VOC mask mAP, every detection kept) and ``detect`` commands on ``val``."""
    if args.command == "evaluate":
        model = inference_model(args, config, DETECTION_MIN_CONFIDENCE=0.0)
        evaluate_mask_map(model, val, limit=args.limit, verbose=args.verbose)
        return 0
    run_detect(args, config, val.class_names, dataset=val, sample=sample)
    return 0


def run_detect(args: argparse.Namespace, config, class_names: Sequence[str], dataset=None,
               sample: str = "sample") -> Dict[str, Any]:
    """The ``detect`` command: ``--images DIR`` or the given dataset → files in ``--out``."""
    model = inference_model(args, config)
    out = args.out or os.path.join(args.logs, f"detect_{sample}")
    if args.images:
        images = read_image_files(list_images(args.images, args.limit))
    elif dataset is not None:
        images = dataset_images(dataset, args.limit)
    else:
        raise SampleError("detect needs --images DIR or --dataset DIR")
    result = detect_and_save(model, images, class_names, out, verbose=args.verbose)
    print(f"Wrote {len(result['images'])} pictures, their JSON and coco_results.json to {out}")
    return result
