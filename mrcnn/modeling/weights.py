"""Reading and writing Matterport / Keras-2 HDF5 weight files with h5py.

Layout of a Keras-2 weights file (``mask_rcnn_coco.h5``, ModelCheckpoint output):

* root attribute ``layer_names``: every layer name in model order (weightless
  layers have an empty ``weight_names``); a full-model save nests all of this
  in a ``model_weights`` group;
* one group per layer with attribute ``weight_names`` such as
  ``conv1/kernel:0`` and the arrays stored at ``<layer>/<weight_name>``;
  a nested model (``rpn_model``) is one group whose weight names carry the
  inner layer names (``rpn_conv_shared/kernel:0``);
* weight order per layer is Keras 2's: kernel, bias; gamma, beta,
  moving_mean, moving_variance.

:func:`load_weights` maps groups onto ``model.layers`` by name (or by order),
checks every shape before assigning anything, honours Matterport's
``exclude`` list and returns a :class:`LoadReport`. :func:`save_weights`
writes the same layout atomically. Keras-native ``.weights.h5`` / ``.keras``
files are passed to Keras.
"""
from __future__ import annotations

import logging
import os
import tempfile
import zipfile
from dataclasses import dataclass, field
from typing import Dict, Iterable, List, Optional, Sequence, Tuple

import h5py
import keras
import numpy as np

__all__ = ["WeightsError", "WeightsFileError", "WeightsMismatchError", "LoadReport",
           "load_weights", "save_weights", "read_layer_names"]

logger = logging.getLogger("mrcnn.weights")

# Layer-name prefixes of the parts of a Mask R-CNN file beyond the backbone.
_HEAD_PREFIXES = ("fpn_", "rpn_", "mrcnn_")
# Training checkpoints of the TF2 ports store the anchors as a variable of a
# layer named "anchors"; here they are a graph constant, so that group is skipped.
_CONSTANT_LAYERS = ("anchors",)


class WeightsError(ValueError):
    """Base class of weight-file problems."""


class WeightsFileError(WeightsError):
    """The file is missing, not HDF5, truncated or not a Keras weights file."""


class WeightsMismatchError(WeightsError):
    """The file does not fit the model (wrong architecture, class count, ...)."""


@dataclass
class LoadReport:
    """What :func:`load_weights` did, by layer name."""

    filepath: str
    by_name: bool
    loaded: List[str] = field(default_factory=list)
    excluded: List[str] = field(default_factory=list)
    missing_in_file: List[str] = field(default_factory=list)
    unused_in_file: List[str] = field(default_factory=list)
    mismatched: List[str] = field(default_factory=list)  # "layer: detail"
    keras_native: bool = False

    def summary(self) -> str:
        """One line per category, listing at most 8 names each."""
        def names(xs: Sequence[str]) -> str:
            head = ", ".join(xs[:8])
            return head + (f", ... (+{len(xs) - 8})" if len(xs) > 8 else "")
        lines = [f"weights {self.filepath}: loaded {len(self.loaded)} layers"
                 f"{' by name' if self.by_name else ''}"]
        for label, xs in (("excluded", self.excluded), ("missing in file", self.missing_in_file),
                          ("unused in file", self.unused_in_file),
                          ("shape mismatch (skipped)", self.mismatched)):
            if xs:
                lines.append(f"  {label} ({len(xs)}): {names(xs)}")
        return "\n".join(lines)

    __str__ = summary


# ----------------------------------------------------------------------------
# Reading
# ----------------------------------------------------------------------------
def _as_str(x) -> str:
    return x.decode("utf8") if isinstance(x, (bytes, np.bytes_)) else str(x)


def _open_h5(filepath: str) -> h5py.File:
    if not os.path.exists(filepath):
        raise WeightsFileError(f"weights file {filepath!r} does not exist")
    if os.path.isdir(filepath):
        raise WeightsFileError(f"weights path {filepath!r} is a directory, expected an .h5 file")
    try:
        if not h5py.is_hdf5(filepath):
            raise WeightsFileError(
                f"{filepath!r} is not an HDF5 file ({_describe_file(filepath)}, "
                f"{os.path.getsize(filepath)} bytes); "
                "expected a Keras/Matterport .h5 weights file such as mask_rcnn_coco.h5")
        return h5py.File(filepath, "r")
    except WeightsFileError:
        raise
    except (OSError, ValueError) as e:
        raise WeightsFileError(f"cannot read HDF5 file {filepath!r} (truncated or corrupt "
                               f"download?): {e}") from e


