"""Worker processes of the tf.data pipeline: same stream as threads, fallback, counting, teardown."""
import logging
import os
import subprocess
import sys
import textwrap
import time

import numpy as np
import pytest

from _pipeline_helpers import BadClassIds, Broken
from mrcnn.data.pipeline import InputPipeline
from mrcnn.data.workers import PoolUnavailable
from samples.shapes.shapes import ShapesConfig, ShapesDataset, make_datasets

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


class SmallConfig(ShapesConfig):
    IMAGES_PER_GPU = 2
    MAX_GT_INSTANCES = 6


def _batches(ds, n):
    return [tuple(t.numpy() for t in x) for (x,) in ds.take(n)]


def _assert_same(a, b):
    assert len(a) == len(b) > 0
    for x, y in zip(a, b):
        for u, v in zip(x, y):
            np.testing.assert_array_equal(u, v)


def test_processes_give_the_thread_stream_and_run_in_other_processes():
    iaa = pytest.importorskip("mrcnn.data.augment").import_imgaug().augmenters
    aug = iaa.Sequential([iaa.Fliplr(0.5), iaa.Affine(rotate=(-10, 10)), iaa.Multiply((0.8, 1.2))])
    train, _ = make_datasets(8, 1, seed=3)
    procs = InputPipeline(train, SmallConfig(), seed=11, augmentation=aug, worker_mode="process")
    threads = InputPipeline(train, SmallConfig(), seed=11, augmentation=aug, worker_mode="thread")
    a = _batches(procs.dataset_fn(num_parallel_calls=2), 4)
    b = _batches(threads.dataset_fn(num_parallel_calls=1), 4)
    _assert_same(a, b)
    pool = next(iter(procs._pools.values()))
    assert pool._processes and os.getpid() not in [p.pid for p in pool._processes.values()]
    assert not threads._pools


def test_unpicklable_dataset_falls_back_to_threads_with_a_clear_message(caplog):
    train, _ = make_datasets(6, 1, seed=4)
    train.load_image = lambda image_id, _f=train.load_image: _f(image_id)  # a lambda: cannot be pickled
    pipe = InputPipeline(train, SmallConfig(), seed=2)
    with caplog.at_level(logging.WARNING, "mrcnn.data"):
        got = _batches(pipe.dataset_fn(num_parallel_calls=2), 2)
    assert "cannot send the dataset to worker processes" in caplog.text and "worker_mode='thread'" in caplog.text
    assert not pipe._pools
    plain, _ = make_datasets(6, 1, seed=4)
    _assert_same(got, _batches(InputPipeline(plain, SmallConfig(), seed=2).dataset_fn(num_parallel_calls=2), 2))
    with pytest.raises(PoolUnavailable, match="cannot send the dataset"):
        InputPipeline(train, SmallConfig(), seed=2, worker_mode="process").dataset_fn()


def test_skips_errors_and_strict_mode_are_counted_in_the_owner_process(caplog):
    ds = Broken()
    ds.load_shapes(5, 128, 128, seed=1)
    ds.prepare()
    pipe = InputPipeline(ds, SmallConfig(), shuffle=False, seed=0, worker_mode="process")
    with caplog.at_level(logging.ERROR, "mrcnn.data"):
        got = _batches(pipe.dataset_fn(epochs=1, drop_remainder=False, num_parallel_calls=2), 5)
    assert sorted(int(i) for b in got for i in b[1][:, 0]) == [0, 3, 4]
    assert pipe.skips.counts == {"error": 1, "no instances": 1}
    assert "image id 1" in caplog.text and "truncated file" in caplog.text
    assert pipe._pools



def test_a_worker_that_cannot_start_gives_threads_and_says_why(caplog):
    """The dataset pickles but a worker cannot rebuild it: the pool breaks at the first request,
    the pipeline logs why and makes every sample in threads; the stream is the thread stream."""
    from _pipeline_helpers import OnlyHere
    ds = OnlyHere()
    ds.load_shapes(4, 128, 128, seed=3)
    ds.prepare()
    pipe = InputPipeline(ds, SmallConfig(), seed=6, worker_mode="process")
    with caplog.at_level(logging.WARNING, "mrcnn.data"):
        got = _batches(pipe.dataset_fn(num_parallel_calls=2), 3)
    assert "could not start" in caplog.text and "annotation database is locked" in caplog.text
    assert "loading in threads from now on" in caplog.text
    plain = InputPipeline(ds, SmallConfig(), seed=6, worker_mode="thread")
    _assert_same(got, _batches(plain.dataset_fn(num_parallel_calls=2), 3))


class StrictConfig(SmallConfig):
    STRICT_DATA_CHECKS = True


