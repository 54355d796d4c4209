"""The work generator against a BOINC project laid out like a real one, with strict stand-in tools."""

from __future__ import annotations

import json
import xml.etree.ElementTree as ET

import pytest

from boinc_fakes import fake_db, make_fake_project, run_tool, small_ttv_params
from server.core.boinc_contract import TEMPLATES, fanout_dir, templates_for
from server.boinc.campaigns import create_campaign
from server.core.db.models import Campaign, WorkUnit
from work_generator.boinc_project import BoincProject, BoincProjectError
from work_generator.generate import generate, materialise, run_daemon
from work_generator.plan import plan_ttv, split_runs
from work_generator.sizing import resources_from_model, round_up_2sig
from work_generator.templates import REPO_TEMPLATES_DIR, rendered_templates, write_templates

SECONDS_PER_LIVE_POINT = 0.5  # test cost model: a run costs 0.5 s per live point on the reference core


def linear_estimate(kind, params):
    if kind.startswith("ttv"):
        return resources_from_model(SECONDS_PER_LIVE_POINT * params["sampler"]["nlive"], 3e8, 1e7)
    y0, y1, x0, x1 = params["tile_bounds"]
    return resources_from_model(1e-6 * (y1 - y0) * (x1 - x0), 2e8, 1e7)


def ttv_config(nlive=30, replicas=2):
    params = small_ttv_params(nlive)
    return {"kind": "ttv", "likelihood": params["likelihood"], "perturber": "c", "sampler": params["sampler"],
            "replicas": replicas,
            "bins": [{"index": 0, "period_min": 22.2, "period_max": 22.3, "prior_mass": 0.5},
                     {"index": 1, "period_min": 22.3, "period_max": 22.4, "prior_mass": 0.5}]}


@pytest.fixture
def project(tmp_path, oa_app):
    root = make_fake_project(tmp_path / "project")
    write_templates(root / "templates")
    (root / "project.xml").write_text((REPO_TEMPLATES_DIR.parent / "project.xml").read_text())
    assert run_tool(root, "xadd").returncode == 0
    return BoincProject(root, workunit_index=fake_workunit_index(root))


def fake_workunit_index(root):
    """The stand-in's workunit table (fake_db/workunits.json), looked up like BOINC's: {name: id}."""
    def lookup(names):
        ids = {w["name"]: i + 1 for i, w in enumerate(fake_db(root, "workunits") or [])}
        return {n: ids[n] for n in names if n in ids}
    return lookup


def test_repository_templates_are_the_rendered_ones_and_never_set_resource_estimates():
    for name, text in rendered_templates().items():
        assert (REPO_TEMPLATES_DIR / name).read_text() == text
        tree = ET.fromstring(text)
        if tree.tag == "input_template":
            # values in the template win over create_work's options: resource estimates stay out of it
            for tag in ("rsc_fpops_est", "rsc_fpops_bound", "rsc_memory_bound", "rsc_disk_bound"):
                assert tree.find(f"workunit/{tag}") is None
            assert all(ref.find("copy_file") is not None for ref in tree.findall("workunit/file_ref"))
        else:
            assert tree.find("result/file_ref/copy_file") is not None
            assert int(tree.findtext("file_info/max_nbytes")) > 0
    assert templates_for("ttv-nested").min_quorum == 2
    assert all(t.input_template.endswith("_v1.xml") for t in TEMPLATES.values())


def test_rewriting_a_template_in_use_is_refused(tmp_path):
    write_templates(tmp_path)
    path = tmp_path / templates_for("ttv-nested").input_template
    path.write_text(path.read_text().replace("<min_quorum>2", "<min_quorum>3"))
    with pytest.raises(ValueError, match="bump the _vN"):
        write_templates(tmp_path)


def test_a_bin_too_long_for_the_budget_is_split_into_runs_with_fewer_live_points():
    split = split_runs(1000, lambda nlive: 5.0 * nlive)
    assert split.n_runs * split.nlive_per_run >= 1000
    assert split.seconds_per_run <= 45 * 60
    assert split.n_runs == 2  # 500 live points = 2500 s < 2700 s
    assert split_runs(100, lambda nlive: 5.0 * nlive).n_runs == 1


def test_ttv_plan_has_one_work_unit_per_bin_and_run_with_distinct_seeds_and_valid_specs():
    config = ttv_config(nlive=6000)  # over the cap of live points per run: split
    planned = plan_ttv(7, 12345, config, linear_estimate)
    from app.spec import parse_spec

    assert {p.bin_index for p in planned} == {0, 1}
    runs = [p for p in planned if p.bin_index == 0]
    assert len(runs) == 6 and all(p.spec["params"]["sampler"]["nlive"] == 1000 for p in runs)
    assert len({tuple(p.spec["seed"]) for p in planned}) == len(planned)
    assert len({p.name for p in planned}) == len(planned)
    for p in planned:
        parse_spec(json.loads(p.files[0].data))
        period = next(q for q in p.spec["params"]["likelihood"]["prior"]["planets"] if q["name"] == "c")["period"]
        assert [period["min"], period["max"]] == [[22.2, 22.3], [22.3, 22.4]][p.bin_index]
        assert p.spec["params"]["likelihood"]["dt"] > 0  # fixed in the spec for every host
        assert p.resources.seconds_ref <= 45 * 60


