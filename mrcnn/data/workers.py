"""The per-sample work of the training pipeline and the worker processes that run it.

Nothing here imports TensorFlow: a worker process only needs numpy, the user's ``Dataset``
and the fast path of :mod:`mrcnn.data.fast`.

Why processes: the per-image work (``load_image``/``load_mask``, resizes, augmentation,
RPN targets) is Python and numpy code that holds the GIL for much of its time, so threads
inside ``tf.data`` scale to about 1.4x on two cores. Each worker process has its own GIL;
the ``tf.data`` thread that asked for a sample only waits for it (no GIL held).

The two big arrays do not travel through the executor's pipe: the worker writes the resized
image (uint8, 3 MB at 1024 px) and the anchor labels (int8 ``[A, 1]``) straight into a
shared-memory slot (:class:`SlotRing`) that the training process hands to TensorFlow without
a copy; only the small arrays are pickled. The image is molded on the device, by the training
model (:func:`mrcnn.modeling.maskrcnn.mold_raw_inputs`). On two cores the training process
shares the CPUs with the workers, so its per-image work (receiving and unpickling 3.5 MB,
molding, copying 13 MB of float32 image and int32 labels into the batch) was what capped
the 1 -> 2 worker scaling. A ``Dataset`` (or config or
augmentation) that cannot be pickled cannot be sent to a process: :func:`make_pool` says so
and the pipeline runs the same :class:`SampleMaker` in its own threads instead.

Determinism does not depend on where a sample is made: every random choice of a sample
comes from its ``sample_seed`` (see :mod:`mrcnn.data.pipeline`).
"""
from __future__ import annotations

import atexit
import hashlib
import logging
import mmap
import multiprocessing
import multiprocessing.util  # noqa: F401 - its exit hook (joins children) must be registered before ours
import os
import pickle
import queue
import random
import re
import secrets
import sys
import threading
import time
import weakref
from collections import OrderedDict
from concurrent.futures.process import BrokenProcessPool
from multiprocessing import shared_memory
from typing import List, Optional, Tuple

import numpy as np

from mrcnn.core.anchors import get_anchor_index, get_pixel_anchors
from mrcnn.data.augment import apply_numpy2_shim
from mrcnn.data.fast import load_image_gt_fast
from mrcnn.data.loader import _reference
from mrcnn.data.targets import build_rpn_targets
from mrcnn.data.validate import SampleError

logger = logging.getLogger("mrcnn.data")

STATUS_OK, STATUS_SKIP, STATUS_ERROR, STATUS_CLOSED = 0, 1, 2, 3


