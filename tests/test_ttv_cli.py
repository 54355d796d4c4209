"""`openastro ttv times` and `openastro ttv fit` with database storage (SQLite)."""
import json

import numpy as np
import pandas as pd
from click.testing import CliRunner
from sqlalchemy import select

from app.ttv.synthetic import kepler88_like
from server.cli import main
from server.core.db import Database
from server.core.db.models import Campaign, Posterior, TransitTime
from test_transit_times import PARAMS, _light_curve


def run(args, tmp_path):
    env = {"OPENASTRO_VAR_DIR": str(tmp_path / "var")}
    return CliRunner().invoke(main, args, env=env, catch_exceptions=False)


def _db(tmp_path):
    assert run(["db", "upgrade"], tmp_path).exit_code == 0
    return Database(f"sqlite:///{tmp_path / 'var' / 'openastro.db'}")


def test_times_command_writes_csv_and_stores_ok_rows(tmp_path):
    db = _db(tmp_path)
    lc, _ = _light_curve(np.random.default_rng(1), n_transits=12, gaps=False)
    lc_path = tmp_path / "lc.csv"
    lc.to_csv(lc_path, index=False)
    params = tmp_path / "p.json"
    params.write_text(json.dumps(PARAMS))
    out = tmp_path / "times.csv"
    res = run(["ttv", "times", str(lc_path), "--params", str(params), "--out", str(out),
               "--target", "Synth-1"], tmp_path)
    assert res.exit_code == 0, res.output
    assert "12 transit times" in res.output and "stored 12" in res.output
    table = pd.read_csv(out)
    assert list(table.loc[table["flag"] == "ok", "epoch"]) == list(range(12))
    # the light curve ends inside transit 12's window: flagged, not stored
    assert set(table.loc[table["flag"] != "ok", "epoch"]) <= {12}
    with db.session() as s:
        rows = s.scalars(select(TransitTime)).all()
        assert len(rows) == 12 and all(r.flag == "ok" for r in rows)


def test_times_command_reports_bad_params_in_one_line(tmp_path):
    lc_path = tmp_path / "lc.csv"
    pd.DataFrame({"time": [1.0, 2.0], "flux": [1.0, 1.0], "flux_err": [1e-3, 1e-3]}).to_csv(
        lc_path, index=False)
    params = tmp_path / "p.toml"
    params.write_text('period = 3.0\nt0 = 1.0\n')
    res = run(["ttv", "times", str(lc_path), "--params", str(params)], tmp_path)
    assert res.exit_code == 1 and "needs 'rp_rs'" in res.output


def test_fit_command_runs_bins_shows_sampling_progress_on_stderr_and_stores_posteriors(tmp_path):
    db = _db(tmp_path)
    system = kepler88_like(np.random.default_rng(9), n_transits=25, with_perturber=False)
    times = tmp_path / "times.csv"
    pd.DataFrame({"epoch": system.epochs, "time": system.times,
                  "sigma": system.sigma * 1440}).to_csv(times, index=False)
    priors = tmp_path / "priors.toml"
    priors.write_text(
        "stellar_mass = 0.99\nperturber_period = [21.9, 22.4]\nperturber_mass = [1.0, 30.0]\n"
        "perturber_ecc_fixed = [0.0, 90.0]\nknown_ecc_fixed = [0.0, 90.0]\n"
        "known_period_width = 0.0005\nknown_tconj_width = 0.002\n"
        "nlive = 15\ndlogz = 1.0\nseed = 4\nncores = 1\nn_posterior_samples = 200\n")
    out_dir = tmp_path / "out"
    res = run(["ttv", "fit", str(times), "--priors", str(priors), "--sigma-unit", "min",
               "--out-dir", str(out_dir), "--target", "Synth-2"], tmp_path)
    assert res.exit_code == 0, res.output
    assert "1 period bins" in res.output and "ln B(1 vs 0 perturbers)" in res.output
    # progress while sampling, on stderr (the first beat of each run is always shown, then one per 2 s)
    assert "iteration" in res.stderr and "ln Z = " in res.stderr and "sampling: 2/2 runs done" in res.stderr
    assert "iteration" not in res.stdout
    for name in ("summary.json", "summary.csv", "samples.csv", "corner.png"):
        assert (out_dir / name).stat().st_size > 0
    with db.session() as s:
        camp = s.scalars(select(Campaign)).one()
        assert camp.kind == "ttv" and camp.status == "done"
        posts = s.scalars(select(Posterior)).all()
        assert {p.model for p in posts} == {"no-perturber", "one-perturber"}
        assert any(p.bin_index == 0 for p in posts)


def test_fit_command_rejects_unknown_prior_key(tmp_path):
    times = tmp_path / "times.csv"
    times.write_text("epoch,time,sigma\n0,1.0,0.001\n1,2.0,0.001\n2,3.0,0.001\n")
    priors = tmp_path / "priors.json"
    priors.write_text(json.dumps({"stellar_mass": 1.0, "perturber_period": [5, 6],
                                  "perturber_mass": [1, 10], "nlivee": 3}))
    res = run(["ttv", "fit", str(times), "--priors", str(priors)], tmp_path)
    assert res.exit_code == 1 and "nlivee" in res.output
