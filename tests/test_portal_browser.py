"""The portal in a real headless Chromium (Debian chromium + chromium-driver, driven by Selenium), against
`openastro serve` in a subprocess on a seeded SQLite database (tests/portal_seed.py).

Screenshots of every page go to var/test-artifacts/screenshots/ (printed), for a reviewer to look at."""

from __future__ import annotations

import json
import os
import shutil
import time
from pathlib import Path

import numpy as np
import pytest
from sqlalchemy import select

from portal_seed import PASSWORDS, seed
from serve_proc import cli_env, serving
from server.core.db.models import Campaign, PhotometryPoint, WorkUnit

ROOT = Path(__file__).resolve().parent.parent
SHOTS = ROOT / "var" / "test-artifacts" / "screenshots"
CHROMIUM, CHROMEDRIVER = shutil.which("chromium") or "/usr/bin/chromium", shutil.which("chromedriver") or "/usr/bin/chromedriver"



@pytest.fixture(scope="module", autouse=True)
def _chromium():
    if not (Path(CHROMIUM).exists() and Path(CHROMEDRIVER).exists()):
        if os.environ.get("CI"):
            pytest.fail("chromium and chromium-driver are missing in CI: the browser tests must run (scripts/setup.sh)")
        pytest.skip("needs Debian chromium and chromium-driver (scripts/setup.sh installs them)")


@pytest.fixture(scope="module")
def site(tmp_path_factory):
    from server.core.context import OpenAstro
    from server.core.settings import load_settings

    var = tmp_path_factory.mktemp("portal-browser") / "var"
    app = OpenAstro(load_settings(env={}, overrides={"var_dir": str(var), "progress": False}))
    app.db.upgrade()
    ids = seed(app)
    with serving(var, var.parent / "serve.log", env=cli_env(var)) as server:
        yield app, ids, server


@pytest.fixture(scope="module")
def browser():
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    opts = webdriver.ChromeOptions()
    opts.binary_location = CHROMIUM
    for arg in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--window-size=1280,1400",
                "--disable-gpu"):
        opts.add_argument(arg)
    driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=opts)
    driver.set_script_timeout(30)
    try:
        yield driver
    finally:
        driver.quit()


def shot(driver, name: str) -> None:
    SHOTS.mkdir(parents=True, exist_ok=True)
    path = SHOTS / f"{name}.png"
    driver.save_screenshot(str(path))
    print(f"screenshot: {path}")


def wait_for(driver, script: str, timeout: float = 20.0):
    deadline = time.monotonic() + timeout
    while True:
        value = driver.execute_script(script)
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for: {script}")
        time.sleep(0.1)


def login(driver, base: str, user: str) -> None:
    from selenium.webdriver.common.by import By

    driver.delete_all_cookies()
    driver.get(base + "/login")
    driver.find_element(By.ID, "name").send_keys(user)
    driver.find_element(By.ID, "password").send_keys(PASSWORDS[user])
    driver.find_element(By.ID, "login-submit").click()
    wait_for(driver, "return document.querySelector('.who') && document.querySelector('.who').textContent"
                     f".includes('{user}')")


def test_target_page_plots_the_database_points_and_its_csv_download_matches_the_database(site, browser):
    app, ids, server = site
    browser.get(f"{server.base}/targets/{ids['target']}")
    wait_for(browser, "return window.oaPlots && window.oaPlots.lightcurve && window.oaPlots.phased")
    plotted = browser.execute_script(
        "var p = window.oaPlots.lightcurve; return {t0: p.t0, xlabel: p.opts.xlabel, ylabel: p.opts.ylabel,"
        " inverted: p.opts.invertY, drawn: +p.canvas.dataset.pointsDrawn,"
        " series: p.opts.series.map(function (s) { return {band: s.band, t: s.t, y: s.y}; })};")
    with app.db.session() as s:
        for series in plotted["series"]:
            rows = s.execute(select(PhotometryPoint.bjd_tdb, PhotometryPoint.mag).where(
                PhotometryPoint.target_id == ids["target"], PhotometryPoint.band == series["band"])
                .order_by(PhotometryPoint.jd_utc)).all()
            np.testing.assert_array_equal(series["t"], [r[0] for r in rows])
            np.testing.assert_array_equal(series["y"], [r[1] for r in rows])
    assert plotted["drawn"] == 180  # every point of both bands is inside the initial view
    assert plotted["inverted"] and plotted["ylabel"] == "magnitude (mag)"
    assert plotted["xlabel"] == f"BJD_TDB − {plotted['t0']} (d)"
    shot(browser, "target-lightcurve")
    # the page's own CSV link, fetched by the browser
    href = browser.execute_script("return document.querySelector('a.dl-csv').href")
    text = browser.execute_async_script("var done = arguments[arguments.length - 1];"
                                        " fetch(arguments[0]).then(r => r.text()).then(done);",
                                        href)
    rows = [line.split(",") for line in text.splitlines() if not line.startswith("#")]
    band = href.split("band=")[1].split("&")[0]
    with app.db.session() as s:
        db = s.execute(select(PhotometryPoint.bjd_tdb, PhotometryPoint.mag, PhotometryPoint.mag_err).where(
            PhotometryPoint.target_id == ids["target"], PhotometryPoint.band == band)
            .order_by(PhotometryPoint.jd_utc)).all()
    header = rows[0]
    got = [(float(r[header.index("bjd_tdb")]), float(r[header.index("mag")]), float(r[header.index("mag_err")]))
           for r in rows[1:]]
    assert got == [tuple(r) for r in db]
    # zoom: a dragged rectangle shows fewer points
    from selenium.webdriver.common.action_chains import ActionChains

    canvas = browser.find_element("id", "lightcurve")
    ActionChains(browser).move_to_element_with_offset(canvas, -300, -100).click_and_hold() \
        .move_by_offset(150, 200).release().perform()
    assert 0 < int(canvas.get_attribute("data-points-drawn")) < 180
    shot(browser, "target-lightcurve-zoomed")


