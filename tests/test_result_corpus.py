"""The adversarial result corpus (tests/result_corpus.py) against the validator's init and compare scripts and the
assimilator: each is refused by all three, nothing reaches a posterior, and each refusal fits in 200 MB.

The programs' ``main`` run in one subprocess (tests/result_programs_driver.py) from ``PROJECT/tmp_HOST`` with the
launchers' environment, under ``RLIMIT_AS`` = the address space after a warm-up + 200 MB; an honest result is
validated, compared and merged under the same limit, so the limit is one a normal result passes.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from boinc_fakes import HOST, make_fake_project, rewrite_result, run_as_boinc, small_ttv_params, spec_for
from result_corpus import adversarial_results
from server.boinc.campaigns import create_campaign
from server.boinc.executors import settings_env
from server.boinc.install import write_launchers
from server.core.boinc_contract import EXIT_INVALID
from server.core.db.models import Campaign, Posterior, Result, WorkUnit
from test_validator import SEED_A, good_result, upload

DRIVER = Path(__file__).with_name("result_programs_driver.py")
WU = "oa_adv_b00_r00"
OTHER_WU_SEED = (SEED_A[0], 0, 7)          # another work unit of the same campaign: same entropy, other spawn key
OTHER_CAMPAIGN_SEED = (424242, 0, 0)       # another campaign: other entropy
LIMIT_MB = 200


@pytest.fixture
def world(tmp_path, oa_app):
    project = make_fake_project(tmp_path / "project")
    write_launchers(project / "bin", settings_env(oa_app.settings))
    params = small_ttv_params()
    config = {"kind": "ttv", "likelihood": params["likelihood"], "perturber": "c", "sampler": params["sampler"],
              "replicas": 2, "bins": [{"index": 0, "period_min": 22.2, "period_max": 22.4, "prior_mass": 1.0}]}
    cid = create_campaign(oa_app, "adversarial", "ttv", config, seed=SEED_A[0])
    with oa_app.db.session() as session:
        session.add(WorkUnit(campaign_id=cid, name=WU, kind="ttv-nested", bin_index=0, run_index=0,
                             spec=spec_for(params, SEED_A), input_files={"quorum": 2}, state="sent"))
        session.get(Campaign, cid).status = "running"
    return oa_app, project, cid


def _place(project: Path, replica: int, bad) -> str:
    if bad.link_to is None:
        return str(upload(project, bad.data, replica, WU))
    path = upload(project, b"", replica, WU)
    path.unlink()
    path.symlink_to(bad.link_to)
    return str(path)


def _run_driver(app, project: Path, plan: dict, tmp_path: Path) -> list[dict]:
    plan_path = tmp_path / "plan.json"
    plan_path.write_text(json.dumps(plan))
    env = {**os.environ, **settings_env(app.settings)}
    proc = subprocess.run([sys.executable, str(DRIVER), str(plan_path)], cwd=project / f"tmp_{HOST}", env=env,
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "Traceback" not in proc.stderr, proc.stderr[-3000:]
    return [json.loads(line) for line in proc.stdout.splitlines()]


def test_every_adversarial_result_is_refused_by_validator_and_assimilator_within_200_mb(world, tmp_path):
    app, project, cid = world
    good = good_result()
    corpus = adversarial_results(good, other_wu_seed=OTHER_WU_SEED, other_campaign_seed=OTHER_CAMPAIGN_SEED,
                                 other_wu_name="oa_adv_b00_r07")
    good_path = str(upload(project, good, 0, WU))
    calls, paths = [], {}
    for replica, (label, bad) in enumerate(sorted(corpus.items()), start=1):
        path = paths[label] = _place(project, replica, bad)
        name = f"{WU}_{replica}"
        calls += [{"label": label, "program": "init", "args": [path]},
                  {"label": label, "program": "compare", "args": [good_path, path]},
                  {"label": label, "program": "assimilate", "args": [1001, path]},         # recorded invalid
                  {"label": label, "program": "mark_valid", "args": [name]},               # a validator fooled
                  {"label": label, "program": "assimilate", "args": [1001, path]}]         # its own checks
    # an honest result that the validator recorded invalid, and one it never saw: never merged
    never_seen = str(upload(project, good, 90, WU))
    recorded_invalid = str(upload(project, good, 91, WU))
    calls += [{"label": "good, never validated", "program": "assimilate", "args": [1001, never_seen]},
              {"label": "good, recorded invalid", "program": "init", "args": [recorded_invalid]},
              {"label": "good, recorded invalid", "program": "mark_invalid", "args": [f"{WU}_91"]},
              {"label": "good, recorded invalid", "program": "assimilate", "args": [1001, recorded_invalid]}]
    # the honest result under the same limit: valid, equivalent to itself, merged
    calls += [{"label": "honest", "program": "init", "args": [good_path]},
              {"label": "honest", "program": "compare", "args": [good_path, good_path]},
              {"label": "honest", "program": "assimilate", "args": [1001, good_path]}]
    warmup = [{"label": "warm-up", "program": "init", "args": [good_path]},
              {"label": "warm-up", "program": "compare", "args": [good_path, good_path]},
              {"label": "warm-up", "program": "assimilate", "args": []}]
    lines = _run_driver(app, project, {"warmup": warmup, "limit_mb": LIMIT_MB, "calls": calls}, tmp_path)
    limit = next(line for line in lines if "limit_mb" in line)
    assert limit["limit_mb"] == pytest.approx(limit["address_space_mb"] + LIMIT_MB, abs=1)
    out = [line for line in lines if "rc" in line and not line.get("warmup")]
    assert len(out) == len(calls)
    print(f"\naddress space after warm-up {limit['address_space_mb']} MB, RLIMIT_AS {limit['limit_mb']} MB")
    for line in out:
        print(f"{line['label']:32s} {line['program']:12s} rc={line['rc']!s:4s} peak +{line['peak_mb']} MB")
        assert line["peak_mb"] is None or line["peak_mb"] < LIMIT_MB, line
    by_label: dict[str, list[dict]] = {}
    for line in out:
        by_label.setdefault(line["label"], []).append(line)
    for label, bad in corpus.items():
        init, compare, assim_invalid, _, assim_direct = by_label[label]
        why = re.compile(bad.why, re.IGNORECASE)
        assert init["rc"] == EXIT_INVALID, (label, init)
        assert init["validate_state"] == "invalid" and why.search(init["invalid_reason"]), (label, init)
        assert compare["rc"] == EXIT_INVALID, (label, compare)
        for assim in (assim_invalid, assim_direct):  # exit 0 (BOINC's contract), refused, recorded, unmerged
            assert assim["rc"] == 0, (label, assim)
            assert assim["wu_state"] == "error" and assim["canonical"] is None, (label, assim)
            assert assim["validate_state"] == "invalid", (label, assim)
            assert assim["invalid_reason"].startswith("refused by the assimilator"), (label, assim)
            assert assim["posteriors"] == 0, (label, assim)
        assert "not valid" in assim_invalid["invalid_reason"], (label, assim_invalid)
        assert why.search(assim_direct["invalid_reason"]), (label, assim_direct)  # its own check refused it
    never, (_, _, invalid) = by_label["good, never validated"][0], by_label["good, recorded invalid"]
    for line in (never, invalid):
        assert line["rc"] == 0 and line["wu_state"] == "error" and line["posteriors"] == 0, line
    assert "not recorded by the validator" in never["invalid_reason"]
    assert "recorded invalid" in invalid["invalid_reason"]
    honest_init, honest_compare, honest_assim = by_label["honest"]
    assert honest_init["rc"] == 0 and honest_compare["rc"] == 0 and honest_assim["rc"] == 0
    assert honest_assim["wu_state"] == "done" and honest_assim["posteriors"] == 2  # bin 0 + combined
    with app.db.session() as session:
        summary = session.get(Campaign, cid).summary
        assert {e["result"] for e in summary["errors"]} <= {f"{WU}_{i}" for i in range(1, 100)}
        post = session.query(Posterior).filter_by(campaign_id=cid, bin_index=None).one()
        assert post.n_runs == 1 and np.isfinite(post.log_evidence)
        assert session.query(Result).filter_by(validate_state="valid").count() == 1


def test_programs_called_as_boinc_does_refuse_a_link_to_dev_zero_in_one_line(world):
    """Through the bin/ launchers (the driver above calls ``main``): compare, then the assimilator handed the link
    without any validation, as the issue's attacker did."""
    app, project, _ = world
    from result_corpus import Bad

    path = _place(project, 1, Bad(link_to="/dev/zero"))
    good_path = upload(project, good_result(), 0, WU)
    for script, args, code in (("openastro-validate-compare", [good_path, path], EXIT_INVALID),
                               ("openastro-assimilate", [1001, path], 0)):
        proc = run_as_boinc(project, script, *args)
        assert proc.returncode == code, proc.stderr
        assert "Traceback" not in proc.stderr and "MemoryError" not in proc.stderr, proc.stderr
        assert "symbolic link" in proc.stderr or "REFUSED" in proc.stderr, proc.stderr
    with app.db.session() as session:
        assert session.query(WorkUnit).filter_by(name=WU).one().state == "error"
        assert session.query(Posterior).count() == 0


