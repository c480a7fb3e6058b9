"""The tf.data pipeline: same samples as Matterport's data_generator, determinism, skips."""
import numpy as np
import pytest

from mrcnn.core.image import mold_image
from mrcnn.data import loader
from mrcnn.data.pipeline import InputPipeline
from samples.shapes.shapes import ShapesConfig, ShapesDataset, make_datasets


class SmallConfig(ShapesConfig):
    IMAGES_PER_GPU = 2
    MAX_GT_INSTANCES = 6


def _batches(ds, n):
    return [tuple(t.numpy() for t in x) for (x,) in ds.take(n)]


def test_pipeline_matches_data_generator():
    train, _ = make_datasets(6, 1, seed=4)
    cfg = SmallConfig()
    pipe = InputPipeline(train, cfg, shuffle=False, seed=0)
    ours = _batches(pipe.dataset_fn(epochs=1), 3)
    molded = _batches(InputPipeline(train, cfg, shuffle=False, seed=0).dataset_fn(epochs=1, molded=True), 3)
    gen = loader.data_generator(train, cfg, shuffle=False, batch_size=2)
    theirs = [next(gen)[0] for _ in range(3)]
    assert len(ours) == len(molded) == 3
    for a, m, b in zip(ours, molded, theirs):
        img, meta, match, bbox, cls, boxes, masks = a
        # The stream carries the resized uint8 image and int8 labels (the model molds them);
        # molded=True gives the generator's float32 image and int32 labels bit for bit.
        assert img.dtype == np.uint8 and match.dtype == np.int8 and m[0].dtype == np.float32
        np.testing.assert_array_equal(mold_image(img, cfg).astype(np.float32), b[0].astype(np.float32))
        np.testing.assert_array_equal(m[0], b[0].astype(np.float32))
        np.testing.assert_array_equal(m[2], match.astype(np.int32))
        assert m[2].dtype == np.int32
        for u, v in zip(m[3:], a[3:]):
            np.testing.assert_array_equal(u, v)
        np.testing.assert_array_equal(meta, b[1])
        np.testing.assert_array_equal(cls, b[4])
        np.testing.assert_array_equal(boxes, b[5])
        np.testing.assert_array_equal(masks, b[6])
        # Positives are never subsampled here: identical; negatives are drawn, so compare counts.
        np.testing.assert_array_equal(match == 1, b[2] == 1)
        np.testing.assert_array_equal((match == -1).sum(axis=(1, 2)), (b[2] == -1).sum(axis=(1, 2)))
        np.testing.assert_allclose(bbox, b[3], atol=1e-5)


def test_seeded_pipeline_is_deterministic_across_worker_counts():
    train, _ = make_datasets(8, 1, seed=2)
    cfg = SmallConfig()
    a = _batches(InputPipeline(train, cfg, seed=7).dataset_fn(num_parallel_calls=1), 4)
    b = _batches(InputPipeline(train, cfg, seed=7).dataset_fn(num_parallel_calls=4), 4)
    c = _batches(InputPipeline(train, cfg, seed=8).dataset_fn(num_parallel_calls=4), 4)
    for x, y in zip(a, b):
        for u, v in zip(x, y):
            np.testing.assert_array_equal(u, v)
    assert any(not np.array_equal(x[1], z[1]) for x, z in zip(a, c))  # another seed, another order


def test_bad_and_empty_images_are_skipped_and_counted(caplog):
    from _pipeline_helpers import Broken  # image 1 unreadable, image 2 without instances
    ds = Broken()
    ds.load_shapes(5, 128, 128, seed=1)
    ds.prepare()
    pipe = InputPipeline(ds, SmallConfig(), shuffle=False, seed=0)
    got = _batches(pipe.dataset_fn(epochs=1, drop_remainder=False), 5)
    ids = sorted(int(i) for b in got for i in b[1][:, 0])
    assert ids == [0, 3, 4]
    assert pipe.skips.counts == {"error": 1, "no instances": 1}
    assert "image id 1" in caplog.text and "truncated file" in caplog.text


def test_too_many_consecutive_errors_raise_naming_the_image():
    class AllBroken(ShapesDataset):
        def load_image(self, image_id):
            raise OSError("corrupt")

    ds = AllBroken()
    ds.load_shapes(4, 128, 128, seed=1)
    ds.prepare()
    pipe = InputPipeline(ds, SmallConfig(), shuffle=False, seed=0, max_errors=2)
    with pytest.raises(Exception, match="in a row failed to load; last was image id 2"):
        _batches(pipe.dataset_fn(epochs=1), 1)


def test_shards_split_each_global_batch_between_workers():
    train, _ = make_datasets(10, 1, seed=6)
    cfg = type("FourPerBatch", (SmallConfig,), {"IMAGES_PER_GPU": 4})()
    pipe = InputPipeline(train, cfg, shuffle=True, seed=2)
    whole = _batches(pipe.dataset_fn(epochs=2), 4)
    parts = [_batches(pipe.dataset_fn(epochs=2, shard=(i, 2)), 4) for i in range(2)]
    assert all(p[0][0].shape[0] == 2 for p in parts)  # each worker batches 4 / 2 images
    for k in range(4):
        for t in (0, 1, 5, 6):  # image, meta (image id), boxes, masks: the same samples
            np.testing.assert_array_equal(np.concatenate([parts[0][k][t], parts[1][k][t]]), whole[k][t])
    with pytest.raises(ValueError, match="divisible"):
        pipe.dataset_fn(shard=(0, 3))
    with pytest.raises(ValueError, match="index < count"):
        pipe.dataset_fn(shard=(2, 2))


def test_albumentations_in_the_training_pipeline_is_deterministic_per_seed():
    A = pytest.importorskip("albumentations")
    train, _ = make_datasets(6, 1, seed=4)
    pipe_aug = A.Compose([A.HorizontalFlip(p=0.5), A.Affine(scale=(0.8, 1.2), p=1.0)])

    def first_batches(workers):
        pipe = InputPipeline(train, SmallConfig(), shuffle=True, augmentation=pipe_aug, seed=5)
        ds = pipe.dataset_fn(epochs=1, num_parallel_calls=workers)
        return [[np.asarray(t) for t in b[0]] for b in ds.take(3)]

    one, four = first_batches(1), first_batches(4)
    for a, b in zip(one, four):
        for x, y in zip(a, b):
            np.testing.assert_array_equal(x, y)
    plain = InputPipeline(train, SmallConfig(), shuffle=True, seed=5).dataset_fn(epochs=1, num_parallel_calls=1)
    plain_images = [np.asarray(b[0][0]) for b in plain.take(3)]
    assert any(not np.array_equal(p, a[0]) for p, a in zip(plain_images, one))