def test_strict_mode_raises_the_workers_sample_error():
    from mrcnn.data.validate import SampleError
    ds = BadClassIds()
    ds.load_shapes(3, 128, 128, seed=1)
    ds.prepare()
    pipe = InputPipeline(ds, StrictConfig(), shuffle=False, seed=0, worker_mode="process")
    with pytest.raises(Exception, match=r"image id 1 .*class ids \[99"):
        list(pipe.dataset_fn(batch_size=1, epochs=1, num_parallel_calls=2))
    assert isinstance(pipe.strict_error, SampleError)


def test_close_ends_the_streams():
    train, _ = make_datasets(6, 1, seed=5)
    pipe = InputPipeline(train, SmallConfig(), seed=1, worker_mode="process")
    it = iter(pipe.dataset_fn(num_parallel_calls=2))
    next(it)
    pipe.close()
    rest = 0
    for _ in it:  # what was already made may still come, then the stream ends
        rest += 1
        assert rest < 20


_STRESS = textwrap.dedent('''
    import faulthandler, os, sys, time
    faulthandler.dump_traceback_later(float(sys.argv[1]), exit=True)  # a hang prints every thread's stack
    import numpy as np
    import tensorflow as tf
    from mrcnn.config import Config
    from mrcnn.data.formats.coco import CocoDataset
    from mrcnn.data.pipeline import InputPipeline

    class DefaultConfig(Config):
        NAME = "coco_default"
        NUM_CLASSES = 81

    def main():
        global keep, keep2  # alive at interpreter exit
        mini = sys.argv[2]
        ds = CocoDataset()
        ds.load_coco(os.path.join(mini, "annotations.json"), os.path.join(mini, "images"))
        ds.prepare()
        cfg = DefaultConfig()
        pipes = {m: InputPipeline(ds, cfg, seed=3, worker_mode=m) for m in ("process", "thread")}
        start = time.time()
        rounds = int(sys.argv[3])
        for k in range(rounds):
            pipe = pipes["process" if k % 2 else "thread"]
            it = iter(pipe.dataset_fn(num_parallel_calls=1 + k % 3 if k % 3 < 2 else tf.data.AUTOTUNE))
            batch = next(it)[0]
            assert batch[0].shape == (2, 1024, 1024, 3)
            if k % 4 == 3:
                next(it)
            del it, batch  # dropped with fetches in flight
        keep = iter(pipes["thread"].dataset_fn(num_parallel_calls=2))
        next(keep)
        keep2 = iter(pipes["process"].dataset_fn(num_parallel_calls=2))
        next(keep2)
        print("ROUNDS", rounds, "SECONDS", round(time.time() - start, 1), flush=True)
        # Exit with both iterators alive and fetches in flight: the atexit hook must drain them.

    if __name__ == '__main__':  # spawned workers import this file
        main()
''')


def _stress(tmp_path, rounds, watchdog):
    from helpers import DATA
    script = tmp_path / "stress.py"
    script.write_text(_STRESS)
    env = dict(os.environ, PYTHONPATH=ROOT, TF_CPP_MIN_LOG_LEVEL="2")
    out = subprocess.run([sys.executable, str(script), str(watchdog), os.path.join(DATA, "coco_val2017_mini"),
                          str(rounds)], env=env, cwd=ROOT, capture_output=True, text=True, timeout=watchdog + 60)
    assert out.returncode == 0, out.stdout[-2000:] + out.stderr[-6000:]
    assert f"ROUNDS {rounds}" in out.stdout


def test_iterators_dropped_mid_stream_never_hang():
    """In this process, small images: iterators of both worker modes created, read and dropped with
    fetches in flight, as Keras does with validation data every epoch; a watchdog turns a hang into
    a failure with every thread's stack."""
    import faulthandler
    train, _ = make_datasets(6, 1, seed=7)
    pipes = [InputPipeline(train, SmallConfig(), seed=1, worker_mode=m) for m in ("thread", "process")]
    faulthandler.dump_traceback_later(300, exit=True)
    try:
        for k in range(16):
            it = iter(pipes[k % 2].dataset_fn(num_parallel_calls=1 + k % 3))
            next(it)
            del it
    finally:
        faulthandler.cancel_dump_traceback_later()


@pytest.mark.slow
def test_iterators_at_the_default_config_never_hang(tmp_path):
    """Default config (1024 px, 261,888 anchors), in a fresh process: iterators of both worker modes
    dropped mid-stream many times, then the process exits with two live iterators and fetches in
    flight (the atexit hook drains them); a watchdog kills a hang. ~90 s on a loaded 2-core machine."""
    _stress(tmp_path, rounds=24, watchdog=1500)