def _describe_file(filepath: str) -> str:
    """What a non-HDF5 file looks like, from its first bytes (for error messages)."""
    with open(filepath, "rb") as fh:
        head = fh.read(512)
    if not head:
        return "an empty file"
    if head.startswith(b"version https://git-lfs"):
        return "a Git LFS pointer, not the weights: run git lfs pull or download the file"
    if head.lstrip()[:1] == b"<" and b"html" in head.lower():
        return "an HTML page: a failed download?"
    if head.startswith(b"\x1f\x8b"):
        return "a gzip file: unpack it first"
    if head.startswith(b"\x80") or head.startswith(b"PK"):
        return "a pickle/zip file (PyTorch or other), not Keras"
    try:
        text = head.decode("utf8")
        return f"a text file starting {text[:40]!r}"
    except UnicodeDecodeError:
        return "binary data of an unknown format"


def _weights_group(f: h5py.File, filepath: str) -> Optional[h5py.Group]:
    """The group holding ``layer_names`` or None for a Keras-3 native file."""
    if "layer_names" in f.attrs:
        return f
    if "model_weights" in f and "layer_names" in f["model_weights"].attrs:
        return f["model_weights"]
    if "layers" in f or "vars" in f:
        return None
    raise WeightsFileError(f"{filepath!r} is HDF5 but not a Keras weights file "
                           "(no 'layer_names' attribute and no 'model_weights' group)")


def read_layer_names(group: h5py.Group) -> List[str]:
    """Layer names stored in a Keras-2 weights group, in file order."""
    return [_as_str(n) for n in group.attrs["layer_names"]]


def _read_layer(group: h5py.Group, name: str, filepath: str) -> List[Tuple[str, np.ndarray]]:
    """(weight_name, value) pairs of one layer group, in file order."""
    g = group[name]
    out = []
    for wn in g.attrs.get("weight_names", []):
        wn = _as_str(wn)
        try:
            out.append((wn, np.asarray(g[wn][()])))
        except (OSError, KeyError, ValueError) as e:
            raise WeightsFileError(f"cannot read weight {name}/{wn} from {filepath!r} "
                                   f"(truncated or corrupt file?): {e}") from e
    return out


def _base_name(weight_name: str) -> str:
    """'rpn_conv_shared/kernel:0' -> 'kernel'."""
    return weight_name.split("/")[-1].split(":")[0]


def _order_for_layer(layer, saved: List[Tuple[str, np.ndarray]]) -> List[np.ndarray]:
    """Saved values in the order of ``layer.weights``.

    Files are in Keras 2 order (trainable before non-trainable), which is the
    creation order for every layer this model uses; if the variable base names
    disagree with the positional pairing, pair them by (inner layer, base name)
    instead, which covers nested models saved with frozen sub-layers.
    """
    variables = layer.weights
    if [_base_name(w) for w, _ in saved] == [v.name for v in variables]:
        return [value for _, value in saved]
    by_key: Dict[Tuple[str, str], np.ndarray] = {}
    for wn, value in saved:
        parts = wn.split(":")[0].split("/")
        by_key[(parts[-2] if len(parts) > 1 else "", parts[-1])] = value
    ordered = []
    for v in variables:
        parts = v.path.split("/")
        key = (parts[-2] if len(parts) > 1 else "", parts[-1])
        if key not in by_key:
            return [value for _, value in saved]  # let the shape check report it
        ordered.append(by_key[key])
    return ordered


def _check_shapes(layer, values: List[np.ndarray]) -> Optional[str]:
    variables = layer.weights
    if len(values) != len(variables):
        return (f"model layer has {len(variables)} weights "
                f"({', '.join(v.name for v in variables)}), file has {len(values)}")
    for v, value in zip(variables, values):
        if value.dtype.kind not in "fiub":
            return f"weight {getattr(v, 'path', v.name)}: file holds {value.dtype} data, not numbers"
        if tuple(v.shape) != tuple(value.shape):
            return f"weight {getattr(v, 'path', v.name)}: model shape {tuple(v.shape)}, file shape {tuple(value.shape)}"
    return None


def _is_full_model_file(file_layers: Iterable[str]) -> bool:
    """True for a Mask R-CNN file (has FPN/RPN/head layers), False for a backbone-only one."""
    return any(n.startswith(_HEAD_PREFIXES) for n in file_layers)