def test_generate_stages_inputs_and_creates_jobs_that_a_real_server_would_accept(oa_app, project):
    cid = create_campaign(oa_app, "wg-1", "ttv", ttv_config(), executor="boinc", seed=42)
    report = generate(oa_app, cid, project=project, estimate=linear_estimate)
    assert report.inserted == 2 and report.submitted == 2 and len(report.calls) == 1
    jobs = fake_db(project.root, "workunits")
    assert [j["batch"] for j in jobs] == [cid, cid]
    with oa_app.db.session() as session:
        rows = {w.name: w for w in session.query(WorkUnit).filter_by(campaign_id=cid)}
        assert all(w.state == "sent" for w in rows.values())
    for job in jobs:
        wu = rows[job["name"]]
        # the quorum comes from the template; the resource estimates from the cost model
        assert job["effective"]["min_quorum"] == 2 and job["effective"]["target_nresults"] == 2
        est = linear_estimate("ttv-nested", wu.spec["params"])
        assert job["effective"]["rsc_fpops_est"] == pytest.approx(round_up_2sig(est.fpops_est), rel=1e-5)
        assert job["effective"]["rsc_fpops_bound"] == pytest.approx(round_up_2sig(est.fpops_bound), rel=1e-5)
        name = job["inputs"][0]["name"]
        staged = project.download_dir / fanout_dir(name) / name
        assert staged.is_file() and (staged.parent / (name + ".md5")).is_file()
        assert json.loads(staged.read_bytes()) == wu.spec
        assert job["input_refs"][0]["open_name"] == "wu.json" and job["output"]["copy_file"]


def test_generating_twice_creates_nothing_twice(oa_app, project):
    cid = create_campaign(oa_app, "wg-2", "ttv", ttv_config(), executor="boinc", seed=43)
    generate(oa_app, cid, project=project, estimate=linear_estimate)
    again = generate(oa_app, cid, project=project, estimate=linear_estimate)
    assert again.inserted == 0 and again.submitted == 0
    assert len(fake_db(project.root, "workunits")) == 2
    with oa_app.db.session() as session:
        assert session.query(WorkUnit).filter_by(campaign_id=cid).count() == 2


def test_dry_run_prints_the_calls_and_changes_nothing(oa_app, project):
    cid = create_campaign(oa_app, "wg-3", "ttv", ttv_config(), executor="boinc", seed=44)
    report = generate(oa_app, cid, project=project, dry_run=True, estimate=linear_estimate)
    assert report.inserted == 2 and len(report.calls) == 1
    text = report.calls[0].shell_text()
    assert "bin/create_work --appname openastro_app --batch" in text and "--stdin" in text
    assert text.count("--wu_name") == 2
    assert fake_db(project.root, "workunits") is None
    assert not any(project.download_dir.rglob("oa_*"))
    with oa_app.db.session() as session:
        assert session.query(WorkUnit).count() == 0
        assert session.get(Campaign, cid).status == "created"


def test_daemon_honours_stop_daemons_and_mod_sharding(oa_app, project):
    ids = [create_campaign(oa_app, f"wg-d{i}", "ttv", ttv_config(), executor="boinc", seed=50 + i) for i in range(2)]
    from work_generator import generate as gen_module

    original = gen_module.generate
    gen_module.generate = lambda app, cid, **kw: original(app, cid, estimate=linear_estimate, **kw)
    try:
        project.stop_file.write_text("")
        assert run_daemon(oa_app, project, sleep_s=1) == 0  # stop_daemons present: no pass at all
        project.stop_file.unlink()
        n, r = 2, ids[0] % 2
        run_daemon(oa_app, project, one_pass=True, mod=(n, r), echo=lambda _m: None)
    finally:
        gen_module.generate = original
    with oa_app.db.session() as session:
        assert session.query(WorkUnit).filter_by(campaign_id=ids[0]).count() == 2
        assert session.query(WorkUnit).filter_by(campaign_id=ids[1]).count() == 0


