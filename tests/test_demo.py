"""`openastro demo` (the README's main command) runs the whole pipeline on embedded defaults and gets the answers."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

pytestmark = [pytest.mark.slow, pytest.mark.solver]


def test_demo_runs_end_to_end_on_embedded_defaults_and_recovers_the_injected_answers(tmp_path):
    from server.core.context import OpenAstro
    from server.pipeline.demo import VARIABLE_PERIOD_D, run_demo
    from server.core.settings import load_settings

    app = OpenAstro(load_settings(env={}, overrides={"var_dir": str(tmp_path / "var"), "progress": False}))
    lines: list[str] = []
    summary = run_demo(app, quick=True, echo=lines.append)
    assert app.settings.resolved_database_url.startswith("sqlite:///")  # no other service involved
    front = summary["image_front"]
    assert len(front["zero_points"]) == len(front["observations"])  # every frame solved and calibrated
    assert abs(sorted(front["zero_points"])[len(front["zero_points"]) // 2] - 18.5) < 0.02
    var = summary["variable"]
    assert abs(var["best_period"] - VARIABLE_PERIOD_D) < 3 * var["best_period_err"], var
    assert summary["transits"]["n_transit_times"] == 10 and summary["transits"]["max_pull"] < 4
    post = summary["ttv"]["posterior"]
    names = post["param_names"]
    mass = post["median"][names.index("c.mass")]
    lo, hi = post["q16"][names.index("c.mass")], post["q84"][names.index("c.mass")]
    assert abs(mass - 206.6) < 2 * max(hi - lo, 0.5), (mass, lo, hi)  # within 2 sigma of the injected 0.65 M_J
    assert summary["stack"]["max_coverage"] == 4
    # the outputs are printed as readable FITS paths and the posterior command carries the campaign's ID
    for kind, path in summary["stack"]["files"].items():
        assert path.endswith(f"stack_{summary['stack']['campaign']}_{kind}.fits") and os.path.getsize(path) > 0
        assert any(line.strip().endswith(path) for line in lines)
    assert any(f"`openastro results posterior {summary['ttv']['campaign']}`" in line for line in lines)


def test_demo_command_is_wired_to_the_cli(tmp_path):
    exe = os.path.join(os.path.dirname(sys.executable), "openastro")
    out = subprocess.run([exe, "demo", "--help"], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0 and "embedded defaults" in out.stdout