def _native_arrays(f: h5py.File) -> List[Tuple[str, Tuple[int, ...]]]:
    """(path, shape) of every array in a Keras 3 ``.weights.h5`` (metadata only, no data read)."""
    out: List[Tuple[str, Tuple[int, ...]]] = []
    f.visititems(lambda name, obj: out.append((name, tuple(obj.shape)))
                 if isinstance(obj, h5py.Dataset) else None)
    return out


def _check_native_fits(model, arrays: List[Tuple[str, Tuple[int, ...]]], filepath: str,
                       what: str) -> None:
    """Raise before Keras sees a native file of another model (Keras would warn per layer)."""
    model_shapes = sorted(tuple(int(d) for d in v.shape) for v in model.weights)
    file_shapes = sorted(shape for _, shape in arrays)
    if model_shapes == file_shapes:
        return
    if len(model_shapes) == len(file_shapes):
        from collections import Counter
        extra = list((Counter(file_shapes) - Counter(model_shapes)).elements())
        detail = (f"it holds {len(arrays)} arrays like this Mask R-CNN, but {len(extra)} of them have "
                  f"other shapes (e.g. {extra[:2]}): another NUM_CLASSES or head width?")
    else:
        example = ", ".join(f"{n} {s}" for n, s in arrays[:2]) or "none"
        detail = (f"it holds {len(arrays)} arrays (e.g. {example}), this Mask R-CNN has "
                  f"{len(model_shapes)} weights")
    raise WeightsMismatchError(
        f"{filepath!r} is a {what} of a different model: {detail}; expected a "
        "Matterport-layout .h5 (e.g. mask_rcnn_coco.h5) or a file saved by save_weights() of a "
        "model with the same config")


def _load_keras_native(model, filepath: str, report: LoadReport,
                       arrays: Optional[List[Tuple[str, Tuple[int, ...]]]] = None) -> LoadReport:
    what = "Keras 3 .keras archive" if arrays is None else "Keras 3 native weights file"
    if arrays is None:
        arrays = _keras_archive_arrays(filepath)
    _check_native_fits(model, arrays, filepath, what)
    if not (filepath.endswith(".weights.h5") or filepath.endswith(".keras")):
        raise WeightsFileError(
            f"{filepath!r} is a Keras 3 native weights file; Keras only reads it under a "
            "name ending in '.weights.h5' (rename it)")
    import warnings
    try:
        with warnings.catch_warnings():  # Keras warns once per layer it cannot match
            warnings.simplefilter("ignore")
            model.load_weights(filepath)
    except Exception as e:  # noqa: BLE001 - Keras' own message is many lines long
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise WeightsMismatchError(f"{filepath!r} ({what}) does not fit this Mask R-CNN: {first}; "
                                   "expected a file saved by save_weights() of a model with the "
                                   "same config") from None
    report.keras_native = True
    report.loaded = [l.name for l in model.layers if l.weights]
    return report


def _keras_archive_arrays(filepath: str) -> List[Tuple[str, Tuple[int, ...]]]:
    """The arrays of the ``model.weights.h5`` inside a ``.keras`` zip."""
    try:
        with zipfile.ZipFile(filepath) as z:
            if "model.weights.h5" not in z.namelist():
                raise WeightsFileError(f"{filepath!r} is a zip archive without model.weights.h5; "
                                       "expected a Keras .keras model or an .h5 weights file")
            with z.open("model.weights.h5") as member, h5py.File(member, "r") as f:
                return _native_arrays(f)
    except (zipfile.BadZipFile, OSError) as e:
        raise WeightsFileError(f"cannot read the Keras archive {filepath!r}: {e}") from None


