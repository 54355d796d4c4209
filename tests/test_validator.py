"""The validator programs, called exactly as script_validator calls them (cwd tmp_HOST, bare name, paths).

Results are real ``ttv-nested`` runs of a small system (3 free parameters, nlive 30; see boinc_fakes), and
bad ones are made from them: truncated, oversized, NaN-filled, wrong schema version, forged sample counts,
log-likelihoods that do not belong to the samples, pickles in disguise.
"""

from __future__ import annotations

import io
import json
import pickle

import numpy as np
import pytest

from boinc_fakes import (make_fake_project, rewrite_result, run_as_boinc, small_ttv_params, small_ttv_result_bytes,
                         spec_for)
from server.core.boinc_contract import TTV_MAX_NBYTES, fanout_dir
from server.boinc.install import write_launchers
from server.boinc.campaigns import create_campaign
from server.core.db.models import Result, WorkUnit
from server.boinc.executors import settings_env
from validator.checks import InvalidResult, check_container, compare_ttv
from validator.common import _plain

SEED_A = (20261125, 0, 0)
SEED_B = (20261125, 0, 1)  # the "other host": different floating point = a different run of the same WU


@pytest.fixture
def world(tmp_path, oa_app):
    """A fake project whose bin/ launchers see the test database, and one work unit in it."""
    project = make_fake_project(tmp_path / "project")
    write_launchers(project / "bin", settings_env(oa_app.settings))
    cid = create_campaign(oa_app, "val", "ttv", {"kind": "ttv"}, seed=1)
    params = small_ttv_params()
    with oa_app.db.session() as session:
        session.add(WorkUnit(campaign_id=cid, name="oa_val_b00_r00", kind="ttv-nested", bin_index=0, run_index=0,
                             spec=spec_for(params, SEED_A), input_files={"quorum": 2}, state="sent"))
    return oa_app, project


def upload(project, data: bytes, replica: int, wu_name: str = "oa_val_b00_r00"):
    name = f"{wu_name}_{replica}_r{1234567 + replica}_0"
    path = project / "upload" / fanout_dir(name) / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return path


def good_result(seed=SEED_A) -> bytes:
    return small_ttv_result_bytes(seed)


def test_an_honest_result_is_valid_and_recorded(world):
    app, project = world
    path = upload(project, good_result(), 0)
    proc = run_as_boinc(project, "openastro-validate-init", path)
    assert proc.returncode == 0, proc.stderr
    with app.db.session() as session:
        row = session.query(Result).filter_by(name="oa_val_b00_r00_0").one()
        assert row.validate_state == "valid" and row.summary["nlive"] == 30


def test_two_honest_runs_from_different_hosts_are_equivalent(world):
    _, project = world
    a = upload(project, good_result(SEED_A), 0)
    # a second host computes the same work unit; its floating point differs, so its run differs: we model
    # that with another seed, then give it this work unit's seed in the meta as a real host would
    b_bytes = rewrite_result(small_ttv_result_bytes(SEED_B), meta_update={"seed": list(SEED_A)})
    b = upload(project, b_bytes, 1)
    proc = run_as_boinc(project, "openastro-validate-compare", a, b)
    assert proc.returncode == 0, proc.stderr


ROW_ARRAYS = ("samples", "samples_u", "samples_id", "samples_it", "ncall", "logl", "logvol", "logwt", "logz",
              "logzerr", "information")


def _forged_counts(d: bytes) -> bytes:
    """Every row twice (logl stays sorted) and niter raised to match: the volume schedule gives it away."""
    arrays = {k: np.repeat(_arr(d, k), 2, axis=0) for k in ROW_ARRAYS}
    n = len(arrays["logl"])
    return rewrite_result(d, arrays_update=arrays | {"niter": np.int64(n - int(_arr(d, "nlive")))})