def test_a_file_changed_after_validation_is_not_merged(world):
    app, project, _ = world
    path = upload(project, good_result(), 0, WU)
    assert run_as_boinc(project, "openastro-validate-init", path).returncode == 0
    # still a well-formed result of this work unit, but not the bytes the validator accepted
    path.write_bytes(rewrite_result(good_result(), meta_update={"timings": {"wall_s": 2.0}}))
    proc = run_as_boinc(project, "openastro-assimilate", 1001, path)
    assert proc.returncode == 0 and "SHA-256" in proc.stderr, proc.stderr
    with app.db.session() as session:
        assert session.query(WorkUnit).filter_by(name=WU).one().state == "error"
        assert session.query(Posterior).count() == 0


def _envelope(data: bytes):
    import io

    from app.spec import read_result

    return read_result(io.BytesIO(data))


@pytest.mark.parametrize("label", ["nan", "inf", "wrong seed", "wrong campaign", "10x samples"])
def test_compare_never_calls_a_non_finite_foreign_or_oversized_run_equivalent(label):
    from validator.checks import compare_envelopes

    good = good_result()
    bad = adversarial_results(good, other_wu_seed=OTHER_WU_SEED, other_campaign_seed=OTHER_CAMPAIGN_SEED,
                              other_wu_name="x")[label]
    a, b = _envelope(good), _envelope(bad.data)
    assert compare_envelopes(a, a).equivalent
    for first, second in ((a, b), (b, a)):
        verdict = compare_envelopes(first, second)
        assert not verdict.equivalent, (label, verdict)
        assert re.search("non-finite|seeds differ|iterations", verdict.reason), verdict.reason


