"""A TTV campaign comparing one and two perturbers: planned per model by the work generator and combined
per model by the assimilator (no sampling here beyond two cached small runs)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from boinc_fakes import small_ttv_params, small_ttv_result_bytes, spec_for
from test_validator import SEED_A, SEED_B
from test_work_generator import linear_estimate

from app.ttv.synthetic import kepler88_like
from server.boinc.campaigns import (
    campaign_status,
    create_campaign,
    load_posterior,
    ttv_campaign_config,
)
from server.core.db.models import Campaign, Posterior, Result, WorkUnit
from work_generator.plan import plan_ttv

PRIORS = {"stellar_mass": 0.99, "perturber_period": [20.78, 23.23], "perturber_period_bins": [[21.9, 22.6]],
          "perturber_mass": [30.0, 1000.0], "known_mass": 8.7, "known_ecc_fixed": [0.05, 90.0],
          "perturber_ecc_fixed": [0.04, 250.0], "second_perturber_period": [7.0, 7.25],
          "models": [0, 1, 2], "nlive": 30, "dlogz": 0.5}


def _table():
    s = kepler88_like(np.random.default_rng(7), n_transits=30)
    return pd.DataFrame({"planet": "b", "epoch": s.epochs, "t_obs": s.times, "sigma": s.sigma})


def test_campaign_with_one_and_two_perturbers_plans_work_units_for_each_model():
    config = ttv_campaign_config(_table(), PRIORS, replicas=2)
    assert config["prior_config"]["models"] == [1, 2]  # the no-perturber model is run locally only
    assert [(b["index"], b["model"]) for b in config["bins"]] == [(0, 1), (1, 2)]
    assert set(config["likelihoods"]) == {"1", "2"} and config["likelihood"] == config["likelihoods"]["1"]
    planned = plan_ttv(3, 11, config, linear_estimate)
    assert len({wu.name for wu in planned}) == len(planned) == 2
    by_model = {wu.label["model"]: wu for wu in planned}
    assert set(by_model) == {1, 2}
    for model, wu in by_model.items():
        planets = {p["name"]: p for p in wu.spec["params"]["likelihood"]["prior"]["planets"]}
        assert planets["pert"]["period"] == {"dist": "loguniform", "min": 21.9, "max": 22.6}  # the bin
        assert ("pert2" in planets) == (model == 2)
    assert by_model[2].spec["params"]["likelihood"]["prior"]["planets"][0]["period"] == \
        {"dist": "loguniform", "min": 7.0, "max": 7.25}
    assert by_model[1].spec["seed"] != by_model[2].spec["seed"]


def test_single_model_campaign_config_is_unchanged_by_default():
    config = ttv_campaign_config(_table(), {k: v for k, v in PRIORS.items() if k != "models"})
    assert config["prior_config"]["models"] == [1]
    assert [b["model"] for b in config["bins"]] == [1]
    names = [p["name"] for p in config["likelihood"]["prior"]["planets"]]
    assert names == ["b", "pert"]


@pytest.mark.slow
def test_assimilator_combines_the_bins_of_each_model_and_compares_the_models(oa_app):
    from assimilator.ttv import rebuild_campaign_posterior

    params = small_ttv_params()
    bins = [{"index": 0, "model": 1, "period_min": 22.2, "period_max": 22.4, "prior_mass": 1.0},
            {"index": 1, "model": 2, "period_min": 22.2, "period_max": 22.4, "prior_mass": 1.0}]
    config = {"kind": "ttv", "likelihood": params["likelihood"], "perturber": "c", "sampler": params["sampler"],
              "likelihoods": {"1": params["likelihood"], "2": params["likelihood"]}, "replicas": 1, "bins": bins}
    cid = create_campaign(oa_app, "models", "ttv", config, seed=7)
    with oa_app.db.session() as session:
        for b, seed in ((0, SEED_A), (1, SEED_B)):  # stand-ins: any valid run per bin exercises the plumbing
            wu = WorkUnit(campaign_id=cid, name=f"oa_m_b{b:02d}_r00", kind="ttv-nested", bin_index=b, run_index=0,
                          spec=spec_for(params, seed), input_files={}, state="done")
            session.add(wu)
            session.flush()
            key = oa_app.store.put_bytes(small_ttv_result_bytes(seed)).key
            result = Result(work_unit_id=wu.id, name=f"{wu.name}_0", storage_key=key, validate_state="valid")
            session.add(result)
            session.flush()
            wu.canonical_result_id = result.id
        campaign = session.get(Campaign, cid)
        summary = rebuild_campaign_posterior(oa_app, session, campaign)
        campaign.summary = summary
    with oa_app.db.session() as session:
        rows = {(p.model, p.bin_index): p for p in session.query(Posterior).filter_by(campaign_id=cid)}
    assert set(rows) == {("one-perturber", 0), ("one-perturber", None), ("two-perturber", 1),
                         ("two-perturber", None)}
    lz1, lz2 = rows[("one-perturber", None)].log_evidence, rows[("two-perturber", None)].log_evidence
    assert summary["model_comparison"]["ln_bayes_factor_2_vs_1"] == pytest.approx(lz2 - lz1)
    assert summary["log_evidence"] == pytest.approx(lz2)  # top level: the largest model, as for one model
    status = campaign_status(oa_app, cid)
    assert [b.probability for b in status.bins] == [pytest.approx(1.0), pytest.approx(1.0)]
    _, samples, post_summary = load_posterior(oa_app, cid)
    assert post_summary["log_evidence"] == pytest.approx(lz2) and len(samples) == 4000