class SampleMaker:
    """Makes one training sample from ``(image_id, sample_seed)``; picklable if its parts are.

    The result is ``(arrays, status, message, strict_error)``:

    * ``arrays``: ``(image [H, W, 3] uint8 (not molded), image_meta [META] float32,
      rpn_match [A] int8, rpn_bbox [RPN_TRAIN_ANCHORS_PER_IMAGE, 4] float32,
      gt_class_ids [MAX_GT] int32, gt_boxes [MAX_GT, 4] int32 pixel (y1, x1, y2, x2),
      gt_masks [h, w, MAX_GT] bool)``, or None when the status is not ``STATUS_OK``;
    * ``message``: for a skip/error, what happened, naming the image id and its path;
    * ``strict_error``: the :class:`SampleError` to raise as itself under
      ``config.STRICT_DATA_CHECKS`` (else None).

    It logs and counts nothing: that happens once, in the process that owns the pipeline.
    """

    def __init__(self, dataset, config, augmentation=None, no_augmentation_sources=()):
        self.dataset = dataset
        self.config = config
        self.augmentation = augmentation
        self.no_aug = set(no_augmentation_sources or ())

    def __getstate__(self):
        state = {k: v for k, v in self.__dict__.items() if not k.startswith("_cached")}
        state["config"] = _config_values(self.config)
        return state

    def _anchors(self):
        # Built lazily (and per process): not part of what is pickled.
        if getattr(self, "_cached_anchors", None) is None:
            shape = self.config.IMAGE_SHAPE
            self._cached_anchors = (get_pixel_anchors(self.config, shape), get_anchor_index(self.config, shape))
        return self._cached_anchors

    def __call__(self, image_id: int, sample_seed: int):
        cfg = self.config
        image_id, sample_seed = int(image_id), int(sample_seed)
        rng = np.random.RandomState(sample_seed % (2 ** 32)) if sample_seed >= 0 else np.random
        py_rng = random.Random(sample_seed) if sample_seed >= 0 else None
        try:
            source = self.dataset.image_info[image_id]["source"]
            aug = None if source in self.no_aug else self.augmentation
            image, meta, class_ids, boxes, masks = load_image_gt_fast(
                self.dataset, cfg, image_id, augmentation=aug, use_mini_mask=cfg.USE_MINI_MASK,
                rng=py_rng, augment_seed=sample_seed if sample_seed >= 0 else None)
        except Exception as exc:  # noqa: BLE001 - every failure is reported with the image and counted
            strict = isinstance(exc, SampleError) and getattr(cfg, "STRICT_DATA_CHECKS", False)
            message = f"image id {image_id} ({_reference(self.dataset, image_id)}): {type(exc).__name__}: {exc}"
            return None, STATUS_ERROR, message, (exc if strict else None)
        if not np.any(class_ids > 0):
            return None, STATUS_SKIP, "no instances", None

        anchors, index = self._anchors()
        rpn_match, rpn_bbox = build_rpn_targets(image.shape, anchors, class_ids, boxes, cfg, rng=rng,
                                                anchor_index=index)
        if boxes.shape[0] > cfg.MAX_GT_INSTANCES:
            ids = rng.choice(np.arange(boxes.shape[0]), cfg.MAX_GT_INSTANCES, replace=False)
            class_ids, boxes, masks = class_ids[ids], boxes[ids], masks[:, :, ids]
        n = boxes.shape[0]
        gt_class_ids = np.zeros([cfg.MAX_GT_INSTANCES], np.int32)
        gt_boxes = np.zeros([cfg.MAX_GT_INSTANCES, 4], np.int32)
        gt_masks = np.zeros(masks.shape[:2] + (cfg.MAX_GT_INSTANCES,), bool)
        gt_class_ids[:n] = class_ids
        gt_boxes[:n] = boxes
        gt_masks[:, :, :n] = masks
        arrays = (np.ascontiguousarray(image, dtype=np.uint8), meta.astype(np.float32),
                  rpn_match.astype(np.int8), rpn_bbox.astype(np.float32), gt_class_ids, gt_boxes, gt_masks)
        return arrays, STATUS_OK, "", None


def _config_values(config):
    """A plain :class:`mrcnn.config.Config` holding ``config``'s values (derived ones included).

    The maker reads only attribute values; sending them instead of the user's subclass
    spares each worker from importing the module that defines it (often a training script
    that imports TensorFlow). Anything that is not a plain Config is sent as it is.
    """
    from mrcnn.config import Config
    if not isinstance(config, Config) or not hasattr(config, "to_dict"):
        return config
    plain = Config.__new__(Config)
    plain.__dict__.update(config.to_dict())
    return plain


# ------------------------------------------------------------------------------ shared memory
SHM_PREFIX = "mrcnn_"  # segment names: mrcnn_<owner pid>_<token>_<k>, so a test can find leftovers


class _Segment(shared_memory.SharedMemory):
    """A segment whose mapping may outlive ``close()``: TensorFlow can still hold a tensor aliasing
    it (``close`` then refuses with BufferError and the mapping stays until that tensor is freed)."""

    def __del__(self):
        try:
            self.close()
        except (OSError, BufferError):
            pass


