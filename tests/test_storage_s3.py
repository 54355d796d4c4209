"""What only the S3 backend has: multipart uploads that survive a kill, verification of what the server holds,
errors for permission and quota, selection by settings. The server is a real moto_server on 127.0.0.1
(tests/s3_server.py); the shared behaviour of both stores is in test_storage.py."""

from __future__ import annotations

import hashlib
import os
import signal
import subprocess
import sys
import textwrap
import time

import pytest

from server.core.storage import StorageError, key_for
from server.core.storage_s3 import MIB, S3ObjectStore

PART = 5 * MIB  # the S3 minimum part size; a 12 MiB object goes up in 3 parts (5 + 5 + 2 MiB)


def _big_file(tmp_path, size=12 * MIB, seed=7):
    import numpy as np

    path = tmp_path / "big.fits"
    path.write_bytes(np.random.default_rng(seed).bytes(size))
    return path


def _incomplete_uploads(store):
    return store.client.list_multipart_uploads(Bucket=store.bucket).get("Uploads", [])


def test_large_object_goes_up_in_parts_and_reads_back_verified(s3_store_factory, tmp_path):
    store = s3_store_factory(multipart_threshold=PART, part_size=PART)
    src = _big_file(tmp_path)
    obj = store.put_file(src)
    assert obj.created and obj.size == 12 * MIB and store.parts_uploaded == 3
    assert obj.sha256 == hashlib.sha256(src.read_bytes()).hexdigest()
    assert store.path(obj.key).read_bytes() == src.read_bytes()
    assert store.verify(obj.key)
    assert _incomplete_uploads(store) == []
    again = store.put_file(src)
    assert not again.created and store.parts_uploaded == 3  # nothing sent the second time


CHILD = textwrap.dedent("""
    import sys, time
    from pathlib import Path
    from server.core.storage_s3 import S3ObjectStore
    endpoint, bucket, src, cache, marker = sys.argv[1:6]
    store = S3ObjectStore(f"s3://{bucket}/objects", cache_dir=cache, endpoint_url=endpoint,
                          multipart_threshold=5 * 1024 * 1024, part_size=5 * 1024 * 1024, max_attempts=2)
    real_upload_part = store.client.upload_part
    def upload_part(**kwargs):
        answer = real_upload_part(**kwargs)
        if kwargs["PartNumber"] == 2:
            Path(marker).write_text("2 parts sent")
            time.sleep(600)  # the parent SIGKILLs us here, mid-upload
        return answer
    store.client.upload_part = upload_part
    store.put_file(src)
""")


def test_upload_killed_mid_multipart_leaves_no_object_and_a_rerun_completes_it(s3_store_factory, s3_endpoint,
                                                                               s3_bucket, tmp_path):
    src = _big_file(tmp_path)
    marker = tmp_path / "marker"
    child = subprocess.Popen([sys.executable, "-c", CHILD, s3_endpoint, s3_bucket, str(src),
                              str(tmp_path / "child-cache"), str(marker)], env=dict(os.environ))
    try:
        deadline = time.monotonic() + 120
        while not marker.exists():
            assert child.poll() is None, "the uploading process died before it was killed"
            assert time.monotonic() < deadline, "the upload did not reach its second part"
            time.sleep(0.05)
        os.kill(child.pid, signal.SIGKILL)
    finally:
        child.kill()
        child.wait()
    assert child.returncode == -signal.SIGKILL

    store = s3_store_factory(multipart_threshold=PART, part_size=PART)
    key = key_for(hashlib.sha256(src.read_bytes()).hexdigest())
    assert not store.exists(key) and list(store.keys()) == []  # nothing visible
    assert len(_incomplete_uploads(store)) == 1

    obj = store.put_file(src)  # the rerun resumes the same upload: two parts reused, one sent
    assert obj.created and obj.key == key
    assert (store.parts_reused, store.parts_uploaded) == (2, 1)
    assert store.verify(key) and store.path(key).read_bytes() == src.read_bytes()
    assert _incomplete_uploads(store) == []


def test_clean_temp_removes_stale_spool_files_and_repair_aborts_abandoned_multipart_uploads(s3_store_factory, tmp_path):
    store = s3_store_factory(multipart_threshold=PART, part_size=PART)
    name = store._name(key_for("ab" * 32))
    store.client.create_multipart_upload(Bucket=store.bucket, Key=name)
    (store.root / "tmp" / "put-left-by-a-crash").write_bytes(b"x")
    assert len(_incomplete_uploads(store)) == 1
    assert store.clean_temp() == 1  # the local spool file; a multipart upload may belong to a live worker
    assert not list((store.root / "tmp").iterdir())
    assert len(_incomplete_uploads(store)) == 1
    assert store.abort_incomplete_uploads() == 1
    assert _incomplete_uploads(store) == []


def test_object_changed_on_the_server_is_refused_on_read(s3_store_factory):
    store = s3_store_factory()
    obj = store.put_bytes(b"the true bytes")
    store.client.put_object(Bucket=store.bucket, Key=store._name(obj.key), Body=b"tampered bytes")
    assert store.verify(obj.key) is False
    with pytest.raises(StorageError, match="is corrupt: its bytes hash to"):
        store.path(obj.key)
    assert not (store.root / obj.key).exists()  # no unverified copy is left in the cache


