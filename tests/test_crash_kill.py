"""kill -9 during `openastro pipeline ingest` and during uploads to `openastro serve`, at points chosen by a seeded
RNG and reached through progress markers in the store (a temp file appearing, an object appearing), never by
sleeping: after a restart nothing that was recorded is lost, no temp file is left, and `store check --repair` leaves
the store consistent. Also: the upload server's memory while checking a large .fits.fz, and TLS."""

from __future__ import annotations

import subprocess
import threading
import time
from pathlib import Path

import httpx
import numpy as np
import pytest
from astropy.io import fits
from click.testing import CliRunner
from sqlalchemy import select

from ingest_samples import astrobin_header, small_image
from serve_proc import CLI, cli_env, serving
from server.cli import main
from server.core.context import OpenAstro
from server.core.db.models import Observation
from server.core.settings import load_settings
from server.core.storecheck import check_store, repair_store


def app_for(var: Path, **env: str) -> OpenAstro:
    """A fresh process's view of the installation (opening the store cleans temp files, grace 0 here)."""
    return OpenAstro(load_settings(env={"OPENASTRO_VAR_DIR": str(var), "OPENASTRO_STORE_TEMP_GRACE_S": "0", **env}))


def wait_for(predicate, what: str, proc=None, timeout_s: float = 60.0, poll_s: float = 0.002):
    deadline = time.monotonic() + timeout_s
    while not predicate():
        if proc is not None and proc.poll() is not None:
            return False  # finished before the marker: the caller decides
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(poll_s)
    return True


def n_objects(var: Path) -> int:
    base = var / "store" / "sha256"
    return sum(1 for _ in base.glob("*/*/*")) if base.is_dir() else 0


def temp_files(var: Path) -> list[Path]:
    tmp = var / "store" / "tmp"
    return sorted(tmp.glob("put-*")) if tmp.is_dir() else []


def assert_recorded_objects_intact_then_repair_to_clean(var: Path) -> OpenAstro:
    app = app_for(var)
    app.store  # noqa: B018  (a restarted process opens the store: temp files of dead writers are removed)
    assert temp_files(var) == []
    with app.db.session() as s:
        rows = s.execute(select(Observation.id, Observation.storage_key)).all()
    for _id, key in rows:  # nothing recorded is lost
        assert app.store.exists(key) and app.store.verify(key), key
    report = check_store(app.db, app.store)
    assert not report.missing and not report.corrupt
    repair_store(app.db, app.store, report)
    assert check_store(app.db, app.store).clean
    return app


def write_frames(data: Path, n: int) -> list[Path]:
    data.mkdir()
    paths = []
    for i in range(n):
        path = data / f"frame_{i:02d}.fits"
        fits.PrimaryHDU(small_image(i, (96, 128)), astrobin_header()).writeto(path)
        paths.append(path)
    return paths