def test_materialise_refuses_a_name_owned_by_another_campaign(oa_app):
    cid = create_campaign(oa_app, "wg-4", "ttv", ttv_config(), seed=45)
    materialise(oa_app, cid, estimate=linear_estimate)
    with oa_app.db.session() as session:
        wu = session.query(WorkUnit).filter_by(campaign_id=cid).first()
        other = create_campaign(oa_app, "wg-5", "ttv", ttv_config(), seed=46)
        wu.campaign_id = other
    with pytest.raises(ValueError, match="another campaign"):
        materialise(oa_app, cid, estimate=linear_estimate)


# --- the stand-ins are strict: what a real server rejects or misreads is rejected -----------------------

def test_stand_in_create_work_rejects_unstaged_inputs_wrong_counts_duplicates_and_unknown_options(project):
    root = project.root
    t_in, t_out = "templates/" + templates_for("ttv-nested").input_template, "templates/" + templates_for(
        "ttv-nested").output_template
    base = ["create_work", "--appname", "openastro_app", "--wu_template", t_in, "--result_template", t_out, "--stdin"]
    assert "not staged" in run_tool(root, *base, stdin="--wu_name a1 missing.json\n").stderr
    project.stage_bytes("oa_x.json", b"{}")
    assert "wants 1 input files" in run_tool(root, *base, stdin="--wu_name a2 oa_x.json oa_x.json\n").stderr
    assert "unknown or misplaced" in run_tool(root, *base, stdin="--wu_name a3 --rsc_fpops_est 1 oa_x.json\n").stderr
    assert run_tool(root, *base, stdin="--wu_name a4 oa_x.json\n").returncode == 0
    assert "Duplicate entry" in run_tool(root, *base, stdin="--wu_name a4 oa_x.json\n").stderr
    assert "not found" in run_tool(root, "create_work", "--appname", "nosuchapp", "--wu_name", "a5",
                                   "--wu_template", t_in, "--result_template", t_out, "oa_x.json").stderr
    # template values silently win over the command line (so quorum lives in the template)
    run_tool(root, "create_work", "--appname", "openastro_app", "--wu_name", "a6", "--wu_template", t_in,
             "--result_template", t_out, "--min_quorum", "1", "--target_nresults", "1", "oa_x.json")
    job = next(j for j in fake_db(root, "workunits") if j["name"] == "a6")
    assert job["effective"]["min_quorum"] == 2


def test_staging_refuses_a_different_file_under_an_existing_name(project, tmp_path):
    project.stage_bytes("oa_same.json", b"one")
    project.stage_bytes("oa_same.json", b"one")  # the same file again is fine
    with pytest.raises(BoincProjectError, match="different content"):
        project.stage_bytes("oa_same.json", b"two")
    other = tmp_path / "oa_same.json"
    other.write_bytes(b"two")
    assert "different file" in run_tool(project.root, "stage_file", "--copy", str(other)).stderr


def test_our_fanout_matches_dir_hier_path(project):
    printed = run_tool(project.root, "dir_hier_path", "oa_probe.fits").stdout.strip()
    assert printed == str(project.download_dir / fanout_dir("oa_probe.fits") / "oa_probe.fits")


def test_a_generator_killed_between_create_work_and_its_commit_is_recovered_from_boincs_workunit_table(
        oa_app, project, monkeypatch):
    cid = create_campaign(oa_app, "wg-crash", "ttv", ttv_config(), executor="boinc", seed=44)
    real_create_work = BoincProject.run_create_work

    def create_work_then_die(self, call):
        real_create_work(self, call)
        raise KeyboardInterrupt("killed in the crash window")  # before the rows are marked sent

    monkeypatch.setattr(BoincProject, "run_create_work", create_work_then_die)
    with pytest.raises(KeyboardInterrupt):
        generate(oa_app, cid, project=project, estimate=linear_estimate)
    monkeypatch.setattr(BoincProject, "run_create_work", real_create_work)
    with oa_app.db.session() as session:
        assert {w.state for w in session.query(WorkUnit).filter_by(campaign_id=cid)} == {"created"}
    assert len(fake_db(project.root, "workunits")) == 2  # the jobs are in BOINC
    again = generate(oa_app, cid, project=project, estimate=linear_estimate)
    assert again.recovered == 2 and again.submitted == 0 and again.calls == []
    assert "2 found already in BOINC" in again.line()
    with oa_app.db.session() as session:
        rows = session.query(WorkUnit).filter_by(campaign_id=cid).all()
        assert {w.state for w in rows} == {"sent"} and all(w.boinc_wu_id for w in rows)
    assert len(fake_db(project.root, "workunits")) == 2  # nothing created twice


def test_fresh_rows_cost_no_lookup_in_boincs_database(oa_app, project):
    calls = []
    project._workunit_index = lambda names: calls.append(list(names)) or {}
    cid = create_campaign(oa_app, "wg-fresh", "ttv", ttv_config(), executor="boinc", seed=45)
    report = generate(oa_app, cid, project=project, estimate=linear_estimate)
    assert report.submitted == 2 and calls == []
