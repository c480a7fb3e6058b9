"""MaskRCNN.train under MultiWorkerMirroredStrategy: two worker processes on 127.0.0.1.

Each worker (tests/_multiworker_worker.py) trains the tiny model for 2 steps plus one
validation step, one image per worker; the reference is one process training on the same
global batch of 2 images from the same initial weights. The two workers must agree with
each other exactly and with the reference to float tolerance, step by step.
"""
import json
import os
import socket
import subprocess
import sys
import time

import numpy as np
import pytest

from _train_helpers import REPO

WORKER = os.path.join(REPO, "tests", "_multiworker_worker.py")
WORKER_TIMEOUT = 300      # each process's own watchdog (seconds)
DEADLINE = WORKER_TIMEOUT + 30  # then the test kills whatever is left
LOSSES = ("loss", "rpn_class_loss", "rpn_bbox_loss", "mrcnn_class_loss", "mrcnn_bbox_loss",
          "mrcnn_mask_loss")


def _free_ports(n):
    socks = [socket.socket(socket.AF_INET, socket.SOCK_STREAM) for _ in range(n)]
    try:
        for s in socks:
            s.bind(("127.0.0.1", 0))
        return [s.getsockname()[1] for s in socks]
    finally:
        for s in socks:
            s.close()


def _env(tf_config=None):
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3", PYTHONPATH=REPO,
               MRCNN_WORKER_TIMEOUT=str(WORKER_TIMEOUT),
               no_proxy="127.0.0.1,localhost", NO_PROXY="127.0.0.1,localhost")
    env.pop("TF_CONFIG", None)
    if tf_config is not None:
        env["TF_CONFIG"] = json.dumps(tf_config)
    return env


def _run_all(jobs, tmp_path):
    """Start every (name, argv, env) job, wait for all; on the first failure or at the
    deadline kill the others (a worker whose peer is gone would wait in a collective)."""
    procs = {}
    try:
        for name, argv, env in jobs:
            out = open(tmp_path / f"{name}.log", "wb")
            procs[name] = subprocess.Popen([sys.executable, WORKER, *argv], env=env, stdout=out,
                                           stderr=subprocess.STDOUT)
            out.close()
        start = time.monotonic()
        while any(p.poll() is None for p in procs.values()):
            failed = [n for n, p in procs.items() if p.returncode not in (None, 0)]
            if failed or time.monotonic() - start > DEADLINE:
                break
            time.sleep(0.5)
    finally:
        for p in procs.values():
            if p.poll() is None:
                p.kill()
                p.wait()
    problems = {n: p.returncode for n, p in procs.items() if p.returncode != 0}
    if problems:
        logs = "\n".join(f"--- {n} (exit {rc}) ---\n"
                         + (tmp_path / f"{n}.log").read_text(errors="replace")[-3000:]
                         for n, rc in problems.items())
        pytest.fail(f"processes failed or timed out: {problems}\n{logs}")


def _result(tmp_path, name):
    with open(tmp_path / f"{name}.json") as f:
        result = json.load(f)
    weights = np.load(tmp_path / f"{name}.json.weights.npz")
    result["weights"] = [weights[k] for k in sorted(weights.files, key=lambda k: int(k.split("_")[1]))]
    return result


@pytest.mark.slow
def test_two_workers_on_localhost_match_one_replica(tmp_path):
    init = str(tmp_path / "init.weights.h5")
    # 1 replica, global batch 2: also writes the initial weights both workers start from.
    _run_all([("single", [str(tmp_path / "single.json"), str(tmp_path / "logs_single"), init], _env())],
             tmp_path)

    ports = _free_ports(2)
    cluster = {"worker": [f"127.0.0.1:{p}" for p in ports]}
    jobs = [(f"worker{i}", [str(tmp_path / f"worker{i}.json"), str(tmp_path / f"logs{i}"), init],
             _env({"cluster": cluster, "task": {"type": "worker", "index": i}})) for i in range(2)]
    _run_all(jobs, tmp_path)

    single = _result(tmp_path, "single")
    workers = [_result(tmp_path, f"worker{i}") for i in range(2)]
    assert single["replicas"] == 1
    assert [w["replicas"] for w in workers] == [2, 2] and [w["worker"] for w in workers] == [0, 1]
    assert len(single["steps"]) == 2
    # the comparison is not of zeros, and the first update changed the loss
    for k in ("loss", "rpn_class_loss", "rpn_bbox_loss", "mrcnn_class_loss"):
        assert single["steps"][0][k] > 0, k
    assert single["steps"][1]["loss"] != single["steps"][0]["loss"]
    assert single["epoch"]["val_loss"] > 0

    for w in workers:
        assert len(w["steps"]) == 2
        for step, (got, want) in enumerate(zip(w["steps"], single["steps"])):
            for k in LOSSES:
                assert got[k] == pytest.approx(want[k], rel=1e-5, abs=1e-6), (w["worker"], step, k)
        for k in LOSSES + tuple("val_" + k for k in LOSSES):
            assert w["epoch"][k] == pytest.approx(single["epoch"][k], rel=1e-5, abs=1e-6), (w["worker"], k)
        assert len(w["weights"]) == len(single["weights"])
        for a, b in zip(w["weights"], single["weights"]):
            np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-5)

    # each worker loads only its half of every global batch of 2 (samples 0, 2, 4... of the
    # seeded stream for worker 0, 1, 3, 5... for worker 1); the single process loads both
    def stream_parity(result):
        return [(epoch * result["images"] + pos) % 2 for epoch, pos in result["loaded"]]

    assert set(stream_parity(single)) == {0, 1}
    for w in workers:
        assert w["loaded"] and set(stream_parity(w)) == {w["worker"]}, w["loaded"]

    # the workers hold one mirrored copy of the model and report the same all-reduced logs
    assert workers[0]["steps"] == workers[1]["steps"]
    assert workers[0]["epoch"] == workers[1]["epoch"]
    for a, b in zip(workers[0]["weights"], workers[1]["weights"]):
        np.testing.assert_array_equal(a, b)