def test_ingest_killed_at_random_points_loses_nothing_and_repair_leaves_no_orphan(tmp_path):
    var, data = tmp_path / "var", tmp_path / "data"
    assert CliRunner().invoke(main, ["db", "upgrade"], env={"OPENASTRO_VAR_DIR": str(var)}).exit_code == 0
    frames = write_frames(data, 6)
    rng = np.random.default_rng(20261207)
    env = cli_env(var, OPENASTRO_STORE_TEMP_GRACE_S="0")
    for round_no in range(2):
        before = n_objects(var)
        marker = rng.choice(["temp file", "object"])  # kill mid-write, or between the put and the commit (or after)
        target = before + int(rng.integers(1, 4))
        with open(tmp_path / f"ingest{round_no}.log", "wb") as log:
            proc = subprocess.Popen([*CLI, "pipeline", "ingest", str(data)], env=env, stdout=log,
                                    stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
        try:
            if marker == "temp file":
                wait_for(lambda: n_objects(var) >= target - 1 and temp_files(var), "a temp file", proc)
            else:
                wait_for(lambda: n_objects(var) >= target, f"{target} objects", proc)
        finally:
            proc.kill()
            proc.wait(30)
        assert_recorded_objects_intact_then_repair_to_clean(var)
    done = subprocess.run([*CLI, "pipeline", "ingest", str(data)], env=env, capture_output=True, text=True,
                          timeout=300)
    assert done.returncode == 0, done.stdout + done.stderr
    app = assert_recorded_objects_intact_then_repair_to_clean(var)
    with app.db.session() as s:
        assert len(s.scalars(select(Observation)).all()) == len(frames)


def _site_key(var: Path) -> str:
    runner, env = CliRunner(), {"OPENASTRO_VAR_DIR": str(var)}
    assert runner.invoke(main, ["db", "upgrade"], env=env).exit_code == 0
    assert runner.invoke(main, ["site", "add", "Backyard"], env=env).exit_code == 0
    return runner.invoke(main, ["site", "key", "Backyard"], env=env).stdout.strip().splitlines()[-1]


def _multipart(content: bytes, release: threading.Event, half: int | None):
    """A streamed multipart body with one file part; with ``half``, it stops after that many file bytes until
    ``release`` is set."""
    boundary = "killtestboundary"
    yield (f"--{boundary}\r\nContent-Disposition: form-data; name=\"file\"; filename=\"k.fits\"\r\n"
           "Content-Type: application/fits\r\n\r\n").encode()
    if half is None:
        yield content
    else:
        yield content[:half]
        release.wait(30)  # the rest never comes before the kill
        yield content[half:]
    yield f"\r\n--{boundary}--\r\n".encode()


def _check_restarted(server, headers, stored: dict[int, str], var: Path) -> None:
    """A restarted server removed the killed upload's temp file and still serves every upload it answered 201."""
    assert temp_files(var) == []
    with server.client() as client:
        for oid, storage_key in stored.items():
            got = client.get(f"/api/v1/observations/{oid}", headers=headers)
            assert got.status_code == 200 and got.json()["sha256"] == storage_key.rsplit("/", 1)[1]


def test_upload_server_killed_mid_upload_loses_nothing_and_leaves_no_temp_file(tmp_path):
    var = tmp_path / "var"
    key = _site_key(var)
    headers = {"Authorization": f"Bearer {key}"}
    frames = iter(write_frames(tmp_path / "data", 4))
    env = cli_env(var, OPENASTRO_STORE_TEMP_GRACE_S="0")
    rng = np.random.default_rng(7)
    stored: dict[int, str] = {}  # observation id -> storage key, for every upload answered 201
    for round_no, mode in enumerate(["mid-body", "during the check"]):
        with serving(var, tmp_path / f"serve{round_no}.log", env=env) as server:
            _check_restarted(server, headers, stored, var)
            with server.client() as client:  # an upload the server reports stored
                path = next(frames)
                r = client.post("/api/v1/observations", headers=headers, files={"file": (path.name, path.read_bytes())})
                assert r.status_code == 201, r.text
                stored[r.json()["id"]] = r.json()["storage_key"]
            content = next(frames).read_bytes()
            half = int(rng.integers(2880, len(content) - 2880)) if mode == "mid-body" else None
            release, outcome = threading.Event(), []
            objects_before = n_objects(var)

            def send():
                try:
                    with server.client() as c:
                        outcome.append(c.post("/api/v1/observations", content=_multipart(content, release, half),
                                              headers={**headers, "Content-Type":
                                                       "multipart/form-data; boundary=killtestboundary"}))
                except httpx.TransportError as exc:
                    outcome.append(exc)

            sender = threading.Thread(target=send)
            sender.start()
            try:
                if mode == "mid-body":  # marker: the spool file exists (half the body received)
                    assert wait_for(lambda: temp_files(var), "the upload's temp file", server.proc)
                else:  # marker: the whole file is spooled and being checked/stored (or already stored)
                    wait_for(lambda: n_objects(var) > objects_before or outcome, "the upload's object", server.proc)
                server.kill()
            finally:
                release.set()
                sender.join(60)
            assert outcome
            if isinstance(outcome[0], httpx.Response) and outcome[0].status_code == 201:
                stored[outcome[0].json()["id"]] = outcome[0].json()["storage_key"]  # answered before the kill
            elif mode == "mid-body":
                assert isinstance(outcome[0], httpx.TransportError)
    with serving(var, tmp_path / "restart.log", env=env) as server:
        _check_restarted(server, headers, stored, var)
    assert_recorded_objects_intact_then_repair_to_clean(var)


def test_upload_server_memory_stays_bounded_for_a_large_fits_fz(tmp_path):
    """The case from issue 13: a small .fits.fz that decodes to a large image. A 4096 x 4096 int32 frame
    (64 MiB decoded, ~0.4 MB compressed) grows the server's peak RSS by less than 40 MB (fits_max_tile_bytes
    16 MiB; before the fix the whole image was decoded: >= 64 MiB)."""
    var = tmp_path / "var"
    key = _site_key(var)
    headers = {"Authorization": f"Bearer {key}"}
    warm = tmp_path / "warm.fits.fz"
    fits.HDUList([fits.PrimaryHDU(), fits.CompImageHDU(small_image(1), astrobin_header(),
                                                      compression_type="RICE_1")]).writeto(warm)
    big = tmp_path / "big.fits.fz"
    image = np.zeros((4096, 4096), dtype=np.int32)
    image[::97, ::89] = 7
    fits.HDUList([fits.PrimaryHDU(), fits.CompImageHDU(image, astrobin_header(), compression_type="RICE_1")]).writeto(big)
    del image
    with serving(var, tmp_path / "serve.log") as server, server.client() as client:
        r = client.post("/api/v1/observations", headers=headers, files={"file": ("warm.fits.fz", warm.read_bytes())})
        assert r.status_code == 201, r.text  # imports and first-use allocations happen here
        before = server.peak_rss_mb()
        r = client.post("/api/v1/observations", headers=headers, files={"file": ("big.fits.fz", big.read_bytes())})
        assert r.status_code == 201 and r.json()["source_format"] == "fits.fz", r.text
        growth = server.peak_rss_mb() - before
    assert growth < 40, f"server peak RSS grew by {growth:.1f} MB"


def test_serve_over_tls_with_a_self_signed_certificate(tmp_path):
    var = tmp_path / "var"
    key = _site_key(var)
    cert, pkey = tmp_path / "cert.pem", tmp_path / "key.pem"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes", "-keyout", str(pkey), "-out",
                    str(cert), "-days", "1", "-subj", "/CN=127.0.0.1", "-addext", "subjectAltName=IP:127.0.0.1"],
                   check=True, capture_output=True, timeout=60)
    import ssl

    context = ssl.create_default_context(cafile=str(cert))
    buf_path = tmp_path / "a.fits"
    fits.PrimaryHDU(small_image(), astrobin_header()).writeto(buf_path)
    with serving(var, tmp_path / "tls.log", "--ssl-certfile", str(cert), "--ssl-keyfile", str(pkey),
                 scheme="https", verify=context) as server:
        with server.client() as client:
            r = client.post("/api/v1/observations", headers={"Authorization": f"Bearer {key}"},
                            files={"file": ("a.fits", buf_path.read_bytes())})
            assert r.status_code == 201, r.text
        with httpx.Client(base_url=server.base.replace("https", "http"), timeout=5) as plain:
            with pytest.raises(httpx.TransportError):
                plain.get("/api/v1/health")  # no plain-HTTP fallback on the TLS port
        assert "https://127.0.0.1" in server.output()