class SlotRing:
    """Shared-memory slots, each holding one sample's image and anchor labels.

    Owned by the training process. A fetch :meth:`acquire` s a slot before sending the request,
    the worker writes into it (:func:`slot_views` gives both sides the same layout), and
    :meth:`views` wraps the slot for TensorFlow: the slot goes back to the free list only when
    every array over it has been freed (``weakref.finalize``; ``tf.numpy_function`` aliases the
    returned arrays and drops them once the ``batch`` op has copied them), so a slot is never
    rewritten while something can still read it.

    Slots are created on demand, up to ``max_slots``; beyond that (or when ``/dev/shm`` is full)
    :meth:`acquire` returns None and the sample travels through the pipe as before. Memory is
    reserved when a slot is created (``posix_fallocate``), so a full ``/dev/shm`` is an error here,
    not a SIGBUS in a worker. :meth:`close` unlinks every segment (at pipeline close and at exit);
    the ``multiprocessing`` resource tracker unlinks them if the process is killed.
    """

    def __init__(self, image_shape: Tuple[int, ...], anchors: int, max_slots: int):
        self.image_shape = tuple(int(d) for d in image_shape)
        self.anchors = int(anchors)
        self.max_slots = int(max_slots)
        self.nbytes = slot_nbytes(self.image_shape, self.anchors)
        self._prefix = f"{SHM_PREFIX}{os.getpid()}_{secrets.token_hex(4)}_"
        self._segments: List[Optional[_Segment]] = []
        self._free: List[int] = []
        # Reentrant: a finalizer (release) can run in this thread while it holds the lock, when
        # the garbage collector frees a cycle holding a slot's arrays.
        self._lock = threading.RLock()
        self._closed = False
        self._refused: Optional[str] = None
        _RINGS.add(self)

    def acquire(self) -> Optional[Tuple[int, str]]:
        """``(slot index, segment name)`` of a free slot, or None (use the pipe)."""
        with self._lock:
            if self._closed:
                return None
            if self._free:
                k = self._free.pop()
                return k, self._segments[k].name
            if len(self._segments) >= self.max_slots or self._refused:
                return None
            name = f"{self._prefix}{len(self._segments)}"
            try:
                seg = _Segment(name=name, create=True, size=self.nbytes)
            except OSError as exc:
                self._refused = str(exc)
                logger.warning("no shared memory for samples (%s); sending them through the pipe", exc)
                return None
            try:
                if hasattr(os, "posix_fallocate"):
                    os.posix_fallocate(seg._fd, 0, self.nbytes)  # fail here, not with SIGBUS in a worker
            except OSError as exc:
                seg.unlink()
                self._refused = str(exc)
                logger.warning("no shared memory for samples (%s); sending them through the pipe", exc)
                return None
            self._segments.append(seg)
            return len(self._segments) - 1, name

    def release(self, k: int) -> None:
        """Back to the free list (nothing may read or write slot ``k`` any more)."""
        with self._lock:
            if not self._closed and self._segments[k] is not None:
                self._free.append(k)

    def discard(self, k: int) -> None:
        """Never reuse slot ``k`` (a worker might still write into it, e.g. after a pool broke)."""
        with self._lock:
            seg, self._segments[k] = self._segments[k], None
        if seg is not None:
            _unlink(seg)

    def views(self, k: int) -> Tuple[np.ndarray, np.ndarray]:
        """``(image uint8 [H, W, 3], rpn_match int8 [A, 1])`` over slot ``k``; the slot is
        released when both arrays (and everything aliasing them) are gone."""
        image, match = slot_views(self._segments[k].buf, self.image_shape, self.anchors)
        left = [2]
        lock = threading.RLock()

        def drop():
            with lock:
                left[0] -= 1
                last = left[0] == 0
            if last:
                self.release(k)

        weakref.finalize(image, drop)
        weakref.finalize(match, drop)
        return image, match

    def close(self) -> None:
        """Unlinks every segment (idempotent). Mappings that TensorFlow still aliases stay valid
        until freed; nothing is written into them any more."""
        with self._lock:
            self._closed = True
            segments, self._segments = [s for s in self._segments if s is not None], []
            self._free = []
        for seg in segments:
            _unlink(seg)
            try:
                seg.close()
            except (OSError, BufferError):
                pass  # still aliased by a tensor: unmapped when that is freed

    @property
    def size(self) -> int:
        return len(self._segments)


