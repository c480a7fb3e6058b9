"""mrcnn.data.pydataset.TrainingPyDataset: the tf.data pipeline's samples without tf.data."""
import numpy as np
import pytest

from mrcnn.data.pipeline import InputPipeline
from mrcnn.data.pydataset import TrainingPyDataset
from samples.shapes.shapes import ShapesConfig, ShapesDataset, make_datasets


class SmallConfig(ShapesConfig):
    IMAGES_PER_GPU = 2
    MAX_GT_INSTANCES = 6


def test_same_batches_as_the_seeded_tf_data_pipeline_over_two_epochs():
    train, _ = make_datasets(6, 1, seed=4)
    cfg = SmallConfig()
    ours = TrainingPyDataset(train, cfg, seed=3)
    assert len(ours) == 3
    got = []
    for _ in range(2):
        got += [ours[i][0] for i in range(len(ours))]
        ours.on_epoch_end()
    want = [tuple(t.numpy() for t in x) for (x,) in
            InputPipeline(train, cfg, seed=3).dataset_fn(epochs=2, molded=True).take(6)]
    assert len(want) == len(got) == 6
    for a, b in zip(got, want):
        assert [x.dtype for x in a] == [x.dtype for x in b]
        for u, v in zip(a, b):
            np.testing.assert_array_equal(u, v)
    assert not np.array_equal(got[0][1], got[3][1])  # the second epoch has another order


def test_skipped_image_is_replaced_by_the_next_and_errors_are_counted():
    class Broken(ShapesDataset):
        def load_image(self, image_id):
            if image_id == 1:
                raise OSError("truncated file")
            return super().load_image(image_id)

    train, _ = make_datasets(4, 1, seed=1)
    broken = Broken()
    broken.__dict__.update(train.__dict__)
    data = TrainingPyDataset(broken, SmallConfig(), shuffle=False, seed=0)
    (inputs,) = data[0]
    ids = inputs[1][:, 0].astype(int)              # image_id field of the meta
    np.testing.assert_array_equal(ids, [0, 2])     # image 1 failed: image 2 takes its place
    assert inputs[0].shape[0] == 2
    assert data.skips.counts == {"error": 1}
    with pytest.raises(IndexError):
        data[len(data)]


def test_training_stream_is_the_tf_data_stream_across_epochs_with_skips():
    """train()'s input off TensorFlow: the same batches as dataset_fn(first_epoch=...), in order."""
    from mrcnn.data.pydataset import TrainingStream

    class Holes(ShapesDataset):
        def load_image(self, image_id):
            if image_id == 2:
                raise OSError("truncated file")
            return super().load_image(image_id)

    train, _ = make_datasets(5, 1, seed=2)
    holes = Holes()
    holes.__dict__.update(train.__dict__)
    cfg = SmallConfig()
    # 5 images, one failing: 4 per epoch, so batches of 2 straddle the epoch boundaries.
    stream = TrainingStream(InputPipeline(holes, cfg, seed=5, worker_mode="thread"), first_epoch=3)
    try:
        assert stream.num_batches is None
        got = []
        for i in range(5):
            got.append(stream[i][0])
            stream.on_epoch_end()  # a Keras epoch boundary does not restart the stream
    finally:
        stream.close()
    want = [tuple(t.numpy() for t in x) for (x,) in
            InputPipeline(holes, cfg, seed=5, worker_mode="thread").dataset_fn(first_epoch=3).take(5)]
    for a, b in zip(got, want):
        assert [x.dtype for x in a] == [x.dtype for x in b]
        for u, v in zip(a, b):
            np.testing.assert_array_equal(u, v)
    ids = np.concatenate([x[1][:, 0] for x in got]).astype(int)
    assert 2 not in ids and len(ids) == 10
    assert stream.skips.counts["error"] >= 2  # image 2 failed in each epoch the stream passed
    with pytest.raises(RuntimeError, match="closed"):
        stream[5]


def test_training_stream_raises_after_max_errors_in_a_row():
    from mrcnn.data.pydataset import TrainingStream

    class Broken(ShapesDataset):
        def load_image(self, image_id):
            raise OSError("unreadable")

    train, _ = make_datasets(4, 1, seed=1)
    broken = Broken()
    broken.__dict__.update(train.__dict__)
    stream = TrainingStream(InputPipeline(broken, SmallConfig(), seed=0, max_errors=2,
                                          worker_mode="thread"))
    try:
        with pytest.raises(RuntimeError, match="3 images in a row failed"):
            stream[0]
    finally:
        stream.close()
