"""The PyInstaller-built volunteer app, run the way a BOINC client runs it.

The app is built once per test session (``server.boinc.package.build_frozen_app``, ~1-2 min), or
taken from ``OPENASTRO_TEST_FROZEN_APP`` (a prebuilt onedir bundle directory or its executable, e.g.
the old-glibc release build of packaging/oldglibc/build.sh). Every task kind runs through the built binary in a slot laid out like the captured ones
(../shared/boinc-captures/: soft-link stubs for inputs and outputs, or copied files, and the
captured init_data.xml), and must give the same arrays, bit for bit, as the same work unit run
in-process. Kill/resume and SIGTERM follow the BOINC contract (../shared/boinc-contract.md).
The 10 s SIGTERM bound is the wrapper's protocol limit, not a performance target.
"""

from __future__ import annotations

import contextlib
import json
import os
import pickle
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

import app_workunits as aw
from app import runtime
from app.spec import read_result

pytestmark = [pytest.mark.frozen, pytest.mark.slow]

MAKERS = {"reproject-tile": aw.reproject_tile_workunit, "ttv-nested": aw.ttv_nested_workunit,
          "ttv-emcee": aw.ttv_emcee_workunit}


# --- fixtures -----------------------------------------------------------------------------------

# frozen_app (session-scoped, shared with tests/test_boinc_real.py) is in tests/conftest.py.


@pytest.fixture(scope="module")
def workunits():
    return {kind: maker() for kind, maker in MAKERS.items()}


@pytest.fixture(scope="module")
def references(workunits, tmp_path_factory):
    """Arrays of each work unit run in-process, uninterrupted (computed on first use)."""
    cache = {}

    def get(kind):
        if kind not in cache:
            from app.main import main

            slot = aw.lay_out_slot(tmp_path_factory.mktemp(f"ref_{kind}"), workunits[kind], mode="copy")
            assert main(["run", "--slot", str(slot.slot_dir)]) == 0
            cache[kind] = read_result(slot.output_path)
        return cache[kind]

    return get


# --- helpers ------------------------------------------------------------------------------------

def run_frozen(exe: Path, cwd: Path, *args: str, env: dict | None = None, timeout: float = 180):
    return subprocess.run([str(exe), *(args or ("run",))], cwd=cwd, capture_output=True, text=True,
                          timeout=timeout, env=env)


@contextlib.contextmanager
def start_frozen(exe: Path, cwd: Path, *args: str, env: dict | None = None):
    """The frozen app as a child process; on leaving the block it is killed if still running and its pipes are
    drained and closed (also when the test fails inside the block: no leaked pipes, no ResourceWarning)."""
    proc = subprocess.Popen([str(exe), *(args or ("run",))], cwd=cwd, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env=env)
    try:
        yield proc
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.communicate(timeout=60)  # a no-op when the test already collected the output


def assert_bitwise_equal(got, want):
    assert set(got.arrays) == set(want.arrays)
    for name, array in want.arrays.items():
        other = got.arrays[name]
        assert other.dtype == array.dtype and other.shape == array.shape, name
        assert other.tobytes() == array.tobytes(), f"array {name!r} differs"
    for key in ("kind", "seed", "format", "version", "app_version"):
        assert got.meta[key] == want.meta[key]


def error_lines(stderr: str) -> list[str]:
    return [line for line in stderr.splitlines() if line.startswith("error: ")]