def test_o_minus_c_page_and_stack_page_with_sky_coordinates_under_the_cursor(site, browser):
    from selenium.webdriver.common.action_chains import ActionChains

    _, ids, server = site
    browser.get(f"{server.base}/targets/{ids['other']}")
    wait_for(browser, "return window.oaPlots && window.oaPlots.oc")
    assert browser.execute_script("return window.oaPlots.oc.opts.ylabel") == "O − C (min)"
    shot(browser, "target-oc")
    browser.get(f"{server.base}/stacks/{ids['stack']}")
    wait_for(browser, "var i = document.getElementById('stack-img'); return i.complete && i.naturalWidth > 0")
    view = browser.find_element("id", "stack-view")
    ActionChains(browser).move_to_element(view).move_by_offset(5, 5).perform()
    coords = browser.find_element("id", "stack-coords").text
    # the page's TAN projection agrees with astropy's WCS at the pixel it reports (shown to 0.1 px = 1e-4 deg)
    import re

    from astropy.io import fits
    from astropy.wcs import WCS

    from portal_seed import stack_header

    x, y, ra, dec = map(float, re.match(r"x ([-\d.]+), y ([-\d.]+) → RA ([\d.]+)° .*Dec ([-+\d.]+)°", coords).groups())
    want = WCS(fits.Header(stack_header())).pixel_to_world_values(x, y)
    assert (ra, dec) == pytest.approx((float(want[0]), float(want[1])), abs=1e-4), coords
    shot(browser, "stack")
    browser.get(f"{server.base}/targets")
    shot(browser, "targets")
    browser.get(f"{server.base}/api/docs")
    shot(browser, "api-docs")


def test_scientist_cannot_reach_admin_pages_or_admin_api(site, browser):
    _, ids, server = site
    login(browser, server.base, "sam")
    browser.get(f"{server.base}/admin")
    assert "needs role 'admin'" in browser.find_element("id", "error").text
    browser.get(f"{server.base}/api/v1/admin/queue")
    assert json.loads(browser.find_element("tag name", "pre").text)["error"]["code"] == "admin_only"
    status = browser.execute_async_script(
        "var done = arguments[arguments.length - 1];"
        " fetch('/api/v1/admin/campaigns/' + arguments[0] + '/cancel', {method: 'POST'})"
        ".then(r => done(r.status));", ids["running"])
    assert status == 403


def test_admin_launches_a_small_campaign_watches_it_finish_and_opens_its_corner_plot(site, browser, tmp_path):
    import pandas as pd

    from app.ttv.synthetic import kepler88_like

    app, _, server = site
    # 12 transits of b, one perturber bin around the truth (22.3 d), one replica, nlive 10: a few seconds
    system = kepler88_like(np.random.default_rng(9), n_transits=12)
    times = tmp_path / "times.csv"
    pd.DataFrame({"epoch": system.epochs, "time": system.times, "sigma": system.sigma}).to_csv(times, index=False)
    priors = tmp_path / "priors.json"
    priors.write_text(json.dumps({"stellar_mass": 0.99, "perturber_period": [22.25, 22.35],
                                  "perturber_mass": [150.0, 260.0], "perturber_ecc_fixed": [0.0, 90.0],
                                  "known_ecc_fixed": [0.0, 90.0], "nlive": 10, "dlogz": 2.0}))
    login(browser, server.base, "alice")
    browser.get(f"{server.base}/admin")
    shot(browser, "admin")
    browser.find_element("id", "times").send_keys(str(times))
    browser.find_element("id", "priors").send_keys(str(priors))
    browser.find_element("id", "campaign-name").send_keys("browser-ttv")
    browser.find_element("id", "bins").clear()
    browser.find_element("id", "bins").send_keys("[[22.25, 22.35]]")
    browser.find_element("css selector", "#replicas option[value='1'], #replicas option:nth-child(2)").click()
    browser.find_element("id", "executor").send_keys("local")
    browser.find_element("id", "seed").send_keys("3")
    browser.find_element("id", "launch").click()
    wait_for(browser, "return document.getElementById('campaign') !== null")
    shot(browser, "campaign-running")
    with app.db.session() as s:
        c = s.scalars(select(Campaign).where(Campaign.name == "browser-ttv")).one()
        assert c.executor == "local" and c.config["replicas"] == 1
    wait_for(browser, "return document.getElementById('campaign-status').textContent === 'done'"
                      " && document.getElementById('corner') !== null", timeout=120)
    wait_for(browser, "var i = document.getElementById('corner'); return i.complete && i.naturalWidth > 0")
    # one work unit, plus the missed-peak rerun of its bin when nlive 10 leaves the best fit flagged (chi2/N > 10)
    with app.db.session() as s:
        n_wu = len(s.scalars(select(WorkUnit).where(WorkUnit.campaign_id == c.id)).all())
    assert n_wu in (1, 2)
    assert browser.find_element("id", "campaign-progress").text == f"{n_wu}/{n_wu}"
    assert browser.find_elements("css selector", "#posterior tbody tr")
    shot(browser, "campaign-done")
    browser.find_element("id", "corner-link").click()
    wait_for(browser, "return document.contentType === 'image/png'")
    shot(browser, "campaign-corner")