def _unlink(seg) -> None:
    try:
        seg.unlink()
    except OSError:
        pass


_RINGS: "weakref.WeakSet[SlotRing]" = weakref.WeakSet()


def close_rings() -> None:
    """Unlinks the segments of every ring of this process (at exit)."""
    for ring in list(_RINGS):
        ring.close()


def slot_nbytes(image_shape, anchors: int) -> int:
    return int(np.prod(image_shape)) + int(anchors)


def slot_views(buf, image_shape, anchors: int) -> Tuple[np.ndarray, np.ndarray]:
    """The slot layout: image uint8 ``image_shape`` (resized, not molded), then anchor labels
    int8 ``[A, 1]``.

    ``np.frombuffer`` (not ``np.ndarray(buffer=...)``, which drops the buffer export and keeps
    only a reference): while an array exists the mapping cannot be closed (BufferError), so a
    tensor aliasing a slot never reads unmapped memory, even after its pipeline closed.
    """
    size = int(np.prod(image_shape))
    image = np.frombuffer(buf, np.uint8, count=size).reshape(tuple(image_shape))
    match = np.frombuffer(buf, np.int8, count=int(anchors), offset=size).reshape(int(anchors), 1)
    return image, match


# ------------------------------------------------------------------------------ worker side
_MAKER: Optional[SampleMaker] = None
_ATTACHED: "OrderedDict[str, object]" = OrderedDict()


def _init_worker(payload: bytes, owner: int) -> None:
    global _MAKER
    # One numpy/BLAS thread per worker process: the parallelism is the processes.
    for var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
        os.environ.setdefault(var, "1")
    # An imgaug augmenter unpickles by importing imgaug, which needs NumPy 2's removed aliases.
    apply_numpy2_shim()
    _MAKER = pickle.loads(payload)
    # A worker waiting on its pipe sees the owner's end close when the owner dies; one inside
    # a user's load_image (or a library it calls) that blocks would not. Exit when the owner is gone.
    threading.Thread(target=_exit_with_owner, args=(owner,), daemon=True, name="mrcnn-owner-watch").start()


def _serve(conn, payload: bytes, owner: int) -> None:
    """A worker process: answers ``(image_id, sample_seed, slot)`` requests on ``conn`` with
    ``("ok", _run(...))`` until the pipe closes (the owner shut the pool down or is gone) or it
    receives None. A worker that cannot start says why in its first message and exits."""
    try:
        _init_worker(payload, owner)
    except BaseException as exc:  # noqa: BLE001 - e.g. the dataset's module cannot be imported here
        try:
            conn.send(("broken", f"a worker process could not start: {type(exc).__name__}: {exc}"))
        except (OSError, ValueError):
            pass
        return
    while True:
        try:
            request = conn.recv()
        except (EOFError, OSError):
            return
        if request is None:
            return
        try:
            reply = ("ok", _run(*request))
        except Exception as exc:  # noqa: BLE001 - _run reports sample failures itself; this is anything else
            reply = ("error", f"{type(exc).__name__}: {exc}")
        try:
            conn.send(reply)
        except (OSError, ValueError):  # the owner is gone
            return
        except Exception as exc:  # noqa: BLE001 - the result did not pickle (e.g. an exception object)
            try:
                conn.send(("error", f"the worker's result could not be sent: {type(exc).__name__}: {exc}"))
            except (OSError, ValueError):
                return


def _exit_with_owner(owner: int) -> None:
    while True:
        time.sleep(1.0)
        if os.getppid() != owner:
            os._exit(0)