def test_tiles_with_infinities_are_not_equivalent():
    from app.spec import ResultEnvelope
    from validator.checks import compare_tiles

    tile = np.ones((4, 4), np.float32)
    tile[1, 1] = np.inf
    arrays = {"tile": tile, "weight": np.ones((4, 4), np.float32), "footprint": np.ones((4, 4), bool),
              "bounds": np.array([0, 4, 0, 4])}
    a = ResultEnvelope({"kind": "reproject-tile"}, arrays)
    verdict = compare_tiles(a, a)
    assert not verdict.equivalent and "infinite" in verdict.reason


@pytest.mark.parametrize("samples", [np.zeros(5), np.zeros((0, 3)), np.full((10, 3), np.nan)],
                         ids=["one-dimensional", "no samples", "nan"])
def test_results_posterior_corner_of_a_degenerate_posterior_is_a_clear_error(oa_app, tmp_path, samples):
    import io

    from click.testing import CliRunner

    from server.cli import main as cli_main

    cid = create_campaign(oa_app, "degenerate", "ttv", {"kind": "ttv", "bins": []}, seed=1)
    buffer = io.BytesIO()
    np.savez_compressed(buffer, meta=np.asarray(json.dumps({"param_names": ["c.mass", "c.period", "c.t0"]})),
                        samples=samples)
    key = oa_app.store.put_bytes(buffer.getvalue()).key
    with oa_app.db.session() as session:
        session.add(Posterior(campaign_id=cid, bin_index=None, model="one-perturber", n_runs=1, storage_key=key))
    out = tmp_path / "post.csv"
    result = CliRunner().invoke(cli_main, ["results", "posterior", str(cid), "-o", str(out), "--corner",
                                           str(tmp_path / "c.png")], env=settings_env(oa_app.settings))
    assert result.exit_code == 1, result.output
    assert isinstance(result.exception, SystemExit), result.exception
    assert re.search("degenerate|non-finite", result.output), result.output
    assert "Traceback" not in result.output and not out.exists() and not (tmp_path / "c.png").exists()
