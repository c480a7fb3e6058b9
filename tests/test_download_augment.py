"""Weights download (served from 127.0.0.1), offline error, and augmentation on NumPy 2."""
import hashlib
import http.server
import os
import threading

import h5py
import numpy as np
import pytest

from mrcnn import utils
from mrcnn.data import augment as aug
from mrcnn.io import download as dl


def _fake_weights(path):
    with h5py.File(path, "w") as f:
        f.attrs["layer_names"] = [b"conv1", b"fpn_c5p5", b"mrcnn_mask"]
        for name in ("conv1", "fpn_c5p5", "mrcnn_mask"):
            f.create_group(name).attrs["weight_names"] = []
    return path


@pytest.fixture
def server(tmp_path):
    root = tmp_path / "srv"
    root.mkdir()
    _fake_weights(str(root / "mask_rcnn_coco.h5"))
    (root / "junk.h5").write_bytes(b"this is not hdf5" * 100)

    class Handler(http.server.SimpleHTTPRequestHandler):
        def __init__(self, *a, **k):
            super().__init__(*a, directory=str(root), **k)

        def log_message(self, *a):
            pass

    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    t = threading.Thread(target=httpd.serve_forever, daemon=True)
    t.start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}", root
    httpd.shutdown()


def test_download_from_local_server_with_checksum(server, tmp_path):
    url, root = server
    digest = hashlib.sha256((root / "mask_rcnn_coco.h5").read_bytes()).hexdigest()
    dest = tmp_path / "out" / "mask_rcnn_coco.h5"
    got = utils.download_trained_weights(str(dest), verbose=0, url=url + "/mask_rcnn_coco.h5", sha256=digest)
    assert got == str(dest)
    assert dest.read_bytes() == (root / "mask_rcnn_coco.h5").read_bytes()
    assert os.listdir(dest.parent) == ["mask_rcnn_coco.h5"]


def test_checksum_mismatch_leaves_no_file(server, tmp_path):
    url, _ = server
    dest = tmp_path / "dest" / "mask_rcnn_coco.h5"
    with pytest.raises(dl.DownloadError, match="Checksum mismatch"):
        utils.download_trained_weights(str(dest), verbose=0, url=url + "/mask_rcnn_coco.h5", sha256="0" * 64)
    assert os.listdir(dest.parent) == []


def test_non_hdf5_content_is_rejected(server, tmp_path):
    url, _ = server
    with pytest.raises(dl.DownloadError, match="not an HDF5"):
        utils.download_trained_weights(str(tmp_path / "dest" / "w.h5"), verbose=0, url=url + "/junk.h5")
    assert os.listdir(tmp_path / "dest") == []


def test_offline_message_says_what_to_do(tmp_path, monkeypatch):
    monkeypatch.setenv("MRCNN_COCO_URL", "http://127.0.0.1:9/mask_rcnn_coco.h5")  # port 9: nothing listens
    with pytest.raises(dl.DownloadError) as err:
        utils.download_trained_weights(str(tmp_path / "mask_rcnn_coco.h5"), verbose=0)
    msg = str(err.value)
    assert "load_weights('/path/to/mask_rcnn_coco.h5'" in msg and "--weights" in msg
    assert os.listdir(tmp_path) == []


def test_weights_doc_exists():
    from helpers import REPO
    text = open(os.path.join(REPO, "mask_rcnn_coco.h5.txt")).read()
    assert dl.COCO_MODEL_URL in text


def test_imgaug_imports_on_numpy2_and_moves_masks_only_geometrically():
    imgaug = aug.import_imgaug()
    import imgaug.augmenters as iaa
    assert imgaug.__version__.startswith("0.4")
    image = np.zeros((40, 60, 3), np.uint8)
    image[5:15, 2:12] = 200
    mask = np.zeros((40, 60, 1), bool)
    mask[5:15, 2:12] = True
    seq = iaa.Sequential([iaa.Fliplr(1.0), iaa.Multiply((1.5, 1.5)), iaa.GaussianBlur(sigma=2.0)])
    new_image, new_mask = aug.augment(image, mask, seq)
    assert new_mask.dtype == bool and new_mask.shape == mask.shape
    # flipped, and not blurred: the mask is still an exact 10x10 block
    assert new_mask[5:15, 48:58, 0].all() and new_mask.sum() == 100
    assert new_image[10, 52].max() > 0 and new_image[10, 5].max() == 0


def test_augment_rejects_shape_change():
    imgaug = aug.import_imgaug()
    import imgaug.augmenters as iaa
    with pytest.raises(ValueError, match="changed the image shape"):
        aug.augment(np.zeros((20, 20, 3), np.uint8), np.zeros((20, 20, 1), bool), iaa.Resize(10))


def test_albumentations_moves_masks_geometrically_and_keeps_colour_off_them():
    A = pytest.importorskip("albumentations")
    image = np.zeros((40, 60, 3), np.uint8)
    image[5:15, 2:12] = 100
    mask = np.zeros((40, 60, 2), bool)
    mask[5:15, 2:12, 0] = True
    mask[30:35, 40:50, 1] = True
    pipe = A.Compose([A.HorizontalFlip(p=1.0), A.RandomBrightnessContrast((0.5, 0.5), (0.0, 0.0), p=1.0)])
    new_image, new_mask = aug.augment(image, mask, pipe, seed=3)
    assert new_mask.dtype == bool and new_mask.shape == mask.shape
    assert new_mask[5:15, 48:58, 0].all() and new_mask[:, :, 0].sum() == 100
    assert new_mask[30:35, 10:20, 1].all() and new_mask[:, :, 1].sum() == 50
    # Flipped: the square now sits at columns 48..57; brightened: +0.5 of the range everywhere.
    assert int(new_image[10, 52, 0]) - int(new_image[10, 5, 0]) == 100
    assert new_image[10, 5, 0] > 100


def test_albumentations_with_a_seed_repeats_and_differs_between_seeds():
    A = pytest.importorskip("albumentations")
    rng = np.random.RandomState(0)
    image = rng.randint(0, 255, (32, 32, 3)).astype(np.uint8)
    mask = rng.rand(32, 32, 3) > 0.5
    pipe = A.Compose([A.HorizontalFlip(p=0.5), A.VerticalFlip(p=0.5), A.Affine(rotate=(-30, 30), p=1.0)])
    runs = [aug.augment(image, mask, pipe, seed=s) for s in (7, 7, 8)]
    np.testing.assert_array_equal(runs[0][0], runs[1][0])
    np.testing.assert_array_equal(runs[0][1], runs[1][1])
    assert not np.array_equal(runs[0][0], runs[2][0])