def _attach(name: str):
    """The worker's mapping of segment ``name`` (cached). Not registered with the resource
    tracker: the owner created the segment and is the one that unlinks it."""
    buf = _ATTACHED.get(name)
    if buf is not None:
        _ATTACHED.move_to_end(name)
        return buf
    if os.path.isdir("/dev/shm"):
        # A new name means a ring grew or a new pipeline started: forget segments already
        # unlinked by their owner (closed pipelines), whose memory the mapping would keep.
        for old in [n for n in _ATTACHED if not os.path.exists(os.path.join("/dev/shm", n))]:
            _close_mapping(_ATTACHED.pop(old))
    try:
        import _posixshmem
    except ImportError:  # Windows: no resource tracker for shared memory
        buf = shared_memory.SharedMemory(name=name).buf
    else:
        fd = _posixshmem.shm_open("/" + name, os.O_RDWR, mode=0o600)
        try:
            buf = mmap.mmap(fd, os.fstat(fd).st_size)
        finally:
            os.close(fd)
    _ATTACHED[name] = buf
    while len(_ATTACHED) > 256:
        _close_mapping(_ATTACHED.popitem(last=False)[1])
    return buf


def _close_mapping(buf) -> None:
    try:
        buf.close() if isinstance(buf, mmap.mmap) else buf.release()
    except (BufferError, ValueError):
        pass


def _run(image_id: int, sample_seed: int, slot: Optional[str] = None):
    result = _MAKER(image_id, sample_seed)
    arrays = result[0]
    if slot is None or arrays is None:
        return result
    # Both big arrays go into the slot, so neither is pickled; the owner knows the slot from
    # its request.
    cfg = _MAKER.config
    if arrays[0].shape != tuple(int(d) for d in cfg.IMAGE_SHAPE):
        return result  # not the slot's layout (e.g. pad64 images of varying size): through the pipe
    try:
        image, match = slot_views(_attach(slot), cfg.IMAGE_SHAPE, arrays[2].shape[0])
        image[...] = arrays[0]
        match[:, 0] = arrays[2]
        del image, match  # no export left on the mapping (it may be closed when evicted)
    except (OSError, ValueError) as exc:  # segment gone (pipeline closed) or not the expected size
        logger.debug("slot %s not used: %s", slot, exc)
        return result
    return (None, arrays[1], None) + tuple(arrays[3:]), result[1], result[2], result[3]


# ------------------------------------------------------------------------------ owner side
class PoolUnavailable(RuntimeError):
    """The sample maker cannot be sent to worker processes (the message says why)."""


class PoolShutDown(RuntimeError):
    """The worker pool was shut down (pipeline closed, evicted or interpreter exit)."""


class _Worker:
    __slots__ = ("process", "conn", "stale")

    def __init__(self, process, conn):
        self.process = process
        self.conn = conn
        self.stale = 0  # replies still to come for requests whose caller gave up waiting


