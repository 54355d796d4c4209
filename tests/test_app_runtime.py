"""Volunteer-app runtime pieces in-process: thread caps, signals, progress, checkpoint policy,
task parameter validation and the exit codes of app.main (the frozen runs are in
test_app_frozen.py)."""

from __future__ import annotations

import json
import os
import pickle
import subprocess
import sys
import textwrap

import numpy as np
import pytest

import app_workunits as aw
from app import checkpoint as ckpt
from app import runtime
from app.main import main
from app.spec import SpecError, read_result


def _python(code: str, **kwargs):
    return subprocess.run([sys.executable, "-c", textwrap.dedent(code)], capture_output=True,
                          text=True, timeout=60, **kwargs)


def test_importing_the_entry_point_does_not_import_numpy():
    # thread caps only work if they are set before numpy (and its OpenBLAS) loads
    done = _python("""
        import sys
        import app.main, app.slot, app.runtime, app.checkpoint, app.tasks
        print(sorted(m for m in ("numpy", "scipy", "astropy") if m in sys.modules))
    """)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "[]"


def test_cap_threads_sets_every_blas_variable_and_rejects_nonsense():
    env: dict[str, str] = {}
    runtime.cap_threads(3, env)
    assert {env[name] for name in runtime.THREAD_VARS} == {"3"}
    for bad in (0, -1, 1.5, True, "2"):
        with pytest.raises(ValueError, match="ncpus must be a positive integer"):
            runtime.cap_threads(bad, {})


def test_go_offline_switches_astropy_downloads_off():
    done = _python("""
        from app import runtime
        runtime.go_offline()
        from astropy.utils import data, iers
        print(iers.conf.auto_download, iers.conf.auto_max_age, data.conf.allow_internet)
    """)
    assert done.stdout.split() == ["False", "None", "False"], done.stderr


def test_sigterm_sets_the_stop_flag_and_handlers_are_restored(tmp_path):
    done = _python("""
        import os, signal, time
        from app.runtime import StopFlag
        before = signal.getsignal(signal.SIGTERM)
        flag = StopFlag(forced_exit_after_s=30).install()
        os.kill(os.getpid(), signal.SIGTERM)
        time.sleep(0.2)
        print(flag.is_set(), flag.signum == signal.SIGTERM)
        flag.uninstall()
        print(signal.getsignal(signal.SIGTERM) is before)
    """)
    assert done.stdout.split() == ["True", "True", "True"], done.stderr


def test_a_task_stuck_after_sigterm_is_forced_out_with_the_interrupted_code():
    done = _python("""
        import os, signal, time
        from app.runtime import StopFlag
        StopFlag(forced_exit_after_s=0.5).install()
        os.kill(os.getpid(), signal.SIGTERM)
        time.sleep(30)   # a task that never polls the flag
        print("never reached")
    """)
    assert done.returncode == runtime.EXIT_INTERRUPTED
    assert "never reached" not in done.stdout
    assert "did not stop within" in done.stderr  # forced out: the 30 s sleep never ended on its own


def test_progress_file_is_clamped_rate_limited_and_rewritten_when_forced(tmp_path):
    path = tmp_path / "fraction_done"
    progress = runtime.ProgressFile(path, min_interval_s=3600)
    progress.write(1.7, force=True)
    assert path.read_text() == "1.000000\n"
    progress.write(0.25)  # within the interval: skipped
    assert path.read_text() == "1.000000\n"
    path.unlink()  # the wrapper deletes it when it restarts the task
    progress.write(-3, force=True)
    assert path.read_text() == "0.000000\n"
    assert runtime.ProgressFile(None).write(0.5) is None
    assert not list(tmp_path.glob(".*.tmp"))


