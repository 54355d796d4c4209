"""``openastro store migrate --to s3://...``: a local store copied to a real S3-compatible server (moto_server),
resumable after an interruption, verified, idempotent."""

from __future__ import annotations

import os

import pytest
from click.testing import CliRunner

from server.core.storage import LocalObjectStore
from server.core.storage_migrate import migrate_store


def _local_store(tmp_path, n=5):
    store = LocalObjectStore(tmp_path / "store")
    keys = [store.put_bytes(f"frame {i} ".encode() * (100 + 50 * i)).key for i in range(n)]
    return store, sorted(keys)


def test_interrupted_migration_resumes_and_a_third_run_copies_nothing(s3_store_factory, tmp_path):
    source, keys = _local_store(tmp_path)
    dest = s3_store_factory("migrated")
    seen = []

    def interrupt_after_three(key, status):
        seen.append((key, status))
        if len(seen) == 3:
            raise KeyboardInterrupt  # the operator's Ctrl-C, after three objects

    with pytest.raises(KeyboardInterrupt):
        migrate_store(source, dest, progress=interrupt_after_three)
    assert sorted(dest.keys()) == keys[:3]

    resumed = migrate_store(source, dest)
    assert (resumed.total, resumed.copied, resumed.present, resumed.corrupt) == (5, 2, 3, ())
    assert resumed.bytes_copied == sum(source.path(k).stat().st_size for k in keys[3:])
    again = migrate_store(source, dest, verify_existing=True)
    assert (again.copied, again.present) == (0, 5)
    assert sorted(dest.keys()) == keys
    for key in keys:
        assert dest.verify(key)
        with dest.open(key) as got, source.open(key) as want:
            assert got.read() == want.read()


def test_corrupt_source_objects_are_reported_and_not_copied(s3_store_factory, tmp_path):
    source, keys = _local_store(tmp_path, n=3)
    bad = source.path(keys[1])
    os.chmod(bad, 0o644)
    bad.write_bytes(b"bit rot")
    report = migrate_store(source, s3_store_factory("migrated"))
    assert report.corrupt == (keys[1],) and report.copied == 2
    assert "1 corrupt in the source and NOT copied" in report.summary("s3://x")


def test_store_migrate_command_copies_the_configured_store(s3_endpoint, s3_bucket, tmp_path):
    from server.cli import main

    source, keys = _local_store(tmp_path, n=2)
    env = {"OPENASTRO_STORAGE_DIR": str(source.root), "OPENASTRO_VAR_DIR": str(tmp_path / "var"),
           "OPENASTRO_PROGRESS": "false"}
    args = ["store", "migrate", "--to", f"s3://{s3_bucket}/prod", "--endpoint-url", s3_endpoint]
    first = CliRunner().invoke(main, args, env=env, catch_exceptions=False)
    assert first.exit_code == 0, first.output
    assert "2 objects -> s3://" in first.output and "2 copied" in first.output
    second = CliRunner().invoke(main, args, env=env, catch_exceptions=False)
    assert "0 copied (0 bytes), 2 already there" in second.output
    bad = CliRunner().invoke(main, ["store", "migrate", "--to", "/mnt/elsewhere"], env=env)
    assert bad.exit_code != 0 and "s3://BUCKET" in bad.output