class WorkerPool:
    """``processes`` spawned worker processes, each on a pipe of its own to this process.

    :meth:`run` takes an idle worker, sends it the request and waits on that worker's pipe in
    the calling thread. ``concurrent.futures.ProcessPoolExecutor`` (used before) moves every
    request and result through two helper threads of its own (its queue manager and the call
    queue's feeder): ~8 thread wake-ups and ~0.6 ms of CPU per image in the training process,
    which on a small machine runs on the cores the workers need. And a worker that dies shows
    here as the end of its pipe: the pool is marked broken and the caller makes its samples in
    threads; Python 3.11's executor could wait forever for a worker killed while it wrote its
    result.
    """

    def __init__(self, payload: bytes, processes: int):
        ctx = multiprocessing.get_context("spawn")
        self._idle: "queue.Queue[_Worker]" = queue.Queue()
        self._workers: List[_Worker] = []
        self._processes = {}  # pid -> Process (the benchmark and tests read it)
        self._broken: Optional[str] = None
        self._shutdown = False
        for k in range(max(1, int(processes))):
            mine, theirs = ctx.Pipe(duplex=True)
            proc = ctx.Process(target=_serve, args=(theirs, payload, os.getpid()), name=f"mrcnn-worker-{k}")
            proc.start()
            theirs.close()
            worker = _Worker(proc, mine)
            self._workers.append(worker)
            self._processes[proc.pid] = proc
            self._idle.put(worker)

    @property
    def broken(self) -> bool:
        return self._broken is not None

    @property
    def closed(self) -> bool:
        return self._shutdown

    def run(self, request: tuple, cancelled=lambda: False):
        """The worker's ``_run(*request)``, or None when ``cancelled()`` turns true while waiting.

        Raises :class:`BrokenProcessPool` when a worker died or could not start (the pool is
        then broken for every caller), :class:`PoolShutDown` after :meth:`shutdown`, and
        RuntimeError when the worker hit an unexpected error (the caller can make the sample
        itself)."""
        worker = self._take(cancelled)
        if worker is None:
            return None
        conn = worker.conn
        try:
            while worker.stale:  # a previous caller gave up on this worker's answer
                conn.recv()
                worker.stale -= 1
            conn.send(request)
            while not conn.poll(0.1):
                if cancelled() or self._shutdown:
                    worker.stale += 1  # its answer is read (and dropped) by the next caller
                    self._idle.put(worker)
                    return None
            kind, value = conn.recv()
        except (EOFError, OSError) as exc:
            raise self._failed(worker, _last_words(conn) or f"{type(exc).__name__}: {exc}") from None
        if kind == "broken":
            raise self._failed(worker, value)
        self._idle.put(worker)
        if kind == "error":
            raise RuntimeError(f"worker process {worker.process.pid}: {value}")
        return value

    def _take(self, cancelled) -> Optional[_Worker]:
        while True:
            if self._shutdown:
                raise PoolShutDown("the worker pool was shut down")
            if self._broken is not None:
                raise BrokenProcessPool(self._broken)
            if cancelled():
                return None
            try:
                return self._idle.get(timeout=0.1)
            except queue.Empty:
                continue

    def _failed(self, worker: _Worker, why: str) -> Exception:
        if self._shutdown:
            return PoolShutDown("the worker pool was shut down")
        worker.process.join(timeout=1.0)
        code = worker.process.exitcode
        ended = "is still running" if code is None else (
            f"was killed by signal {-code}" if code < 0 else f"exited with code {code}")
        self._broken = f"worker process {worker.process.pid} {ended} ({why})"
        return BrokenProcessPool(self._broken)

    def shutdown(self) -> None:
        """Stops every worker without waiting (idempotent; :meth:`join` waits). Callers waiting
        on a worker get :class:`PoolShutDown`."""
        if self._shutdown:
            return
        self._shutdown = True
        for worker in self._workers:
            if worker.process.is_alive():
                worker.process.terminate()  # they hold nothing to save; a slot being written is dropped

    def join(self, timeout: float) -> None:
        """Waits up to ``timeout`` seconds for each worker to end."""
        for worker in self._workers:
            worker.process.join(timeout=timeout)


def _last_words(conn) -> Optional[str]:
    """Why a worker ended, if it said so before its pipe closed (see :func:`_serve`)."""
    try:
        if conn.poll(0):
            kind, value = conn.recv()
            if kind == "broken":
                return value
    except (EOFError, OSError, ValueError, TypeError):
        pass
    return None


_POOLS: "OrderedDict[tuple, WorkerPool]" = OrderedDict()
_POOLS_LOCK = threading.Lock()
MAX_POOLS = 4  # e.g. train + validation pipelines, with room for a change of worker count