def load_weights(model: keras.Model, filepath: str, by_name: bool = False,
                 exclude: Optional[Sequence[str]] = None, skip_mismatch: bool = False,
                 strict: Optional[bool] = None) -> LoadReport:
    """Load an h5 weights file into a Keras model.

    Args:
        model: the Keras model; its top-level layers (``model.layers``) are
            matched with the file's layer groups. A nested model such as
            ``rpn_model`` is one layer.
        filepath: Matterport/Keras-2 ``.h5`` (by name or by order) or Keras-3
            ``.weights.h5`` / ``.keras`` (passed to ``model.load_weights``).
        by_name: match layers by name; otherwise by order of weighted layers,
            which needs the very same architecture. A non-empty ``exclude``
            implies ``by_name`` (as in Matterport).
        exclude: layer names not to load (e.g. the class-count-dependent heads
            ``["mrcnn_class_logits", "mrcnn_bbox_fc", "mrcnn_bbox", "mrcnn_mask"]``).
        skip_mismatch: skip layers whose shapes differ instead of raising.
        strict: by-name mode only. True: every weighted model layer that is not
            excluded must be in the file and every weighted file layer must be
            used. False: load what matches and report the rest. None (default):
            strict for full Mask R-CNN files, lenient for backbone-only files
            such as the ImageNet ResNet weights.

    Returns:
        A :class:`LoadReport` (also logged at INFO level).

    Raises:
        WeightsFileError: missing, non-HDF5, truncated or non-Keras file.
        WeightsMismatchError: the file does not fit the model (layer counts,
            missing/extra layers in strict mode, shape mismatches). Nothing is
            assigned when this is raised.
    """
    if not isinstance(filepath, (str, os.PathLike)):
        raise WeightsFileError(f"weights path must be a str or os.PathLike, got "
                               f"{type(filepath).__name__}")
    filepath = os.fspath(filepath)
    exclude = list(exclude or [])
    if exclude:
        by_name = True
    report = LoadReport(filepath=filepath, by_name=by_name)
    if os.path.isfile(filepath) and zipfile.is_zipfile(filepath):
        if not filepath.endswith(".keras"):
            raise WeightsFileError(f"{filepath!r} is a zip archive, not an HDF5 weights file; "
                                   "expected a Matterport/Keras .h5 (or a Keras 3 .keras model)")
        return _load_keras_native(model, filepath, report)
    with _open_h5(filepath) as f:
        group = _weights_group(f, filepath)
        if group is None:
            arrays = _native_arrays(f)
    if group is None:
        return _load_keras_native(model, filepath, report, arrays)
    with _open_h5(filepath) as f:
        group = _weights_group(f, filepath)
        file_names = read_layer_names(group)
        missing_groups = [n for n in file_names if n not in group]
        if missing_groups:
            raise WeightsFileError(f"{filepath!r} lists layers without a group (truncated "
                                   f"file?): {missing_groups[:5]}")
        file_weighted = [n for n in file_names if len(group[n].attrs.get("weight_names", [])) > 0
                         and n not in _CONSTANT_LAYERS]
        model_weighted = [l for l in model.layers if l.weights]
        if file_weighted and not set(file_weighted) & {l.name for l in model_weighted}:
            raise WeightsMismatchError(
                f"{filepath!r} is a Keras h5 weights file of another model: none of its "
                f"{len(file_weighted)} layers (e.g. {file_weighted[:3]}) is a layer of this "
                "Mask R-CNN; expected a Matterport-layout .h5 such as mask_rcnn_coco.h5 or "
                "the ImageNet ResNet weights")
        if by_name:
            all_names = [l.name for l in model.layers] + file_names
            pairs = _pair_by_name(model_weighted, file_weighted, exclude, report, strict, filepath,
                                  all_names)
        else:
            pairs = _pair_by_order(model_weighted, file_weighted, filepath)
        assignments = []
        for layer, fname in pairs:
            values = _order_for_layer(layer, _read_layer(group, fname, filepath))
            problem = _check_shapes(layer, values)
            if problem:
                report.mismatched.append(f"{layer.name}: {problem}")
                continue
            assignments.append((layer, values))
    if report.mismatched and not skip_mismatch:
        raise WeightsMismatchError(
            f"{filepath!r} does not fit the model ({len(report.mismatched)} layers differ): "
            + "; ".join(report.mismatched[:5])
            + ". If the class count differs, pass exclude=['mrcnn_class_logits', "
              "'mrcnn_bbox_fc', 'mrcnn_bbox', 'mrcnn_mask']; check BACKBONE, NUM_CLASSES and the "
              "widths (TOP_DOWN_PYRAMID_SIZE, RPN_CONV_CHANNELS, MASK_HEAD_CHANNELS, "
              "FPN_CLASSIF_FC_LAYERS_SIZE).")
    for layer, values in assignments:
        layer.set_weights(values)
        report.loaded.append(layer.name)
    logger.info(report.summary())
    return report


