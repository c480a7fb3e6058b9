"""Issue 15, model side: detect/mold_inputs/SavedModel accept what load_image accepts and
refuse the rest with ImageInputError naming the image; weight files of other kinds give one
clear error line without library warnings."""
import io
import os
import warnings
import zipfile

import h5py
import keras
import numpy as np
import pytest
import tensorflow as tf
from PIL import Image

from _model_helpers import small_config, unsaturate
from mrcnn.data.dataset import to_rgb_uint8
from mrcnn.modeling.maskrcnn import ImageInputError, MaskRCNN
from mrcnn.modeling.weights import WeightsFileError, WeightsMismatchError


@pytest.fixture(scope="module")
def model(tmp_path_factory):
    keras.utils.set_random_seed(3)
    # batch 1: every image runs alone, so equal molded inputs give bit-equal outputs
    config = small_config(IMAGES_PER_GPU=1, DETECTION_MIN_CONFIDENCE=0.0)
    return unsaturate(MaskRCNN("inference", config, str(tmp_path_factory.mktemp("logs"))))


def _rgb(h=60, w=90, seed=0):
    rng = np.random.RandomState(seed)
    image = rng.randint(0, 255, (h, w, 3)).astype(np.uint8)
    image[h // 4: h // 2, w // 4: w // 2] = (250, 30, 30)
    return image


def _same(a, b):
    assert a.keys() == b.keys()
    for k in a:
        np.testing.assert_array_equal(a[k], b[k], err_msg=k)


# ---------------------------------------------------------------------------------------------
# detect: accepted forms give the detections of the converted uint8 RGB image
# ---------------------------------------------------------------------------------------------
def test_detect_accepts_what_load_image_accepts(model):
    rgb = _rgb()
    grey = rgb[..., 1].copy()
    palette = Image.fromarray((rgb[..., 0] // 86).astype(np.uint8), "P")
    palette.putpalette([255, 0, 0, 0, 255, 0, 0, 0, 255] + [0] * 759)
    u16 = rgb.astype(np.uint16) * 16 + 3  # a 12-bit range: stretched like a 16-bit TIFF
    variants = {  # input -> the uint8 RGB image it must be treated as
        "float 0..255": (rgb.astype(np.float32), rgb),
        "float 0..1": (rgb / 255.0, rgb),
        "int64": (rgb.astype(np.int64), rgb),
        "list of lists": (rgb.tolist(), rgb),
        "RGBA": (np.dstack([rgb, np.full(rgb.shape[:2], 7, np.uint8)]), rgb),
        "grey 2-D": (grey, np.dstack([grey] * 3)),
        "grey [H, W, 1]": (grey[:, :, None], np.dstack([grey] * 3)),
        "grey + alpha": (np.dstack([grey, grey]), np.dstack([grey] * 3)),
        "bool": (grey > 128, np.dstack([(grey > 128).astype(np.uint8) * 255] * 3)),
        "uint16": (u16, to_rgb_uint8(u16)),
        "PIL palette": (palette, np.asarray(palette.convert("RGB"))),
        "PIL RGB": (Image.fromarray(rgb), rgb),
    }
    names = list(variants)
    results = model.detect([variants[n][0] for n in names])
    expected = model.detect([variants[n][1] for n in names])
    for name, got, want in zip(names, results, expected):
        assert want["class_ids"].size > 0, name  # the comparison is not between empty results
        assert got["masks"].shape[:2] == rgb.shape[:2], name
        _same(got, want)
    # the conversion is not the identity: uint16 is stretched, as load_image stretches it
    assert not np.array_equal(to_rgb_uint8(u16), rgb)


def test_mold_inputs_converts_the_same_way(model):
    rgb = _rgb(50, 50)
    a = model.mold_inputs([rgb[..., 0], rgb / 255.0])
    b = model.mold_inputs([np.dstack([rgb[..., 0]] * 3), rgb])
    for x, y in zip(a, b):
        np.testing.assert_array_equal(x, y)
    assert a[1][0, 1:4].tolist() == [50, 50, 3]  # image meta: the converted original shape


BAD_IMAGES = {
    "NaN": (np.full((30, 40, 3), np.nan), r"image has 3600 non-finite values \(NaN or inf\)"),
    "one inf": (np.where(np.arange(30 * 40 * 3).reshape(30, 40, 3) == 5, np.inf, 1.0),
                r"image has 1 non-finite values"),
    "-inf float16": (np.full((30, 40), -np.inf, np.float16), r"image has 1200 non-finite values"),
    "None": (None, r"got None instead of an image array"),
    "object array": (np.empty((30, 40, 3), object), r"image dtype object is not numeric"),
    "ragged list": ([[1, 2, 3], [4]], r"cannot convert list to an array"),
    "string": ("photo.jpg", r"image dtype <U9 is not numeric"),
    "bytes": (b"\x89PNG", r"image dtype \|S4 is not numeric"),
    "complex": (np.ones((30, 40, 3), np.complex64), r"image dtype complex64 is not numeric"),
    "datetime": (np.zeros((30, 40, 3), "datetime64[s]"), r"image dtype datetime64\[s\] is not numeric"),
    "scalar": (np.uint8(3), r"expected an image of shape \[H, W\] or \[H, W, C\], got shape \(\)"),
    "1-D": (np.zeros(40, np.uint8), r"got shape \(40,\)"),
    "4-D": (np.zeros((1, 30, 40, 3), np.uint8), r"got shape \(1, 30, 40, 3\)"),
    "5 channels": (np.zeros((30, 40, 5), np.uint8), r"\[H, W, 1\.\.4\], got shape \(30, 40, 5\)"),
    "channels first": (np.zeros((3, 30, 40), np.uint8), r"\[H, W, 1\.\.4\], got shape \(3, 30, 40\)"),
    "empty rows": (np.zeros((0, 40, 3), np.uint8), r"empty image of shape \(0, 40, 3\)"),
    "empty list": ([], r"expected an image of shape .* got shape \(0,\)"),
    "zero channels": (np.zeros((30, 40, 0), np.uint8), r"empty image of shape \(30, 40, 0\)"),
    "too thin": (np.zeros((1, 4000, 3), np.uint8), r"shape \(1, 4000, 3\) is too thin to resize"),
}


@pytest.mark.parametrize("case", sorted(BAD_IMAGES))
def test_detect_and_mold_inputs_reject_bad_images_naming_the_index(model, case):
    image, message = BAD_IMAGES[case]
    good = _rgb(30, 40)
    with pytest.raises(ImageInputError, match=r"^image 1: .*" + message):
        model.detect([good, image])
    with pytest.raises(ImageInputError, match=r"^image 1: .*" + message):
        model.mold_inputs([good, image])


@pytest.mark.parametrize("images, message", [
    (None, r"expected a list of images, got None"),
    (5, r"expected a list of images, got int"),
    ("a.jpg", r"expected a list of images, got str"),
    ({"image": 1}, r"expected a list of images, got dict"),
    (Image.new("RGB", (8, 8)), r"expected a list of images, got Image"),
    (np.zeros((30, 40), np.uint8), r"single image array of shape \(30, 40\) \(wrap it in a list\)"),
    (np.zeros((30, 40, 3), np.uint8), r"single image array of shape \(30, 40, 3\)"),
    (np.zeros((1, 2, 30, 40, 3), np.uint8), r"an array of shape \(1, 2, 30, 40, 3\)"),
    (np.zeros(5), r"an array of shape \(5,\)"),
])
def test_detect_rejects_what_is_not_a_list_of_images(model, images, message):
    with pytest.raises(ImageInputError, match=message):
        model.detect(images)
    with pytest.raises(ImageInputError, match=message):
        model.mold_inputs(images)


def test_detect_empty_list_and_4d_batch(model):
    assert model.detect([]) == []
    with pytest.raises(ImageInputError, match="mold_inputs\\(\\) got no images"):
        model.mold_inputs([])
    batch = np.stack([_rgb(40, 40, seed=s) for s in (1, 2)])
    for got, want in zip(model.detect(batch), model.detect(list(batch))):
        _same(got, want)


def test_saved_model_signature_takes_uint8_grey_and_rgba_and_refuses_empty(model):
    from mrcnn.modeling.export import serving_fn
    serve = serving_fn(model)
    rgb = _rgb(40, 50)
    grey = rgb[..., :1]
    want = serve(tf.constant(np.dstack([grey] * 3)))
    for image in (grey, np.dstack([grey, grey]), np.dstack([np.dstack([grey] * 3), grey])):
        got = serve(tf.constant(image))
        for k in want:
            np.testing.assert_array_equal(got[k].numpy(), want[k].numpy(), err_msg=k)
    assert want["masks"].shape[:2] == (40, 50)
    with pytest.raises(tf.errors.InvalidArgumentError, match="image is empty"):
        serve(tf.zeros([0, 50, 3], tf.uint8))
    with pytest.raises(tf.errors.InvalidArgumentError, match="1 to 4 channels"):
        serve(tf.zeros([40, 50, 5], tf.uint8))
    with pytest.raises((TypeError, ValueError)):  # the signature is uint8: floats are refused by TF
        serve(tf.zeros([40, 50, 3], tf.float32))


def test_saved_model_uint16_and_float_endpoints_convert_as_to_rgb_uint8(model):
    from mrcnn.modeling.export import serving_fns
    fns = serving_fns(model)
    assert set(fns) == {"serve", "serve_uint16", "serve_float"}
    rgb = _rgb(40, 50, seed=4)
    rng = np.random.RandomState(5)
    cases = [
        ("serve_uint16", rgb.astype(np.uint16) * 16 + 3),           # 12-bit range: stretched
        ("serve_uint16", rgb.astype(np.uint16)),                     # uint16 in 0..255: stretched too
        ("serve_uint16", np.full((40, 50, 3), 700, np.uint16)),      # constant: all zeros
        ("serve_float", rgb.astype(np.float32) / 255.0),             # 0..1: x255
        ("serve_float", rgb.astype(np.float32)),                     # 0..255: kept
        ("serve_float", rng.uniform(-5, 300, (40, 50, 3)).astype(np.float32)),  # stretched
        ("serve_float", (rgb[..., :1] / 255.0).astype(np.float32)),  # grey [H, W, 1]
        ("serve_float", np.dstack([rgb, rgb[..., :1]]).astype(np.float32)),  # RGBA levels
        ("serve_float", np.dstack([rgb[..., :1], np.full((40, 50, 1), 1e6)]).astype(np.float32)),
    ]
    for name, image in cases:
        expected_input = to_rgb_uint8(image)
        want = fns["serve"](tf.constant(expected_input))
        got = fns[name](tf.constant(image))
        for k in want:
            np.testing.assert_array_equal(got[k].numpy(), want[k].numpy(),
                                          err_msg=f"{name} {image.dtype} {image.shape} {k}")
    nan = rgb.astype(np.float32)
    nan[3, 4, 1] = np.nan
    with pytest.raises(tf.errors.InvalidArgumentError, match="non-finite"):
        fns["serve_float"](tf.constant(nan))
    with pytest.raises(tf.errors.InvalidArgumentError, match="image is empty"):
        fns["serve_float"](tf.zeros([5, 0, 3], tf.float32))


# ---------------------------------------------------------------------------------------------
# weight files that are not a Matterport-layout h5 of this architecture
# ---------------------------------------------------------------------------------------------
def _other_keras_model():
    other = keras.Sequential([keras.Input((8,)), keras.layers.Dense(4, name="dense_a"),
                              keras.layers.Dense(2, name="dense_b")])
    return other


def _bad_weight_files(tmp):
    """name -> (path, exception type, regex of the one-line message)."""
    files = {}
    other = _other_keras_model()
    p = os.path.join(tmp, "other.weights.h5")
    other.save_weights(p)
    files["keras3 weights of another model"] = (p, WeightsMismatchError,
                                                r"is a Keras 3 native weights file of a different model: "
                                                r"it holds 4 arrays")
    p = os.path.join(tmp, "other.keras")
    other.save(p)
    files[".keras of another model"] = (p, WeightsMismatchError,
                                        r"is a Keras 3 \.keras archive of a different model")
    p = os.path.join(tmp, "legacy_other.h5")
    from mrcnn.modeling.weights import save_weights
    save_weights(other, p)  # Matterport/Keras-2 layout, but of a 2-layer model
    files["legacy h5 of another model"] = (p, WeightsMismatchError,
                                           r"Keras h5 weights file of another model: none of its 2 layers")
    p = os.path.join(tmp, "random.h5")
    with h5py.File(p, "w") as f:
        f["x"] = np.arange(5)
    files["random h5"] = (p, WeightsFileError, r"is HDF5 but not a Keras weights file")
    for name, content, message in (
            ("notes.txt", b"just some text\n", r"not an HDF5 file \(a text file starting 'just some text"),
            ("empty.h5", b"", r"not an HDF5 file \(an empty file"),
            ("lfs.h5", b"version https://git-lfs.github.com/spec/v1\noid sha256:abc\n",
             r"not an HDF5 file \(a Git LFS pointer"),
            ("page.h5", b"<!DOCTYPE html><html><body>404</body></html>", r"an HTML page: a failed download"),
            ("gz.h5", b"\x1f\x8b\x08\x00rest", r"a gzip file"),
            ("model.pth", b"\x80\x02}q\x00.", r"a pickle/zip file"),
            ("bin.h5", b"\x00\xff\xfe" * 100, r"binary data of an unknown format")):
        p = os.path.join(tmp, name)
        with open(p, "wb") as f:
            f.write(content)
        files[name] = (p, WeightsFileError, message)
    p = os.path.join(tmp, "archive.zip")
    with zipfile.ZipFile(p, "w") as z:
        z.writestr("a.txt", "x")
    files["zip"] = (p, WeightsFileError, r"is a zip archive, not an HDF5 weights file")
    p = os.path.join(tmp, "nozip.keras")
    with zipfile.ZipFile(p, "w") as z:
        z.writestr("config.json", "{}")
    files[".keras without weights"] = (p, WeightsFileError, r"zip archive without model.weights.h5")
    files["directory"] = (tmp, WeightsFileError, r"is a directory")
    files["missing"] = (os.path.join(tmp, "nope.h5"), WeightsFileError, r"does not exist")
    files["None"] = (None, WeightsFileError, r"must be a str or os.PathLike, got NoneType")
    files["bytes buffer"] = (io.BytesIO(b"x"), WeightsFileError, r"got BytesIO")
    return files


def test_bad_weight_files_give_one_clear_line_and_no_warnings(model, tmp_path, caplog):
    files = _bad_weight_files(str(tmp_path))
    before = [w.numpy().copy() for w in model.keras_model.weights[:3]]
    for name, (path, error, message) in files.items():
        for by_name in (False, True):
            caplog.clear()
            with warnings.catch_warnings(record=True) as caught:
                warnings.simplefilter("always")
                with pytest.raises(error, match=message) as info:
                    model.load_weights(path, by_name=by_name)
            assert "\n" not in str(info.value), name
            assert not caught, (name, [str(w.message)[:80] for w in caught[:3]])
            assert not [r for r in caplog.records if r.levelname in ("WARNING", "ERROR")], name
    for a, w in zip(before, model.keras_model.weights[:3]):  # nothing was assigned
        np.testing.assert_array_equal(a, w.numpy())


def test_keras_native_file_of_another_class_count_names_the_shapes(model, tmp_path):
    other = MaskRCNN("inference", small_config(NUM_CLASSES=3), str(tmp_path))
    path = str(tmp_path / "three.weights.h5")
    other.save_weights(path)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        with pytest.raises(WeightsMismatchError, match=r"three.weights.h5' is a Keras 3 native weights file "
                                                       r"of a different model: it holds \d+ arrays like this "
                                                       r"Mask R-CNN, but \d+ of them have other shapes .* "
                                                       r"another NUM_CLASSES"):
            model.load_weights(path)
    assert not caught
    # and this model's own native file still loads
    own = str(tmp_path / "own.weights.h5")
    model.save_weights(own)
    assert model.load_weights(own).keras_native


def test_detect_molded_refuses_nan_and_object_arrays_of_images_work(model):
    molded, metas, _ = model.mold_inputs([_rgb(40, 40), _rgb(40, 40, seed=1)])
    molded[1, 3, 3, 0] = np.nan
    with pytest.raises(ImageInputError, match=r"image 1: molded image has non-finite"):
        model.detect_molded(molded, metas)
    mixed = np.empty(2, dtype=object)
    mixed[0], mixed[1] = _rgb(40, 40), _rgb(30, 50)
    for got, want in zip(model.detect(mixed), model.detect([mixed[0], mixed[1]])):
        _same(got, want)