def wait_or_exit(predicate, timeout: float, what: str, proc) -> bool:
    """Poll until ``predicate()`` holds (True) or ``proc`` has exited (False); AssertionError after ``timeout``.

    The timeout only bounds a hung process; no result depends on how fast the machine is."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        if proc.poll() is not None:
            return predicate()
        time.sleep(0.05)
    raise AssertionError(f"timed out after {timeout} s waiting for {what}")


def wait_for(predicate, timeout: float, what: str, proc):
    """As :func:`wait_or_exit`, but the process exiting first is a failure (with its stderr)."""
    if not wait_or_exit(predicate, timeout, what, proc):
        _, stderr = proc.communicate(timeout=60)
        raise AssertionError(f"process exited ({proc.returncode}) while waiting for {what}: {stderr[-2000:]}")


# --- every kind, frozen, in BOINC-like slots ------------------------------------------------------

def test_version_and_help_start_frozen(frozen_app, tmp_path):
    version = run_frozen(frozen_app, tmp_path, "--version")
    assert version.returncode == 0 and version.stdout.startswith("openastro-app ")
    helptext = run_frozen(frozen_app, tmp_path, "run", "--help")
    assert helptext.returncode == 0 and "--checkpoint" in helptext.stdout


# ttv-nested in copy mode also runs, to completion and compared, in the truncated-checkpoint test.
@pytest.mark.parametrize("kind, mode", [("reproject-tile", "stub"), ("reproject-tile", "copy"),
                                        ("ttv-nested", "stub"), ("ttv-emcee", "stub"),
                                        ("ttv-emcee", "copy")])
def test_every_kind_runs_frozen_in_a_boinc_slot_and_matches_in_process(
        frozen_app, workunits, references, kind, mode, tmp_path):
    slot = aw.lay_out_slot(tmp_path, workunits[kind], mode=mode)
    stale = slot.slot_dir / "_MEI0000deadBEEF"  # a onefile extraction dir a killed run left
    stale.mkdir()
    (stale / "libpython3.11.so.1.0").write_bytes(b"\0" * 64)
    done = run_frozen(frozen_app, slot.slot_dir, "run", "--boinc-finish-file")
    assert done.returncode == 0, done.stderr
    assert error_lines(done.stderr) == []
    assert_bitwise_equal(read_result(slot.output_path), references(kind))
    if mode == "stub":
        # the output went to the stub's target; the stub itself is untouched
        assert (slot.slot_dir / "result.npz").read_text().startswith("<soft_link>")
    assert float((slot.slot_dir / "fraction_done").read_text()) == 1.0
    assert (slot.slot_dir / "boinc_finish_called").read_text() == "0\n"
    assert not stale.exists(), "stale _MEI* dir must be removed at start-up"
    assert not list(slot.output_path.parent.glob(".*.tmp"))


# --- kill and resume ----------------------------------------------------------------------------

def test_ttv_nested_killed_at_random_points_resumes_to_a_bitwise_identical_result(
        frozen_app, workunits, references, tmp_path):
    wu = workunits["ttv-nested"]
    slot = aw.lay_out_slot(tmp_path, wu, mode="stub",
                           init_data=aw.init_data_xml(wu.name, checkpoint_period=1))
    checkpoint = slot.slot_dir / "openastro_checkpoint.dat"
    rng = np.random.default_rng(20261125)
    kills, resumed, finished, attempts = 0, 0, None, 0
    for attempt in range(3):
        attempts += 1
        before = checkpoint.stat().st_mtime_ns if checkpoint.exists() else None
        with start_frozen(frozen_app, slot.slot_dir) as proc:
            # kill at a random moment after this attempt has written a new checkpoint (the first attempt at
            # once); on a fast machine a later attempt may finish first: then its result is the one checked
            if wait_or_exit(lambda: checkpoint.exists() and checkpoint.stat().st_mtime_ns != before,
                            300, "a checkpoint", proc):
                time.sleep(rng.uniform(0.0, 0.3) if attempt else 0.0)
                proc.kill()  # does nothing when the process has just exited on its own
            _, stderr = proc.communicate(timeout=60)
        resumed += "resuming from checkpoint" in stderr
        if proc.returncode == 0:  # finished before the kill: it resumed, and its result is complete
            finished = stderr
            break
        assert proc.returncode == -signal.SIGKILL, stderr
        kills += 1
        assert not slot.output_path.exists()
    assert kills >= 1, "the first attempt is killed as soon as its first checkpoint appears"
    if finished is None:
        final = run_frozen(frozen_app, slot.slot_dir)
        assert final.returncode == 0, final.stderr
        finished = final.stderr
    assert "resuming from checkpoint" in finished
    assert resumed == attempts - 1  # every attempt after the first resumed from the checkpoint a killed one left
    assert_bitwise_equal(read_result(slot.output_path), references("ttv-nested"))


def test_reproject_tile_killed_at_random_points_reruns_to_identical_output(
        frozen_app, workunits, references, tmp_path):
    slot = aw.lay_out_slot(tmp_path, workunits["reproject-tile"], mode="stub")
    rng = np.random.default_rng(7)
    for _ in range(3):
        with start_frozen(frozen_app, slot.slot_dir) as proc:
            time.sleep(rng.uniform(0.1, 1.0))  # killed at a random moment, or finished already: both fine
    final = run_frozen(frozen_app, slot.slot_dir)
    assert final.returncode == 0, final.stderr
    assert_bitwise_equal(read_result(slot.output_path), references("reproject-tile"))
    assert not list(slot.output_path.parent.glob(".*.tmp"))


def test_sigterm_checkpoints_and_exits_nonzero_within_the_wrappers_10_s(
        frozen_app, workunits, references, tmp_path):
    wu = workunits["ttv-nested"]
    # the captured init_data.xml: checkpoint_period 60 s, so only the SIGTERM writes a checkpoint
    slot = aw.lay_out_slot(tmp_path, wu, mode="stub")
    checkpoint = slot.slot_dir / "openastro_checkpoint.dat"
    fraction = slot.slot_dir / "fraction_done"
    with start_frozen(frozen_app, slot.slot_dir) as proc:
        wait_for(lambda: fraction.exists() and float(fraction.read_text() or 0) > 0.05, 300,
                 "sampling progress", proc)
        assert not checkpoint.exists()
        sent = time.monotonic()
        proc.send_signal(signal.SIGTERM)
        _, stderr = proc.communicate(timeout=30)
        elapsed = time.monotonic() - sent
    assert elapsed < 10.0, f"took {elapsed:.1f} s to stop after SIGTERM"
    assert proc.returncode == runtime.EXIT_INTERRUPTED, stderr
    assert checkpoint.exists(), "SIGTERM must leave a checkpoint"
    assert not slot.output_path.exists(), "an interrupted task must not leave an output"
    # the wrapper deletes fraction_done when it restarts the task; the app rewrites it
    fraction.unlink()
    final = run_frozen(frozen_app, slot.slot_dir)
    assert final.returncode == 0, final.stderr
    assert "resuming from checkpoint" in final.stderr
    assert_bitwise_equal(read_result(slot.output_path), references("ttv-nested"))


# --- documented failures: exit code + one clear stderr line ----------------------------------------

def test_malformed_spec_exits_3_with_one_error_line(frozen_app, workunits, tmp_path):
    slot = aw.lay_out_slot(tmp_path, workunits["reproject-tile"], mode="copy")
    spec = json.loads((slot.slot_dir / "wu.json").read_text())
    spec["seed"] = "not-a-seed"
    (slot.slot_dir / "wu.json").write_text(json.dumps(spec))
    done = run_frozen(frozen_app, slot.slot_dir)
    assert done.returncode == runtime.EXIT_BAD_SPEC == 3
    lines = error_lines(done.stderr)
    assert len(lines) == 1 and "malformed work-unit spec" in lines[0] and "not-a-seed" in lines[0]
    (slot.slot_dir / "wu.json").write_text("{not json")
    done = run_frozen(frozen_app, slot.slot_dir)
    assert done.returncode == 3 and "not valid JSON" in error_lines(done.stderr)[0]


def test_missing_input_exits_4_with_one_error_line(frozen_app, workunits, tmp_path):
    slot = aw.lay_out_slot(tmp_path, workunits["reproject-tile"], mode="stub")
    target = (slot.slot_dir / (slot.slot_dir / "cutout.fits").read_text()
              .strip()[len("<soft_link>"):-len("</soft_link>")])
    target.unlink()
    done = run_frozen(frozen_app, slot.slot_dir)
    assert done.returncode == runtime.EXIT_BAD_INPUT == 4
    lines = error_lines(done.stderr)
    assert len(lines) == 1 and "input 'cutout'" in lines[0] and "does not exist" in lines[0]


def test_corrupted_input_exits_4_with_one_error_line(frozen_app, workunits, tmp_path):
    slot = aw.lay_out_slot(tmp_path, workunits["reproject-tile"], mode="copy")
    data = (slot.slot_dir / "cutout.fits").read_bytes()
    (slot.slot_dir / "cutout.fits").write_bytes(data[:5000])
    done = run_frozen(frozen_app, slot.slot_dir)
    assert done.returncode == runtime.EXIT_BAD_INPUT, done.stderr
    lines = error_lines(done.stderr)
    assert len(lines) == 1 and "cutout" in lines[0]


def test_unwritable_output_location_exits_5_before_any_work(frozen_app, workunits, tmp_path):
    slot = aw.lay_out_slot(tmp_path, workunits["ttv-nested"], mode="stub")
    # the output stub points into a "directory" that is a plain file: nothing can be written there
    blocker = slot.root / "projects" / aw.PROJECT / "blocked"
    blocker.write_text("a file, not a directory")
    (slot.slot_dir / "result.npz").write_text(f"<soft_link>../../projects/{aw.PROJECT}/blocked/out_0</soft_link>")
    started = time.monotonic()
    done = run_frozen(frozen_app, slot.slot_dir)
    assert done.returncode == runtime.EXIT_OUTPUT_UNWRITABLE == 5
    lines = error_lines(done.stderr)
    assert len(lines) == 1 and "not writable" in lines[0]
    assert "fresh start" not in done.stderr  # refused before sampling
    assert time.monotonic() - started < 60


def test_truncated_checkpoint_starts_over_says_so_and_still_gives_the_right_result(
        frozen_app, workunits, references, tmp_path):
    wu = workunits["ttv-nested"]
    slot = aw.lay_out_slot(tmp_path, wu, mode="copy",
                           init_data=aw.init_data_xml(wu.name, checkpoint_period=1))
    checkpoint = slot.slot_dir / "openastro_checkpoint.dat"
    with start_frozen(frozen_app, slot.slot_dir) as proc:
        wait_for(checkpoint.exists, 300, "a checkpoint", proc)
        proc.kill()
    data = checkpoint.read_bytes()
    checkpoint.write_bytes(data[: len(data) // 3])
    done = run_frozen(frozen_app, slot.slot_dir)
    assert done.returncode == 0, done.stderr
    notes = [line for line in done.stderr.splitlines() if "unreadable" in line]
    assert len(notes) == 1 and "starting over" in notes[0]
    assert (slot.slot_dir / "openastro_checkpoint.dat.unreadable").exists()
    assert_bitwise_equal(read_result(slot.output_path), references("ttv-nested"))


def test_checkpoint_of_another_format_is_refused_with_exit_6(frozen_app, workunits, tmp_path):
    slot = aw.lay_out_slot(tmp_path, workunits["ttv-nested"], mode="copy")
    foreign = {"format": "openastro.ttv-checkpoint", "format_version": 999, "kind": "dynesty"}
    (slot.slot_dir / "openastro_checkpoint.dat").write_bytes(pickle.dumps(foreign))
    done = run_frozen(frozen_app, slot.slot_dir)
    assert done.returncode == runtime.EXIT_CHECKPOINT_MISMATCH == 6
    lines = error_lines(done.stderr)
    assert len(lines) == 1 and "refusing checkpoint" in lines[0] and "999" in lines[0]
    assert (slot.slot_dir / "openastro_checkpoint.dat").exists()  # never overwritten


def test_out_of_memory_exits_7_with_one_error_line(frozen_app, workunits, tmp_path):
    import resource

    wu = workunits["reproject-tile"]
    spec = json.loads(json.dumps(wu.spec))
    spec["params"]["tile_bounds"] = [0, 16000, 0, 16000]  # ~1 GB per float32 output array
    slot = aw.lay_out_slot(tmp_path, aw.WorkUnit(wu.name, spec, wu.files), mode="copy")

    def limit_address_space():  # a host with 1.5 GB to give
        resource.setrlimit(resource.RLIMIT_AS, (1_500_000_000, 1_500_000_000))

    done = subprocess.run([str(frozen_app), "run"], cwd=slot.slot_dir, capture_output=True, text=True,
                          timeout=180, preexec_fn=limit_address_space)
    assert done.returncode == runtime.EXIT_OUT_OF_MEMORY == 7, done.stderr
    lines = error_lines(done.stderr)
    assert len(lines) == 1 and "out of memory" in lines[0]
    assert not slot.output_path.exists()


@pytest.mark.skipif(shutil.which("strace") is None, reason="needs strace to watch system calls")
@pytest.mark.parametrize("kind", ["reproject-tile", "ttv-emcee"])
def test_the_app_opens_no_network_socket(frozen_app, workunits, tmp_path, kind):
    slot = aw.lay_out_slot(tmp_path, workunits[kind], mode="copy")
    trace = tmp_path / "trace.txt"
    done = subprocess.run(["strace", "-f", "-qq", "-e", "trace=socket,connect", "-o", str(trace),
                           str(frozen_app), "run"], cwd=slot.slot_dir, capture_output=True, text=True,
                          timeout=300)
    if done.returncode != 0 and "ptrace" in done.stderr:
        pytest.skip(f"strace cannot trace here: {done.stderr.strip()[:200]}")
    assert done.returncode == 0, done.stderr
    calls = [line for line in trace.read_text().splitlines() if "socket(" in line or "connect(" in line]
    assert calls == [], calls


# --- runtime behaviour ----------------------------------------------------------------------------

def _thread_count(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("Threads:"):
            return int(line.split()[1])
    raise AssertionError("no Threads line")


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc")
@pytest.mark.parametrize("ncpus, expect_more_than_one", [(1, False), (2, True)])
def test_blas_threads_follow_init_data_ncpus(frozen_app, workunits, tmp_path, ncpus,
                                             expect_more_than_one):
    wu = workunits["ttv-nested"]
    slot = aw.lay_out_slot(tmp_path, wu, mode="copy", init_data=aw.init_data_xml(wu.name, ncpus=ncpus))
    env = {k: v for k, v in os.environ.items() if k not in runtime.THREAD_VARS}
    fraction = slot.slot_dir / "fraction_done"
    with start_frozen(frozen_app, slot.slot_dir, env=env) as proc:
        wait_for(lambda: fraction.exists() and float(fraction.read_text() or 0) > 0.01, 300,
                 "sampling progress", proc)
        threads = _thread_count(proc.pid)
    # numpy's and scipy's OpenBLAS each start ncpus - 1 worker threads when they load
    assert (threads > 1) == expect_more_than_one, f"{threads} threads with ncpus={ncpus}"


# --- packaging: the BOINC app-version directory --------------------------------------------------

def _fake_wrapper(directory: Path) -> Path:
    """Stand-in for BOINC's wrapper binary, which cannot be built here (only copied by packaging)."""
    wrapper = directory / "wrapper_26.1_x86_64-pc-linux-gnu"
    wrapper.write_bytes(b"\x7fELF stand-in for BOINC samples/wrapper\n")
    return wrapper