def test_stale_pyinstaller_dirs_are_removed_but_not_our_own_or_other_files(tmp_path):
    for name in ("_MEI00006dcc2oTRT2", "_MEI000070514CwPk1", "_MEIown", "_MEI-not-pyinstaller", "data"):
        (tmp_path / name).mkdir()
    (tmp_path / "_MEIfile").write_text("a file, not a dir")
    removed = runtime.clean_stale_extractions(tmp_path, str(tmp_path / "_MEIown"))
    assert sorted(p.name for p in removed) == ["_MEI00006dcc2oTRT2", "_MEI000070514CwPk1"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["_MEI-not-pyinstaller", "_MEIfile", "_MEIown", "data"]


def test_child_environment_gets_the_original_library_path_back():
    env = runtime.restore_child_environment({"LD_LIBRARY_PATH": "/tmp/_MEI1:../../projects/p:.:../..",
                                             "LD_LIBRARY_PATH_ORIG": "../../projects/p:.:../..", "A": "1"})
    assert env == {"LD_LIBRARY_PATH": "../../projects/p:.:../..", "A": "1"}


def test_boinc_finish_file_holds_the_status_and_a_newline(tmp_path):
    runtime.write_boinc_finish_file(tmp_path, 0)
    assert (tmp_path / "boinc_finish_called").read_text() == "0\n"


# --- checkpoint policy ----------------------------------------------------------------------------

def _header_reader(path):
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError as exc:
        raise ckpt.CheckpointUnreadable(str(exc)) from exc


EXPECTED = {"format": "x", "format_version": 1, "kind": "dynesty"}


def test_missing_checkpoint_means_fresh_start(tmp_path, capsys):
    assert ckpt.inspect_checkpoint(tmp_path / "c.dat", _header_reader, EXPECTED) is False
    assert "fresh start" in capsys.readouterr().err


def test_unreadable_checkpoint_is_moved_aside_and_the_task_starts_over(tmp_path, capsys):
    path = tmp_path / "c.dat"
    path.write_text('{"format": "x", "form')
    assert ckpt.inspect_checkpoint(path, _header_reader, EXPECTED) is False
    err = capsys.readouterr().err
    assert "unreadable" in err and "starting over" in err
    assert not path.exists() and (tmp_path / "c.dat.unreadable").exists()


def test_checkpoint_of_another_version_is_refused_loudly(tmp_path):
    path = tmp_path / "c.dat"
    path.write_text(json.dumps(dict(EXPECTED, format_version=2)))
    with pytest.raises(ckpt.CheckpointMismatch, match="'format_version': 2"):
        ckpt.inspect_checkpoint(path, _header_reader, EXPECTED)
    assert path.exists()


def test_matching_checkpoint_is_resumed(tmp_path, capsys):
    path = tmp_path / "c.dat"
    path.write_text(json.dumps(EXPECTED))
    assert ckpt.inspect_checkpoint(path, _header_reader, EXPECTED) is True
    assert "resuming from checkpoint c.dat" in capsys.readouterr().err


def test_stale_temp_files_of_a_killed_writer_are_removed(tmp_path):
    path = tmp_path / "openastro_checkpoint.dat"
    (tmp_path / ".openastro_checkpoint.dat.123.tmp").write_text("x")
    (tmp_path / ".ckpt-abc").write_text("x")
    (tmp_path / "keep.txt").write_text("x")
    assert [p.name for p in ckpt.remove_stale_temps(path)] == [".openastro_checkpoint.dat.123.tmp"]
    assert [p.name for p in ckpt.remove_stale_temps(path, (".ckpt-*",))] == [".ckpt-abc"]
    assert [p.name for p in tmp_path.iterdir()] == ["keep.txt"]


def test_ttv_checkpoint_reader_flags_truncated_pickles_and_npz(tmp_path):
    from app.tasks._ttv import _read_checkpoint_header

    good = {"format": "openastro.ttv-checkpoint", "format_version": 1, "kind": "dynesty",
            "sampler": list(range(1000))}
    path = tmp_path / "c.dat"
    data = pickle.dumps(good)
    path.write_bytes(data)
    assert _read_checkpoint_header(path, "dynesty")["kind"] == "dynesty"
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(ckpt.CheckpointUnreadable):
        _read_checkpoint_header(path, "dynesty")
    with open(path, "wb") as handle:
        np.savez(handle, meta=np.asarray(json.dumps({"kind": "emcee"})), chain_u=np.ones((50, 4, 3)))
    assert _read_checkpoint_header(path, "emcee") == {"kind": "emcee"}
    data = path.read_bytes()
    path.write_bytes(data[: len(data) - 200])
    with pytest.raises(ckpt.CheckpointUnreadable):
        _read_checkpoint_header(path, "emcee")


# --- task parameters and in-process exit codes ------------------------------------------------

@pytest.mark.parametrize("change, message", [
    ({"tile_bounds": [0, 10, 0]}, "tile_bounds must be a list of 4 integers"),
    ({"tile_bounds": [10, 5, 0, 10]}, "not a non-empty"),
    ({"cutout_origin": [-1, 0]}, "must be >= 0"),
    ({"method": "exact"}, "is not one of bilinear"),
    ({"step": 0}, "params.step"),
    ({"conserve_flux": "yes"}, "conserve_flux"),
    ({"output_wcs": {}}, "non-empty object"),
    ({"output_wcs": {"CRVAL1": [1]}}, "not a FITS string/number"),
    ({"surprise": 1}, r"unknown keys \['surprise'\]"),
])
def test_reproject_tile_params_are_validated(change, message):
    from app.tasks.reproject_tile import parse_params

    params = {"output_wcs": {"CTYPE1": "RA---TAN"}, "tile_bounds": [0, 10, 0, 10], "cutout_origin": [0, 0]}
    params.update(change)
    with pytest.raises(SpecError, match=message):
        parse_params(params)


def test_ttv_kind_must_match_its_sampler_and_validates_before_sampling(tmp_path, capsys):
    wu = aw.ttv_nested_workunit()
    spec = json.loads(json.dumps(wu.spec))
    spec["params"]["sampler"] = {"name": "emcee", "nwalkers": 8, "nsteps": 5}
    slot = aw.lay_out_slot(tmp_path, aw.WorkUnit(wu.name, spec, {}), mode="copy")
    assert main(["run", "--slot", str(slot.slot_dir)]) == runtime.EXIT_BAD_SPEC
    err = capsys.readouterr().err
    assert "needs params.sampler.name == 'dynesty'" in err
    assert "fresh start" not in err


def test_missing_slot_directory_is_a_usage_error(tmp_path, capsys):
    assert main(["run", "--slot", str(tmp_path / "nope")]) == runtime.EXIT_USAGE
    assert "error: slot directory" in capsys.readouterr().err


def test_missing_spec_file_exits_with_the_bad_spec_code(tmp_path, capsys):
    assert main(["run", "--slot", str(tmp_path)]) == runtime.EXIT_BAD_SPEC
    lines = [l for l in capsys.readouterr().err.splitlines() if l.startswith("error:")]
    assert len(lines) == 1 and "work-unit spec missing" in lines[0]


def test_ttv_result_envelope_rebuilds_the_ttv_result(tmp_path):
    from app.spec import result_meta, write_result
    from app.tasks._ttv import ttv_result_from_envelope
    from app.ttv.results import make_result

    arrays = {"chain": np.ones((4, 6, 2)), "log_prob": np.zeros((4, 6)), "log_like": np.zeros((4, 6))}
    ttv = make_result("ttv-emcee", {"param_names": ["c.mass", "c.period"]}, arrays)
    meta = result_meta("ttv-emcee", (1, 2), app_version="0.1.0", wu_name="w", timings={},
                       extra={"ttv": ttv.meta})
    write_result(tmp_path / "r.npz", meta, ttv.arrays)
    rebuilt = ttv_result_from_envelope(read_result(tmp_path / "r.npz"))
    assert rebuilt.kind == "ttv-emcee" and rebuilt.param_names == ["c.mass", "c.period"]
    np.testing.assert_array_equal(rebuilt.arrays["chain"], arrays["chain"])


def test_os_environment_is_left_alone_by_cap_threads_with_an_explicit_mapping():
    before = dict(os.environ)
    runtime.cap_threads(2, {})
    assert dict(os.environ) == before