def _pair_by_name(model_weighted, file_weighted: List[str], exclude: List[str],
                  report: LoadReport, strict: Optional[bool], filepath: str,
                  all_names: Iterable[str] = ()):
    file_set = set(file_weighted)
    model_names = {l.name for l in model_weighted}
    # Weightless layers (e.g. the mrcnn_bbox Reshape) count as excluded too.
    known = model_names | file_set | set(all_names)
    unknown_exclude = [n for n in exclude if n not in known]
    if unknown_exclude:
        logger.info("exclude names not in the model nor in the file: %s", unknown_exclude)
    report.excluded = [n for n in exclude if n in known]
    pairs = []
    for layer in model_weighted:
        if layer.name in exclude:
            continue
        if layer.name in file_set:
            pairs.append((layer, layer.name))
        else:
            report.missing_in_file.append(layer.name)
    report.unused_in_file = [n for n in file_weighted if n not in model_names and n not in exclude]
    if strict is None:
        strict = _is_full_model_file(file_weighted)
    if strict and (report.missing_in_file or report.unused_in_file):
        parts = []
        if report.missing_in_file:
            parts.append(f"{len(report.missing_in_file)} model layers are not in the file "
                         f"(e.g. {report.missing_in_file[:4]})")
        if report.unused_in_file:
            parts.append(f"{len(report.unused_in_file)} file layers are not in the model "
                         f"(e.g. {report.unused_in_file[:4]})")
        raise WeightsMismatchError(
            f"{filepath!r} was saved from a different architecture: " + "; ".join(parts)
            + ". Check BACKBONE (resnet50 vs resnet101) and the head layers; pass "
              "exclude=[...] for layers you mean to leave untouched or strict=False to "
              "load a partial file.")
    return pairs


def _pair_by_order(model_weighted, file_weighted: List[str], filepath: str):
    if len(model_weighted) != len(file_weighted):
        raise WeightsMismatchError(
            f"{filepath!r} has {len(file_weighted)} layers with weights but the model has "
            f"{len(model_weighted)}: the file was saved from a different architecture "
            "(BACKBONE resnet50 vs resnet101, or a partial file). Use by_name=True "
            "(optionally with exclude=[...]).")
    return list(zip(model_weighted, file_weighted))


# ----------------------------------------------------------------------------
# Writing
# ----------------------------------------------------------------------------
def _weight_entries(layer) -> List[Tuple[str, np.ndarray]]:
    """(Keras-2 weight name, value) pairs of a top-level layer."""
    if isinstance(layer, keras.Model):
        entries = []
        for inner in layer.layers:
            for v in inner.weights:
                entries.append((f"{inner.name}/{v.name}:0", np.asarray(v.numpy())))
        return entries
    return [(f"{layer.name}/{v.name}:0", np.asarray(v.numpy())) for v in layer.weights]


def save_weights(model: keras.Model, filepath: str) -> str:
    """Write the model's weights in the Matterport/Keras-2 h5 layout, atomically.

    A path ending in ``.weights.h5`` is written by Keras in its native format
    instead. The file is first written next to the target and then moved into
    place with ``os.replace``, so an interrupted save never leaves a truncated
    checkpoint under the final name.

    Returns:
        The path written.
    """
    filepath = os.fspath(filepath)
    directory = os.path.dirname(os.path.abspath(filepath))
    os.makedirs(directory, exist_ok=True)
    suffix = ".weights.h5" if filepath.endswith(".weights.h5") else ".h5"
    fd, tmp = tempfile.mkstemp(prefix=".tmp_", suffix=suffix, dir=directory)
    os.close(fd)
    try:
        if suffix == ".weights.h5":
            os.remove(tmp)
            model.save_weights(tmp)
        else:
            _write_legacy(model, tmp)
        os.replace(tmp, filepath)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)
    return filepath


def _write_legacy(model: keras.Model, path: str) -> None:
    with h5py.File(path, "w") as f:
        names = [l.name for l in model.layers]
        f.attrs["layer_names"] = np.array([n.encode("utf8") for n in names])
        f.attrs["backend"] = b"tensorflow"
        f.attrs["keras_version"] = keras.__version__.encode("utf8")
        for layer in model.layers:
            g = f.create_group(layer.name)
            entries = _weight_entries(layer)
            g.attrs["weight_names"] = np.array([n.encode("utf8") for n, _ in entries])
            for name, value in entries:
                g.create_dataset(name, data=value)