def _unpack_like_the_wrapper(slot_dir: Path, zip_logical_name: str) -> None:
    """What wrapper.cpp's do_unzip_inputs does: resolve the stub, unzip into the slot, drop the stub."""
    from app.slot import resolve_input

    archive = resolve_input(slot_dir, zip_logical_name).path
    subprocess.run(["unzip", "-q", "-o", str(archive), "-d", str(slot_dir)], check=True)
    (slot_dir / zip_logical_name).unlink()


@pytest.mark.skipif(not Path("/usr/bin/unzip").exists(), reason="needs Info-ZIP unzip")
def test_packaged_app_version_lays_out_boinc_files_and_runs_after_unzip(
        frozen_app, workunits, references, tmp_path):
    import xml.etree.ElementTree as ET

    from server.boinc import package as bp

    apps = tmp_path / "apps"
    packaged = bp.package_app_version(apps, "1.00", _fake_wrapper(tmp_path),
                                      bundle_dir=frozen_app.parent, compresslevel=1)
    version_dir = apps / "openastro_app" / "1.00" / "x86_64-pc-linux-gnu"
    assert packaged.version_dir == version_dir
    assert sorted(p.name for p in version_dir.iterdir()) == sorted([
        "wrapper_26.1_x86_64-pc-linux-gnu", "openastro_app_1.00_x86_64-pc-linux-gnu.zip",
        "openastro_app_job_1.00_x86_64-pc-linux-gnu.xml", "version.xml", ".openastro.json"])
    assert packaged.glibc_floor is not None and packaged.glibc_floor.startswith("2.")
    # what `openastro boinc hosts` reads (a dot file: BOINC's update_versions skips it)
    meta = json.loads((version_dir / ".openastro.json").read_text())
    assert meta["glibc_floor"] == packaged.glibc_floor and meta["platform"] == "x86_64-pc-linux-gnu"

    version = ET.parse(version_dir / "version.xml").getroot()
    assert version.find("is_wrapper") is not None
    files = version.findall("file")
    main_programs = [f for f in files if f.find("main_program") is not None]
    assert [f.findtext("physical_name") for f in main_programs] == ["wrapper_26.1_x86_64-pc-linux-gnu"]
    logical = {f.findtext("logical_name"): f.findtext("physical_name") for f in files
               if f.find("logical_name") is not None}
    assert logical == {"openastro_app.zip": "openastro_app_1.00_x86_64-pc-linux-gnu.zip",
                       "job.xml": "openastro_app_job_1.00_x86_64-pc-linux-gnu.xml"}

    job = ET.parse(version_dir / logical["job.xml"]).getroot()
    task = job.find("task")
    assert job.findtext("unzip_input/zipfilename") == "openastro_app.zip"
    assert task.findtext("application") == "openastro_app/openastro_app"
    assert task.findtext("checkpoint_filename") == "openastro_checkpoint.dat"
    assert task.findtext("fraction_done_filename") == "fraction_done"
    assert task.find("multi_process") is not None

    # A client slot: the app-version files as stubs into the project dir, then the wrapper's unzip.
    slot = aw.lay_out_slot(tmp_path / "client", workunits["reproject-tile"], mode="stub")
    project = slot.root / "projects" / aw.PROJECT
    for name, physical in logical.items():
        (project / physical).write_bytes((version_dir / physical).read_bytes())
        (slot.slot_dir / name).write_text(f"<soft_link>../../projects/{aw.PROJECT}/{physical}</soft_link>")
    _unpack_like_the_wrapper(slot.slot_dir, "openastro_app.zip")
    exe = slot.slot_dir / task.findtext("application")
    assert os.access(exe, os.X_OK), "zip must keep the executable bit"
    command = [str(exe), *task.findtext("command_line").split()]
    done = subprocess.run(command, cwd=slot.slot_dir, capture_output=True, text=True, timeout=180)
    assert done.returncode == 0, done.stderr
    assert_bitwise_equal(read_result(slot.output_path), references("reproject-tile"))
    assert (slot.slot_dir / "fraction_done").exists()

    with pytest.raises(bp.PackagingError, match="already exists"):
        bp.package_app_version(apps, "1.00", _fake_wrapper(tmp_path), bundle_dir=frozen_app.parent)