def test_serve_warns_about_plain_http_on_a_public_address(tmp_path, monkeypatch):
    import uvicorn

    from server.cli.serve import is_loopback

    calls = []
    monkeypatch.setattr(uvicorn, "run", lambda app, **kw: calls.append(kw))  # records what would be served
    env = {"OPENASTRO_VAR_DIR": str(tmp_path / "var")}
    runner = CliRunner()
    assert runner.invoke(main, ["db", "upgrade"], env=env).exit_code == 0
    plain = runner.invoke(main, ["serve", "--host", "0.0.0.0"], env=env)
    assert plain.exit_code == 0 and "WARNING: serving plain HTTP on 0.0.0.0" in plain.output
    assert calls[-1]["host"] == "0.0.0.0" and calls[-1]["ssl_certfile"] is None
    local = runner.invoke(main, ["serve"], env=env)
    assert local.exit_code == 0 and "WARNING" not in local.output
    cert = tmp_path / "c.pem"
    cert.write_text("x")
    half = runner.invoke(main, ["serve", "--host", "0.0.0.0", "--ssl-certfile", str(cert)], env=env)
    assert half.exit_code == 2 and "go together" in half.output
    tls = runner.invoke(main, ["serve", "--host", "0.0.0.0", "--ssl-certfile", str(cert), "--ssl-keyfile", str(cert)],
                        env=env)
    assert tls.exit_code == 0 and "WARNING" not in tls.output and "https://0.0.0.0" in tls.output
    assert calls[-1]["ssl_certfile"] == str(cert) and calls[-1]["ssl_keyfile"] == str(cert)
    assert [is_loopback(h) for h in ("127.0.0.1", "::1", "localhost", "0.0.0.0", "::", "example.org")] == [
        True, True, True, False, False, False]
