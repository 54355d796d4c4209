"""`openastro store check [--repair]` and the start-up clean-up of store temp files: orphans, missing and corrupt
objects are found through the store's interface and repaired in one transaction; temp files a live process holds
are never removed."""

from __future__ import annotations

import os
import subprocess
import sys
import time

from click.testing import CliRunner
from sqlalchemy import String

from ingest_samples import astrobin_header, small_image
from server.cli import main
from server.core.context import OpenAstro
from server.core.db.models import Base, Observation
from server.core.settings import load_settings
from server.core.storage import open_temp
from server.core.storecheck import KEY_COLUMNS, OBJECT_MISSING, check_store, repair_store
from server.ingest.service import ingest_path


def write_fits(path, seed=0):
    from astropy.io import fits

    fits.PrimaryHDU(small_image(seed), astrobin_header()).writeto(path)
    return path


def test_every_key_column_of_the_schema_is_known_to_the_check():
    known = {(m.__tablename__, c) for m, c in KEY_COLUMNS}
    for mapper in Base.registry.mappers:
        for col in mapper.columns:
            if col.key.endswith("_key") and isinstance(col.type, String) and col.key != "key_hash":
                assert (mapper.class_.__tablename__, col.key) in known, col


def test_check_finds_orphan_missing_and_corrupt_objects_and_repair_leaves_it_clean(oa_app, tmp_path):
    app = oa_app
    a, b, c = (ingest_path(app, write_fits(tmp_path / f"{i}.fits", seed=i)) for i in range(3))
    assert check_store(app.db, app.store).clean
    orphan = app.store.put_bytes(b"an object no row refers to").key
    os.chmod(app.store.path(b.storage_key), 0o644)
    app.store.path(b.storage_key).write_bytes(b"damaged")  # corrupt: bytes no longer match the key
    app.store.delete(c.storage_key)  # missing
    with app.db.session() as s:
        s.get(Observation, a.observation_id).solved_storage_key = "sha256/00/00/" + "0" * 64  # missing, derived

    report = check_store(app.db, app.store)
    assert report.orphans == (orphan,)
    assert report.corrupt == (b.storage_key,)
    assert {(r.row_id, r.column) for r in report.missing} == {(c.observation_id, "storage_key"),
                                                              (a.observation_id, "solved_storage_key")}
    assert [r.row_id for r in report.corrupt_refs] == [b.observation_id]
    assert not report.clean

    outcome = repair_store(app.db, app.store, report)
    assert set(outcome.deleted) == {orphan, b.storage_key} and not outcome.left
    after = check_store(app.db, app.store)
    assert after.clean and set(after.marked_missing) == {b.observation_id, c.observation_id}
    with app.db.session() as s:
        assert s.get(Observation, a.observation_id).solved_storage_key is None
        assert s.get(Observation, a.observation_id).status == "ingested"
        assert s.get(Observation, c.observation_id).status == OBJECT_MISSING

    # sending the same file again restores the object and the status
    again = ingest_path(app, tmp_path / "2.fits")
    assert not again.created and again.observation_id == c.observation_id
    assert any("restored" in w for w in again.warnings)
    assert app.store.verify(c.storage_key)
    with app.db.session() as s:
        assert s.get(Observation, c.observation_id).status == "ingested"
    assert check_store(app.db, app.store).marked_missing == (b.observation_id,)


def test_store_check_cli_reports_exits_one_and_repairs(tmp_path):
    env = {"OPENASTRO_VAR_DIR": str(tmp_path / "var"), "OPENASTRO_PROGRESS": "false"}
    runner = CliRunner()
    assert runner.invoke(main, ["db", "upgrade"], env=env).exit_code == 0
    clean = runner.invoke(main, ["store", "check"], env=env)
    assert clean.exit_code == 0 and "store is consistent" in clean.output
    app = OpenAstro(load_settings(env=env))
    key = app.store.put_bytes(b"orphan").key
    found = runner.invoke(main, ["store", "check"], env=env)
    assert found.exit_code == 1 and "orphan objects (no row refers to them): 1" in found.output and key in found.output
    fixed = runner.invoke(main, ["store", "check", "--repair"], env=env)
    assert fixed.exit_code == 0 and "repaired: 1 objects deleted, 0 rows marked" in fixed.output
    assert runner.invoke(main, ["store", "check"], env=env).exit_code == 0
    assert not app.store.exists(key)


def test_clean_temp_removes_only_stale_temp_files_no_live_process_holds(oa_app):
    store = oa_app.store
    tmp = store.root / "tmp"
    stale = tmp / "put-upload-stale"
    stale.write_bytes(b"left by a killed upload")
    fd, held = open_temp(tmp)  # this process holds it (flock): a concurrent upload in progress
    other = subprocess.Popen([sys.executable, "-c",  # another live process holding its own temp file
                              "import sys, fcntl, os; fd = os.open(sys.argv[1], os.O_RDWR | os.O_CREAT); "
                              "fcntl.flock(fd, fcntl.LOCK_EX); print('locked', flush=True); sys.stdin.read()",
                              str(tmp / "put-other")], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        assert other.stdout.readline().strip() == "locked"
        old = time.time() - 7200
        for p in (stale, held, tmp / "put-other"):
            os.utime(p, (old, old))
        fresh = tmp / "put-fresh"
        fresh.write_bytes(b"just written by a writer that has not locked yet")
        assert store.clean_temp(grace_s=60) == 1
        assert not stale.exists() and held.exists() and (tmp / "put-other").exists() and fresh.exists()
    finally:
        other.stdin.close()
        other.wait(10)
        other.stdout.close()
        os.close(fd)
    assert store.clean_temp(grace_s=0) == 3  # every holder is gone now
    assert list(tmp.iterdir()) == []


def test_opening_the_app_store_cleans_stale_temp_files(settings):
    first = OpenAstro(settings.with_overrides(store_temp_grace_s=0))
    leftover = first.store.root / "tmp" / "put-upload-crashed"
    leftover.write_bytes(b"x")
    assert OpenAstro(settings.with_overrides(store_temp_grace_s=0)).store.root == first.store.root
    assert not leftover.exists()
    kept = first.store.root / "tmp" / "put-recent"
    kept.write_bytes(b"x")
    OpenAstro(settings.with_overrides(store_temp_grace_s=3600)).store  # noqa: B018
    assert kept.exists()
