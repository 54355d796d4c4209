"""Missed-peak reruns of TTV campaigns, planned by the system (issue #14 item 3), BOINC and local alike.

A campaign's runs are assimilated one by one; once its work units are finished, the assimilator looks at each
model's best fit: chi^2/N above ``chi2_flag`` (the sampler may have settled on a secondary mode) puts the winning
bin into ``config["reruns"]``; the work generator (``plan_ttv``, which both the BOINC daemon and the local
executor's ``run_campaign`` materialise from) then plans every first-attempt run of that bin again with the seed a
local rerun gets (``[entropy, bin, run, 1000 + attempt]``), at most ``missed_peak_reruns`` times. Within a bin only
runs whose best ln L is within ``missed_peak_lnl`` of the bin's best run are merged.
"""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest
from sqlalchemy import select

from assimilator.ttv import chi2_per_obs, peak_finders, plan_reruns
from server.boinc.campaigns import create_campaign, run_campaign
from server.core.db.models import Campaign, Posterior, WorkUnit
from work_generator.plan import RERUN_INDEX, plan_ttv
from work_generator.sizing import resources_from_model


def small_estimate(kind, params):
    return resources_from_model(60.0, 3e8, 2e7)


def one_bin_config(**prior_config) -> dict:
    """The Kepler-88-like system of tests/app_workunits.py (30 transits of b), one narrow bin around the true
    perturber period, nlive 30: one nested run ~20 s."""
    from app_workunits import _ttv_likelihood

    likelihood = _ttv_likelihood(7, 30)
    likelihood["prior"]["planets"][1]["period"] = {"dist": "uniform", "min": 22.25, "max": 22.35}
    return {"kind": "ttv", "likelihood": likelihood, "perturber": "c", "replicas": 1,
            "sampler": {"name": "dynesty", "nlive": 30, "sample": "rwalk", "dlogz": 0.5},
            "bins": [{"index": 0, "period_min": 22.25, "period_max": 22.35, "prior_mass": 1.0}],
            "prior_config": prior_config}


def _run(logl_best: float):
    return SimpleNamespace(kind="ttv-nested", arrays={"logl": np.array([logl_best - 50.0, logl_best])})


def test_runs_far_below_their_bins_best_run_are_not_merged():
    runs = [_run(-100.0), _run(-105.0), _run(-130.0), _run(-119.9)]
    kept, dropped = peak_finders(runs, 20.0)
    assert kept == [runs[0], runs[1], runs[3]] and dropped == 1
    alone = [_run(-1e6)]
    assert peak_finders(alone, 20.0) == (alone, 0)   # one run alone is always kept


def test_chi2_per_observation_is_recovered_from_the_best_log_likelihood():
    sigma = np.array([0.001, 0.002, 0.0015])
    likelihood = {"observed": {"b": {"epoch": [0, 1, 2], "time": [0.0, 1.0, 2.0], "sigma": sigma.tolist()}}}
    chi2 = 12.0
    logl = -0.5 * (chi2 + np.sum(np.log(2 * np.pi * sigma ** 2)))
    assert chi2_per_obs(likelihood, logl) == pytest.approx(chi2 / 3, rel=1e-12)


def test_a_flagged_best_fit_plans_its_bin_again_up_to_the_configured_number_of_reruns():
    campaign = Campaign(kind="ttv", config={"sampler": {"name": "dynesty"},
                                            "prior_config": {"chi2_flag": 10.0, "missed_peak_reruns": 2}})
    flagged = {"best_fit": {"one-perturber": {"bin": 3, "chi2_per_obs": 50.0}}}
    assert plan_reruns(campaign, flagged) == [3]
    assert campaign.config["reruns"] == {"3": 1}
    assert plan_reruns(campaign, flagged) == [3]
    assert plan_reruns(campaign, flagged) == []          # two reruns were allowed, both planned
    assert campaign.config["reruns"] == {"3": 2}
    fine = Campaign(kind="ttv", config={"sampler": {"name": "dynesty"}, "prior_config": {}})
    assert plan_reruns(fine, {"best_fit": {"one-perturber": {"bin": 0, "chi2_per_obs": 1.1}}}) == []
    assert "reruns" not in fine.config


def test_the_work_generator_plans_reruns_with_the_local_reruns_seeds():
    config = one_bin_config()
    config["reruns"] = {"0": 2}
    planned = plan_ttv(5, 777, config, small_estimate)
    names = [p.name for p in planned]
    assert len(planned) == 3 and names[1].endswith("_b00_r00_a1") and names[2].endswith("_b00_r00_a2")
    assert [p.spec["seed"] for p in planned] == [[777, 0, 0], [777, 0, 0, 1001], [777, 0, 0, 1002]]
    assert [p.run_index for p in planned] == [0, RERUN_INDEX, 2 * RERUN_INDEX]
    assert planned[2].label["attempt"] == 2
    assert len(plan_ttv(5, 777, one_bin_config(), small_estimate)) == 1


@pytest.mark.slow
def test_a_local_campaign_whose_best_fit_is_flagged_reruns_its_bin_once_and_merges_both_runs(oa_app):
    # chi2_flag 0: every fit is flagged, so the one allowed rerun must happen and then stop.
    cid = create_campaign(oa_app, "reruns", "ttv", one_bin_config(chi2_flag=0.0, missed_peak_reruns=1),
                          executor="local", seed=11)
    progress = run_campaign(oa_app, cid, executor=None, estimate=small_estimate)
    assert progress.error == 0
    with oa_app.db.session() as session:
        campaign = session.get(Campaign, cid)
        wus = session.scalars(select(WorkUnit).where(WorkUnit.campaign_id == cid).order_by(WorkUnit.id)).all()
        assert [w.name.rsplit("_ttv_", 1)[-1] for w in wus] == ["b00_r00", "b00_r00_a1"]
        assert [w.state for w in wus] == ["done", "done"]
        assert wus[1].spec["seed"] == [11, 0, 0, 1001]
        assert campaign.status == "done"
        assert campaign.config["reruns"] == {"0": 1}
        assert campaign.summary["reruns_planned"] == [0]
        assert campaign.summary["best_fit"]["one-perturber"]["bin"] == 0
        row = session.scalars(select(Posterior).where(Posterior.campaign_id == cid,
                                                      Posterior.bin_index == 0)).one()
        # both runs found the peak (same data, same narrow bin): both merged
        assert row.n_runs == 2 and row.summary["runs_merged"] == 2 and row.summary["runs_missed_peak"] == 0


@pytest.mark.slow
def test_a_local_campaign_with_a_good_fit_plans_no_rerun(oa_app):
    cid = create_campaign(oa_app, "no-reruns", "ttv", one_bin_config(), executor="local", seed=12)
    run_campaign(oa_app, cid, executor=None, estimate=small_estimate)
    with oa_app.db.session() as session:
        campaign = session.get(Campaign, cid)
        names = session.scalars(select(WorkUnit.name).where(WorkUnit.campaign_id == cid)).all()
        assert len(names) == 1 and campaign.status == "done" and "reruns" not in campaign.config
        assert campaign.summary["best_fit"]["one-perturber"]["chi2_per_obs"] < 3.0