def make_pool(maker: SampleMaker, processes: int) -> WorkerPool:
    """A pool of ``processes`` spawned workers, each holding a copy of ``maker``.

    ``spawn`` (not ``fork``): the owner runs TensorFlow threads, which a forked child would
    inherit in an undefined state. Pools are shared by pipelines whose makers pickle to the
    same bytes (the same dataset, config and augmentation), so building several streams of
    one dataset starts its workers once; the least recently used of more than
    :data:`MAX_POOLS` pools is shut down. Raises :class:`PoolUnavailable` when ``maker``
    (the user's ``Dataset``, config or augmentation) cannot be pickled.
    """
    try:
        payload = pickle.dumps(maker, protocol=pickle.HIGHEST_PROTOCOL)
    except Exception as exc:  # noqa: BLE001 - any pickling failure means no processes
        raise PoolUnavailable(
            f"cannot send the dataset to worker processes ({type(exc).__name__}: {exc}); loading in "
            f"threads instead, which scale less because of the GIL. Make the Dataset subclass (and config, "
            f"augmentation) picklable - defined at module level, no lambdas or open handles as attributes - "
            f"or pass worker_mode='thread' to silence this") from exc
    main = sys.modules.get("__main__")
    if b"__main__" in payload and not getattr(main, "__file__", None):
        # A class defined in a notebook or an interactive session pickles by reference to
        # __main__, which a spawned worker cannot import.
        raise PoolUnavailable(
            "the dataset, config or augmentation uses a class defined interactively (in __main__ of a "
            "notebook or REPL), which worker processes cannot import; loading in threads instead, which scale "
            "less because of the GIL. Move the class to a .py module to use worker processes, or pass "
            "worker_mode='thread' to silence this")
    script = unguarded_main_script()
    if script is not None:
        # spawn runs the parent's main script in every worker before the first sample; without
        # the guard that would build a model and train again inside each worker.
        raise PoolUnavailable(
            f"the script {script} has no `if __name__ == \"__main__\":` guard, and every worker process "
            f"would run it again (training included); loading in threads instead, which scale less because "
            f"of the GIL. Put the script's top-level code under that guard to use worker processes, or pass "
            f"worker_mode='thread' to silence this")
    key = (hashlib.sha256(payload).hexdigest(), max(1, int(processes)))
    with _POOLS_LOCK:
        pool = _POOLS.get(key)
        if pool is not None and not pool.broken and not pool.closed:
            _POOLS.move_to_end(key)
            return pool
        if pool is not None:
            pool.shutdown()
        pool = WorkerPool(payload, key[1])
        _POOLS[key] = pool
        while len(_POOLS) > MAX_POOLS:
            _, old = _POOLS.popitem(last=False)
            old.shutdown()
        return pool


_GUARD = re.compile(r"""__name__\s*==\s*['"]__main__['"]|['"]__main__['"]\s*==\s*__name__""")


def unguarded_main_script() -> Optional[str]:
    """Path of the running script if it lacks an ``if __name__ == "__main__":`` guard, else None.

    Spawned workers execute the main script (as ``__mp_main__``) to recreate its globals, so
    an unguarded script's top-level code, ``model.train(...)`` included, would run once per
    worker. Notebooks and REPLs have no main file and are not affected.
    """
    main = sys.modules.get("__main__")
    path = getattr(main, "__file__", None)
    if not path or not str(path).endswith(".py") or not os.path.isfile(path):
        return None
    try:
        with open(path, encoding="utf-8", errors="replace") as f:
            source = f.read()
    except OSError:
        return None
    return None if _GUARD.search(source) else path


def shutdown_pools() -> None:
    """Stops every worker process (pipelines started later spawn new ones)."""
    with _POOLS_LOCK:
        pools = list(_POOLS.values())
        _POOLS.clear()
    for pool in pools:
        pool.shutdown()
    for pool in pools:
        pool.join(timeout=2.0)


# Exit hooks run last-registered first: this one stops the workers before multiprocessing's own
# hook joins every child process (which would wait forever on a worker blocked on its pipe).
atexit.register(shutdown_pools)


def request(image_id: int, sample_seed: int, slot: Optional[str] = None) -> tuple:
    """A worker request for :meth:`WorkerPool.run`: with a ``slot`` (segment name) the image and
    the anchor labels are written there and come back as None."""
    return int(image_id), int(sample_seed), slot


def host_cores() -> int:
    """CPU cores this process may run on."""
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        return os.cpu_count() or 1

