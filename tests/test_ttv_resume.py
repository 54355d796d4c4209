"""Kill-and-resume: SIGKILLed sampler runs resume bit-for-bit (dynesty and emcee)."""
import json
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

from _ttv_data import small_task
from app.ttv.results import load_result, save_result
from app.ttv.task import TaskStopped, run_ttv_task

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SEED = [20261125, 7]


def _worker(spec_path, out, ckpt, log):
    env = dict(os.environ, OMP_NUM_THREADS="1", OPENBLAS_NUM_THREADS="1", MKL_NUM_THREADS="1",
               PYTHONPATH=ROOT)
    return subprocess.Popen([sys.executable, "-m", "app.ttv.task", str(spec_path), str(out),
                             str(ckpt), "--checkpoint-every", "0.02"], cwd=ROOT, env=env,
                            stdout=subprocess.DEVNULL, stderr=log)


def _checkpoints_seen(proc, ckpt, n, poll_s=0.005):
    """Wait until the worker has written its checkpoint ``n`` more times (or has exited)."""
    last = ckpt.stat().st_mtime_ns if ckpt.exists() else None
    while n > 0 and proc.poll() is None:
        time.sleep(poll_s)
        now = ckpt.stat().st_mtime_ns if ckpt.exists() else None
        if now != last:
            n, last = n - 1, now


def _kill_until_done(tmp_path, params, rng, max_kills=3):
    """Run the task in a subprocess, SIGKILL it ``max_kills`` times, then let it finish.

    The kill moments are random but tied to the run's progress, not to wall time (a fast
    machine must not finish the run before the first kill): the first kill lands during
    start-up or the first checkpoint interval, later ones after 1-4 further checkpoints plus
    a random fraction of a checkpoint interval.
    """
    spec_path = tmp_path / "spec.json"
    spec_path.write_text(json.dumps({"params": params, "seed": SEED}))
    out, ckpt = tmp_path / "killed.npz", tmp_path / "run.ckpt"
    kills = 0
    log_path = tmp_path / "worker.log"
    while True:
        with open(log_path, "ab") as log:
            proc = _worker(spec_path, out, ckpt, log)
        with proc:  # always reaped; killed first if the test fails while it runs
            try:
                if kills < max_kills:
                    if kills == 0:
                        _checkpoints_seen(proc, ckpt, int(rng.integers(0, 2)))
                    else:
                        _checkpoints_seen(proc, ckpt, int(rng.integers(1, 5)))
                    time.sleep(rng.uniform(0.0, 0.02))
                    if proc.poll() is None:
                        proc.send_signal(signal.SIGKILL)
                        proc.wait()
                        kills += 1
                        continue
                proc.wait(timeout=600)
            except BaseException:
                proc.kill()
                raise
        assert proc.returncode == 0, log_path.read_text()
        return load_result(out), kills, ckpt


def _assert_identical(a, b):
    assert a.kind == b.kind
    assert set(a.arrays) == set(b.arrays)
    for k in a.arrays:
        np.testing.assert_array_equal(a.arrays[k], b.arrays[k], err_msg=k)


@pytest.mark.slow
def test_dynesty_resume_after_sigkill_gives_identical_result(tmp_path):
    params, _ = small_task()
    reference = run_ttv_task(params, SEED, None)
    resumed, kills, ckpt = _kill_until_done(tmp_path, params, np.random.default_rng(11))
    assert kills == 3  # at start-up, then twice mid-run
    assert ckpt.exists()
    _assert_identical(reference, resumed)
    assert reference.log_evidence == resumed.log_evidence


@pytest.mark.slow
def test_emcee_resume_after_sigkill_gives_identical_chain(tmp_path):
    params, _ = small_task(sampler={"name": "emcee", "nwalkers": 12, "nsteps": 150})
    reference = run_ttv_task(params, SEED, None)
    resumed, kills, _ = _kill_until_done(tmp_path, params, np.random.default_rng(12))
    assert kills == 3  # at start-up, then twice mid-run
    _assert_identical(reference, resumed)


def test_stop_flag_checkpoints_and_a_second_call_finishes_identically(tmp_path):
    params, _ = small_task(nlive=10)
    reference = run_ttv_task(params, SEED, None)
    ckpt = tmp_path / "stop.ckpt"
    calls = []
    with pytest.raises(TaskStopped):
        run_ttv_task(params, SEED, ckpt, checkpoint_every_s=1e9,
                     should_stop=lambda: len(calls) > 50 or calls.append(1) and False)
    assert ckpt.exists()
    seen = []
    resumed = run_ttv_task(params, SEED, ckpt, on_progress=seen.append)
    _assert_identical(reference, resumed)
    assert seen == sorted(seen) and seen[-1] == 1.0
    save_result(tmp_path / "r.npz", resumed)
    _assert_identical(resumed, load_result(tmp_path / "r.npz"))


def test_checkpoint_of_another_run_is_refused(tmp_path):
    params, _ = small_task(nlive=10)
    ckpt = tmp_path / "a.ckpt"
    with pytest.raises(TaskStopped):
        run_ttv_task(params, SEED, ckpt, should_stop=lambda: True)
    with pytest.raises(ValueError, match="different run"):
        run_ttv_task(params, [1, 2, 3], ckpt)