_DEVICES = textwrap.dedent('''
    import sys
    import numpy as np
    import tensorflow as tf
    cpu = tf.config.list_physical_devices("CPU")[0]
    tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2)
    from mrcnn.data.pipeline import InputPipeline, distribute
    from samples.shapes.shapes import ShapesConfig, make_datasets

    class Cfg(ShapesConfig):
        IMAGES_PER_GPU = 2
        GPU_COUNT = 2
        MAX_GT_INSTANCES = 6

    train, _ = make_datasets(8, 1, seed=2)
    pipe = InputPipeline(train, Cfg(), seed=4, worker_mode="thread")
    strategy = tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"])
    plain = [tuple(t.numpy() for t in x) for (x,) in pipe.dataset_fn(batch_size=4).take(2)]
    dist = iter(distribute(pipe.dataset_fn(batch_size=4), strategy))
    for k in range(2):
        (inputs,) = next(dist)
        for t, whole in zip(inputs, plain[k]):
            parts = strategy.experimental_local_results(t)
            assert [p.device.split("/")[-1] for p in parts] == ["device:CPU:0", "device:CPU:1"], \\
                [p.device for p in parts]
            np.testing.assert_array_equal(np.concatenate([p.numpy() for p in parts]), whole)
    # One accelerator: OneDeviceStrategy (pass it as train(strategy=...)) prefetches onto it.
    one = tf.distribute.OneDeviceStrategy("/cpu:1")
    (inputs,) = next(iter(distribute(pipe.dataset_fn(batch_size=4), one)))
    assert all(t.device.endswith("device:CPU:1") for t in inputs), [t.device for t in inputs]
    np.testing.assert_array_equal(inputs[1].numpy(), plain[0][1])
    print("DEVICES OK", flush=True)
''')


def test_batches_arrive_on_each_replica_device_under_mirrored_strategy(tmp_path):
    script = tmp_path / "devices.py"
    script.write_text(_DEVICES)
    env = dict(os.environ, PYTHONPATH=ROOT, TF_CPP_MIN_LOG_LEVEL="2")
    out = subprocess.run([sys.executable, str(script)], env=env, cwd=ROOT, capture_output=True, text=True,
                         timeout=600)
    assert out.returncode == 0 and "DEVICES OK" in out.stdout, out.stderr[-4000:]


_UNGUARDED = textwrap.dedent('''
    import os, sys
    with open(sys.argv[1], "a") as f:  # top-level code: a spawned worker would run it again
        f.write(str(os.getpid()) + "\\n")
    from mrcnn.data.pipeline import InputPipeline
    from samples.shapes.shapes import ShapesConfig, make_datasets

    class Cfg(ShapesConfig):
        IMAGES_PER_GPU = 2
        MAX_GT_INSTANCES = 6

    train, _ = make_datasets(4, 1, seed=2)
    pipe = InputPipeline(train, Cfg(), seed=4)
    (x,) = next(iter(pipe.dataset_fn(num_parallel_calls=2)))
    print("BATCH", tuple(x[0].shape), "POOLS", len(pipe._pools), flush=True)
''')


def test_script_without_main_guard_loads_in_threads_and_runs_once(tmp_path):
    """spawn re-runs the main script in each worker: an unguarded one (which would train again
    there) gets threads and a message saying why."""
    script, marker = tmp_path / "unguarded.py", tmp_path / "runs.txt"
    script.write_text(_UNGUARDED)
    env = dict(os.environ, PYTHONPATH=ROOT, TF_CPP_MIN_LOG_LEVEL="2")
    out = subprocess.run([sys.executable, str(script), str(marker)], env=env, cwd=ROOT, capture_output=True,
                         text=True, timeout=600)
    assert out.returncode == 0, out.stderr[-4000:]
    assert "POOLS 0" in out.stdout and "BATCH (2, 128, 128, 3)" in out.stdout, out.stdout
    assert f"the script {script} has no" in out.stderr and "guard" in out.stderr, out.stderr[-2000:]
    assert len(marker.read_text().split()) == 1


# ------------------------------------------------------------------------------ shared memory
def _segments(prefix):
    return sorted(n for n in os.listdir("/dev/shm") if n.startswith(prefix))


