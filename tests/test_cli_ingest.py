"""`openastro pipeline ingest`, `openastro site` and `openastro serve` as a user runs them."""

from __future__ import annotations

import io
import os
import signal
import socket
import subprocess
import sys
import time

import httpx
from astropy.io import fits
from click.testing import CliRunner

from ingest_samples import HEADER, astrobin_header, ext_row, small_image
from server.cli import main


def run(tmp_path, *args):
    env = {"OPENASTRO_VAR_DIR": str(tmp_path / "var"), "OPENASTRO_PROGRESS": "false"}
    return CliRunner().invoke(main, list(args), env=env, catch_exceptions=False)


def write_fits(path, seed=0):
    fits.PrimaryHDU(small_image(seed), astrobin_header()).writeto(path)
    return path


def test_ingest_reports_new_duplicate_failed_and_bad_rows_and_exits_nonzero_on_failure(tmp_path):
    assert run(tmp_path, "db", "upgrade").exit_code == 0
    assert run(tmp_path, "site", "add", "Backyard", "--lat", "45.5", "--lon", "-71.25").exit_code == 0
    data = tmp_path / "data"
    data.mkdir()
    write_fits(data / "a.fits")
    (data / "b.fits").write_bytes((data / "a.fits").read_bytes())
    (data / "broken.fits").write_bytes((data / "a.fits").read_bytes()[:4000])
    (data / "report.txt").write_text(HEADER.format(delim=",", date="JD") + ext_row() + "\n" + ext_row(mag="x") + "\n")
    (data / ".hidden").write_text("ignored")
    result = run(tmp_path, "pipeline", "ingest", "--site", "Backyard", str(data))
    assert result.exit_code == 1
    assert "2 new, 1 duplicate, 1 failed" in result.output
    assert "FAILED" in result.output and "broken.fits" in result.output and "truncated" in result.output
    assert "bad rows" in result.output and "line 9" in result.output
    assert "Error: 1 of 4 files failed" in result.output
    again = run(tmp_path, "pipeline", "ingest", str(data / "a.fits"), str(data / "report.txt"))
    assert again.exit_code == 0 and "0 new, 2 duplicate, 0 failed" in again.output


def test_ingest_with_unknown_site_is_one_clear_error(tmp_path):
    run(tmp_path, "db", "upgrade")
    path = write_fits(tmp_path / "a.fits")
    result = run(tmp_path, "pipeline", "ingest", "--site", "Nowhere", str(path))
    assert result.exit_code == 1 and "no site named 'Nowhere'" in result.output


def test_site_key_is_printed_once_and_listed_as_hashed(tmp_path):
    run(tmp_path, "db", "upgrade")
    run(tmp_path, "site", "add", "Club")
    issued = run(tmp_path, "site", "key", "Club")
    token = issued.stdout.strip().splitlines()[-1]
    assert issued.exit_code == 0 and token.startswith("oa_")
    listing = run(tmp_path, "site", "list")
    assert "Club" in listing.output and "1 active keys" in listing.output and token not in listing.output
    assert run(tmp_path, "site", "add", "club").exit_code == 1  # names are unique, case-insensitively
    revoked = run(tmp_path, "site", "revoke", token.split("_")[1])
    assert revoked.exit_code == 0 and "0 active keys" in run(tmp_path, "site", "list").output


def test_serve_starts_the_upload_api_that_accepts_a_keyed_upload(tmp_path):
    run(tmp_path, "db", "upgrade")
    run(tmp_path, "site", "add", "Backyard")
    token = run(tmp_path, "site", "key", "Backyard").stdout.strip().splitlines()[-1]
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    env = {**os.environ, "OPENASTRO_VAR_DIR": str(tmp_path / "var"), "OMP_NUM_THREADS": "1"}
    # the server's log goes to a file: a pipe nobody reads fills up and blocks the server
    with open(tmp_path / "serve.log", "wb") as log:
        proc = subprocess.Popen([sys.executable, "-c", "from server.cli import main; main()", "serve", "--port",
                                 str(port)], env=env, stdout=log, stderr=subprocess.STDOUT)
    try:
        base = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 180  # a bound for a hung server, not a speed requirement
        while True:
            try:
                if httpx.get(f"{base}/api/v1/health", timeout=2).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            if time.monotonic() > deadline or proc.poll() is not None:
                raise RuntimeError(f"openastro serve did not come up: {(tmp_path / 'serve.log').read_text()[-2000:]}")
            time.sleep(0.2)
        buf = io.BytesIO()
        fits.PrimaryHDU(small_image(), astrobin_header()).writeto(buf)
        response = httpx.post(f"{base}/api/v1/observations", headers={"Authorization": f"Bearer {token}"},
                              files={"file": ("a.fits", buf.getvalue())}, timeout=30)
        assert response.status_code == 201 and response.json()["kind"] == "image"
    finally:
        proc.send_signal(signal.SIGINT)
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