def _foreign_logl(d: bytes) -> bytes:
    """logl raised by 5 everywhere, with logz/logwt re-integrated so that only the likelihood can tell."""
    from dynesty.utils import compute_integrals

    logl = _arr(d, "logl") + 5.0
    logwt, logz, logzvar, h = compute_integrals(logl=logl, logvol=_arr(d, "logvol"))
    return rewrite_result(d, arrays_update={"logl": logl, "logwt": logwt, "logz": logz,
                                            "logzerr": np.sqrt(np.maximum(logzvar, 0)), "information": h})


BAD = {  # defect -> (how to make it from an honest result, what the validator must say)
    "truncated": (lambda d: d[: len(d) // 2], "not a readable npz"),
    "nan-filled": (lambda d: rewrite_result(d, arrays_update={"logl": np.full_like(_arr(d, "logl"), np.nan)}),
                   "non-finite"),
    "wrong schema version": (lambda d: rewrite_result(d, meta_update={"version": 2}), "version 2 is not supported"),
    "forged sample count": (_forged_counts, "forged sample counts"),
    "logl not of these samples": (_foreign_logl, "do not belong to the samples"),
    "pickle named npz": (lambda d: pickle.dumps({"logl": [1.0, 2.0]}), "not a readable npz"),
    "object array inside npz": (lambda d: _object_npz(), "a pickle"),
    "another work unit's seed": (lambda d: rewrite_result(d, meta_update={"seed": [1, 2, 3]}), "seed"),
    "fewer live points than asked": (lambda d: rewrite_result(d, arrays_update={"nlive": np.int64(10)}),
                                     "live points"),
}


def _arr(data: bytes, key: str):
    with np.load(io.BytesIO(data), allow_pickle=False) as npz:
        return np.array(npz[key])


def _object_npz() -> bytes:
    buffer = io.BytesIO()
    np.savez(buffer, meta=np.asarray(json.dumps({"format": "openastro.result"})),
             samples=np.array([{"evil": 1}], dtype=object))
    return buffer.getvalue()


@pytest.mark.parametrize("defect", sorted(BAD))
def test_bad_results_are_rejected_by_the_init_script(world, defect):
    app, project = world
    make, reason = BAD[defect]
    path = upload(project, make(good_result()), 0)
    proc = run_as_boinc(project, "openastro-validate-init", path)
    assert proc.returncode not in (0, 3), proc.stderr
    assert "INVALID" in proc.stderr and reason in proc.stderr, proc.stderr
    with app.db.session() as session:
        row = session.query(Result).filter_by(name="oa_val_b00_r00_0").first()
        assert row is None or row.validate_state == "invalid"


def test_an_oversized_result_is_rejected_before_it_is_read(world):
    _, project = world
    path = upload(project, good_result(), 0)
    with open(path, "r+b") as fh:
        fh.truncate(TTV_MAX_NBYTES + 1)  # sparse: cheap to make
    proc = run_as_boinc(project, "openastro-validate-init", path)
    assert proc.returncode == 1 and "over the limit" in proc.stderr


def test_a_zip_bomb_is_refused_from_its_declared_sizes(tmp_path):
    buffer = io.BytesIO()
    np.savez_compressed(buffer, meta=np.asarray("{}"), big=np.zeros(40_000_000, dtype=np.uint8))
    path = tmp_path / "bomb.npz"
    path.write_bytes(buffer.getvalue())
    with pytest.raises(InvalidResult, match="zip bomb"):
        check_container(path, max_nbytes=100_000)


def test_unreachable_database_is_transient(world, tmp_path):
    app, project = world
    env = settings_env(app.settings) | {"OPENASTRO_DATABASE_URL": "mysql+mysqldb://u:p@127.0.0.1:9/none"}
    write_launchers(project / "bin", env)
    path = upload(project, good_result(), 0)
    proc = run_as_boinc(project, "openastro-validate-init", path)
    assert proc.returncode == 3, proc.stderr


def test_called_without_paths_is_transient_not_invalid(world):
    _, project = world
    assert run_as_boinc(project, "openastro-validate-init").returncode == 3
    assert run_as_boinc(project, "openastro-validate-compare").returncode == 3


def test_a_file_of_an_unknown_work_unit_is_invalid(world):
    _, project = world
    path = upload(project, good_result(), 0, wu_name="oa_nobody")
    proc = run_as_boinc(project, "openastro-validate-init", path)
    assert proc.returncode == 1 and "no work unit" in proc.stderr


def test_compare_rejects_runs_whose_evidence_or_posterior_disagree():
    from app.spec import read_result
    from app.tasks._ttv import ttv_result_from_envelope
    from app.ttv.results import make_result

    a = ttv_result_from_envelope(read_result(io.BytesIO(good_result(SEED_A))))
    b = ttv_result_from_envelope(read_result(io.BytesIO(good_result(SEED_B))))
    assert compare_ttv(a, b).equivalent
    shifted = dict(b.arrays, logz=b.arrays["logz"] + 10.0)
    verdict = compare_ttv(a, make_result("ttv-nested", b.meta, shifted))
    assert not verdict.equivalent and "log Z" in verdict.reason
    samples = b.arrays["samples"].copy()
    samples[:, 0] += 20 * np.std(samples[:, 0])  # the mass posterior moved by 20 sigma
    verdict = compare_ttv(a, make_result("ttv-nested", b.meta, dict(b.arrays, samples=samples)))
    assert not verdict.equivalent and "posterior means" in verdict.reason


def test_tiles_compare_nan_aware_with_a_tolerance():
    from app.spec import ResultEnvelope
    from validator.checks import compare_tiles

    tile = np.arange(16, dtype=np.float32).reshape(4, 4) + 100
    tile[0, 0] = np.nan
    arrays = {"tile": tile, "weight": np.ones((4, 4), np.float32), "footprint": np.ones((4, 4), bool),
              "bounds": np.array([0, 4, 0, 4])}
    a = ResultEnvelope({"kind": "reproject-tile"}, arrays)
    near = ResultEnvelope({"kind": "reproject-tile"}, dict(arrays, tile=tile * (1 + 1e-7)))
    assert compare_tiles(a, near).equivalent
    moved = tile.copy()
    moved[1, 1] += 1.0
    assert not compare_tiles(a, ResultEnvelope({"kind": "reproject-tile"}, dict(arrays, tile=moved))).equivalent
    nan_moved = tile.copy()
    nan_moved[0, 0], nan_moved[3, 3] = 1.0, np.nan
    assert "NaN" in compare_tiles(a, ResultEnvelope({"kind": "reproject-tile"}, dict(arrays, tile=nan_moved))).reason


def test_summaries_are_json_safe():
    assert json.dumps(_plain({"a": float("nan"), "b": np.float64(1.5), "c": [np.int64(2)]}))


def test_an_emcee_result_is_checked_against_its_spec_and_likelihood(tmp_path):
    from app_workunits import ttv_emcee_workunit

    from app.spec import encode_result, result_meta
    from app.ttv.task import run_ttv_task
    from validator.checks import check_result

    wu = ttv_emcee_workunit()
    wu.spec["params"]["sampler"]["nsteps"] = 60
    result = run_ttv_task(wu.spec["params"], wu.spec["seed"], None)
    meta = result_meta("ttv-emcee", tuple(wu.spec["seed"]), app_version="test", wu_name=None, timings={},
                       extra={"ttv": result.meta})
    good = tmp_path / "good.npz"
    good.write_bytes(encode_result(meta, dict(result.arrays)))
    summary = check_result(good, wu.spec, TTV_MAX_NBYTES, rng=np.random.default_rng(0)).summary
    assert summary["n_samples"] == 60 * 16
    forged = tmp_path / "forged.npz"
    forged.write_bytes(encode_result(meta, dict(result.arrays, log_like=result.arrays["log_like"] + 3.0)))
    with pytest.raises(InvalidResult, match="likelihood of the chain position"):
        check_result(forged, wu.spec, TTV_MAX_NBYTES, rng=np.random.default_rng(0))
    short = tmp_path / "short.npz"
    short.write_bytes(encode_result(meta, {k: v[:30] for k, v in result.arrays.items()}))
    with pytest.raises(InvalidResult, match="asked for"):
        check_result(short, wu.spec, TTV_MAX_NBYTES, rng=np.random.default_rng(0))