@pytest.mark.skipif(not os.path.isdir("/dev/shm"), reason="POSIX shared memory listed in /dev/shm")
def test_shared_memory_slots_are_reused_safely_and_unlinked_at_close():
    """Workers mold into shared-memory slots; with few slots they are reused (and, when all are
    held, samples go through the pipe) and the stream stays the thread stream bit for bit."""
    train, _ = make_datasets(10, 1, seed=6)
    procs = InputPipeline(train, SmallConfig(), seed=5, worker_mode="process")
    threads = InputPipeline(train, SmallConfig(), seed=5, worker_mode="thread")
    procs._slots.max_slots = 3  # fewer than the map and batch hold at once: reuse and pipe fallback
    got = _batches(procs.dataset_fn(num_parallel_calls=2), 12)
    _assert_same(got, _batches(threads.dataset_fn(num_parallel_calls=2), 12))
    prefix = procs._slots._prefix
    assert procs._slots.size == 3 and len(_segments(prefix)) == 3
    procs.close()
    assert _segments(prefix) == []


_SHM = textwrap.dedent('''
    import faulthandler, os, signal, sys, time
    faulthandler.dump_traceback_later(240, exit=True)  # a hang prints every thread's stack
    from mrcnn.data.pipeline import InputPipeline
    from samples.shapes.shapes import ShapesConfig, make_datasets

    from samples.shapes.shapes import ShapesDataset

    class Cfg(ShapesConfig):
        IMAGES_PER_GPU = 2
        MAX_GT_INSTANCES = 6

    class Slow(ShapesDataset):
        # The workers spend their time here, so the kill lands inside a sample.
        def load_image(self, image_id):
            time.sleep(0.3)
            return super().load_image(image_id)

    if __name__ == "__main__":
        how = sys.argv[1]
        train = Slow()
        train.load_shapes(6, 128, 128, seed=2)
        train.prepare()
        pipe = InputPipeline(train, Cfg(), seed=4, worker_mode="process")
        it = iter(pipe.dataset_fn(num_parallel_calls=2))
        next(it)
        print("PREFIX", pipe._slots._prefix, pipe._slots.size, flush=True)
        if how == "worker-crash":
            pool = next(iter(pipe._pools.values()))
            for proc in list(pool._processes.values()):
                os.kill(proc.pid, signal.SIGKILL)
            for _ in range(4):  # the stream goes on in threads
                next(it)
            print("AFTER CRASH OK", flush=True)
        elif how == "killed":
            os.kill(os.getpid(), signal.SIGKILL)
        # "exit": leave with a live iterator; the atexit hook closes the pipeline
''')


@pytest.mark.skipif(not os.path.isdir("/dev/shm"), reason="POSIX shared memory listed in /dev/shm")
@pytest.mark.parametrize("how", ["exit", pytest.param("worker-crash", marks=pytest.mark.slow),
                                 pytest.param("killed", marks=pytest.mark.slow)])
def test_no_shared_memory_left_behind(tmp_path, how):
    """No /dev/shm segment outlives the process: normal exit with a live iterator (atexit), a worker
    killed mid-stream (the stream goes on in threads), the training process killed (the resource
    tracker unlinks; the workers exit by themselves, else this run would wait on their pipes).
    ~20-30 s each on a 2-core machine. ("worker-crash" hung about 1 run in 8 with Python 3.11's
    ProcessPoolExecutor, which could wait forever for a worker killed while it wrote its result; each
    worker now has a pipe of its own, whose end shows the death.)"""
    script = tmp_path / "shm.py"
    script.write_text(_SHM)
    env = dict(os.environ, PYTHONPATH=ROOT, TF_CPP_MIN_LOG_LEVEL="2")
    out = subprocess.run([sys.executable, str(script), how], env=env, cwd=ROOT, capture_output=True, text=True,
                         timeout=300)
    assert out.returncode == (-9 if how == "killed" else 0), out.stderr[-4000:]
    prefix, size = out.stdout.split("PREFIX ")[1].split()[:2]
    assert int(size) > 0 and prefix.startswith("mrcnn_")
    if how == "worker-crash":
        assert "AFTER CRASH OK" in out.stdout and "worker processes failed" in out.stderr, out.stderr[-4000:]
    deadline = time.monotonic() + 30  # the resource tracker unlinks after its owner died
    while _segments(prefix) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert _segments(prefix) == []


def test_a_slot_outlives_its_closed_pipeline_while_an_array_uses_it():
    """Closing a pipeline unlinks its segments but cannot unmap one that an array (or a tensor
    aliasing it) still reads: no use after unmap."""
    from mrcnn.data.workers import SlotRing
    ring = SlotRing((8, 8, 3), anchors=5, max_slots=2)
    k, name = ring.acquire()
    image, match = ring.views(k)
    image[...] = 7.0
    ring.close()
    assert name not in _segments("mrcnn_")
    assert float(image.sum()) == 7.0 * image.size and match.shape == (5, 1)
    assert ring.acquire() is None  # closed: nothing more is handed out