def test_presigned_url_lets_a_worker_without_credentials_download_the_object(s3_store_factory, monkeypatch):
    import urllib.request

    store = s3_store_factory()
    obj = store.put_bytes(b"input frame" * 50)
    url = store.presigned_url(obj.key, expires_s=300)
    for name in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"):
        monkeypatch.delenv(name)
    with urllib.request.urlopen(url, timeout=10) as response:
        body = response.read()
    assert hashlib.sha256(body).hexdigest() == obj.sha256


def test_stores_under_different_prefixes_do_not_see_each_other(s3_store_factory):
    a, b = s3_store_factory("site-a", cache="a"), s3_store_factory("site-b", cache="b")
    obj = a.put_bytes(b"frame")
    assert a.exists(obj.key) and not b.exists(obj.key)
    assert list(b.keys()) == []


def test_wrong_credentials_are_a_clear_permission_error(tmp_path, s3_env):
    from s3_server import start_s3_server, stop_s3_server

    # A second server that checks signatures against its (empty) user list: every request is refused with 403.
    proc, endpoint = start_s3_server(tmp_path / "auth.log", {"INITIAL_NO_AUTH_ACTION_COUNT": "0"})
    try:
        store = S3ObjectStore("s3://locked/objects", cache_dir=tmp_path / "c", endpoint_url=endpoint, max_attempts=2)
        with pytest.raises(StorageError, match="permission denied: .*check the S3 credentials") as info:
            store.put_bytes(b"frame")
        assert "openastro-test-secret" not in str(info.value) and "openastro-test" not in repr(store)
    finally:
        stop_s3_server(proc)


@pytest.mark.parametrize("status, code, message", [
    (403, "AccessDenied", "Cannot upload files, storage cap exceeded."),  # how B2 answers at its cap
    (507, "InsufficientStorage", "Insufficient Storage"),
    (400, "QuotaExceeded", "quota reached"),
])
def test_quota_answers_become_a_storage_full_error(s3_store_factory, status, code, message):
    from botocore.exceptions import ClientError

    store = s3_store_factory()
    exc = ClientError({"Error": {"Code": code, "Message": message}, "ResponseMetadata": {"HTTPStatusCode": status}},
                      "PutObject")
    assert "is full or over its quota" in str(store._error(exc, "upload", key_for("0" * 64)))


def test_missing_bucket_is_a_clear_error(s3_endpoint, s3_env, tmp_path):
    store = S3ObjectStore("s3://no-such-bucket-here/x", cache_dir=tmp_path / "c", endpoint_url=s3_endpoint)
    with pytest.raises(StorageError, match="bucket 'no-such-bucket-here' does not exist"):
        store.put_bytes(b"frame" * 10)


def test_storage_url_setting_selects_the_s3_store(s3_endpoint, s3_bucket, tmp_path):
    from server.core.context import OpenAstro
    from server.core.settings import SettingsError, load_settings

    settings = load_settings(env={"OPENASTRO_STORAGE_URL": f"s3://{s3_bucket}/prod",
                                  "OPENASTRO_S3_ENDPOINT_URL": s3_endpoint}, overrides={"var_dir": str(tmp_path)})
    store = OpenAstro(settings).store
    assert isinstance(store, S3ObjectStore) and store.prefix == "prod"
    assert store.root == tmp_path / "store-cache"
    with store.open(store.put_bytes(b"hello").key) as fh:
        assert fh.read() == b"hello"
    from server.boinc.executors import settings_env

    env = settings_env(settings)  # what the BOINC launchers get: the store's settings, never credentials
    assert env["OPENASTRO_STORAGE_URL"] == f"s3://{s3_bucket}/prod"
    assert env["OPENASTRO_S3_ENDPOINT_URL"] == s3_endpoint
    assert not any(name.startswith("AWS_") for name in env) and "openastro-test-secret" not in str(env)
    with pytest.raises(SettingsError, match="s3://BUCKET"):
        load_settings(env={"OPENASTRO_STORAGE_URL": "https://bucket/prefix"})
    with pytest.raises(SettingsError, match=">= 5 MiB"):
        load_settings(env={"OPENASTRO_S3_PART_SIZE": "1000"})


def test_ingest_on_the_s3_store_keeps_the_raw_frame_compressed_and_restorable(s3_endpoint, s3_bucket, tmp_path):
    import numpy as np
    from astropy.io import fits

    from server.core.context import OpenAstro
    from server.core.settings import load_settings
    from server.ingest.compress import original_bytes
    from server.ingest.service import ingest_path

    app = OpenAstro(load_settings(env={"OPENASTRO_STORAGE_URL": f"s3://{s3_bucket}/prod",
                                       "OPENASTRO_S3_ENDPOINT_URL": s3_endpoint},
                                  overrides={"var_dir": str(tmp_path / "var"), "progress": False}))
    app.db.upgrade()
    src = tmp_path / "light.fits"
    header = fits.Header({"DATE-OBS": "2026-01-02T03:04:05", "EXPTIME": 30.0, "OBJECT": "M 13"})
    data = np.random.default_rng(5).poisson(900.0, (64, 96)).astype(np.uint16)
    fits.PrimaryHDU(data, header).writeto(src)
    result = ingest_path(app, src)
    assert result.sha256 == hashlib.sha256(src.read_bytes()).hexdigest()
    assert list(app.store.keys()) == [result.storage_key] and app.store.verify(result.storage_key)
    fresh = S3ObjectStore(app.store.url, cache_dir=tmp_path / "worker-cache", endpoint_url=s3_endpoint)
    assert original_bytes(fresh.path(result.storage_key)) == src.read_bytes()  # a worker elsewhere: same bytes
