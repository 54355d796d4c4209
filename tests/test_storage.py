"""The content-addressed store: dedup, atomicity, never overwriting, clear errors.

Every test that takes ``store`` runs against both backends: the local directory store and the S3 store on a real
S3-compatible server (moto_server, started by scripts/s3-test-server.sh; see tests/s3_server.py)."""

from __future__ import annotations

import hashlib
import io
import os
import threading

import pytest

from server.core.storage import LocalObjectStore, ObjectTooLarge, StorageError, atomic_write_bytes, key_for


@pytest.fixture(params=["local", "s3"])
def store(request, tmp_path):
    if request.param == "local":
        return LocalObjectStore(tmp_path / "store")
    return request.getfixturevalue("s3_store_factory")()


def _stored_state(store, key):
    """What proves an object was not rewritten: the file's mtime (local) or the object's ETag+date (S3)."""
    if isinstance(store, LocalObjectStore):
        return store.path(key).stat().st_mtime_ns
    head = store.client.head_object(Bucket=store.bucket, Key=store._name(key))
    return head["ETag"], head["LastModified"]


def test_put_bytes_is_named_by_sha256_and_round_trips(store, tmp_path):
    data = b"photons" * 1000
    obj = store.put_bytes(data)
    assert obj.sha256 == hashlib.sha256(data).hexdigest()
    assert obj.key == key_for(obj.sha256)
    assert obj.size == len(data) and obj.created
    with store.open(obj.key) as fh:
        assert fh.read() == data
    assert store.verify(obj.key)


def test_same_content_twice_is_stored_once(store, tmp_path):
    src = tmp_path / "frame.fits"
    src.write_bytes(os.urandom(5000))
    first = store.put_file(src)
    second = store.put_file(src)
    assert first.key == second.key
    assert first.created and not second.created
    assert len(list(store.keys())) == 1


def test_concurrent_puts_of_same_content_give_one_object(store, tmp_path):
    data = os.urandom(200_000)
    results = []
    threads = [threading.Thread(target=lambda: results.append(store.put_bytes(data))) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len({r.key for r in results}) == 1
    assert sum(r.created for r in results) == 1
    assert list(store.keys()) == [results[0].key]
    assert not list((store.root / "tmp").iterdir())


def test_stored_objects_are_never_overwritten(store, tmp_path):
    obj = store.put_bytes(b"original")
    path = store.path(obj.key)
    assert not os.access(path, os.W_OK) or os.geteuid() == 0
    before = _stored_state(store, obj.key)
    again = store.put_bytes(b"original")
    assert not again.created
    assert _stored_state(store, obj.key) == before


def test_exists_verify_and_delete_behave_alike(store, tmp_path):
    obj = store.put_bytes(b"flat field" * 100)
    other = store.put_bytes(b"dark frame")
    assert store.exists(obj.key) and store.verify(obj.key)
    assert sorted(store.keys()) == sorted([obj.key, other.key])
    assert store.delete(obj.key) is True
    assert not store.exists(obj.key)
    assert store.delete(obj.key) is False
    assert list(store.keys()) == [other.key]
    with pytest.raises(StorageError, match="is not in the store"):
        store.open(obj.key)
    assert store.put_bytes(b"flat field" * 100).created  # deleted content can be stored again


def test_copy_to_writes_the_object_atomically(store, tmp_path):
    obj = store.put_bytes(b"weights" * 300)
    dest = store.copy_to(obj.key, tmp_path / "slot" / "in.fits")
    assert dest.read_bytes() == b"weights" * 300
    assert [p.name for p in dest.parent.iterdir()] == ["in.fits"]


def test_failed_stream_leaves_nothing_behind(store, tmp_path):

    class Broken(io.RawIOBase):
        def __init__(self):
            self.calls = 0

        def read(self, n=-1):
            self.calls += 1
            if self.calls > 2:
                raise ConnectionResetError("client went away")
            return b"x" * 1000

    with pytest.raises(ConnectionResetError):
        store.put_stream(Broken())
    assert list(store.keys()) == []
    assert not list((store.root / "tmp").iterdir())


def test_size_limit_rejects_and_stores_nothing(store, tmp_path):
    with pytest.raises(ObjectTooLarge, match="size limit of 100 bytes"):
        store.put_stream(io.BytesIO(b"y" * 5000), max_bytes=100)
    assert list(store.keys()) == []
    assert not list((store.root / "tmp").iterdir())


def test_keys_cannot_traverse_paths(store, tmp_path):
    with pytest.raises(ValueError, match="not a storage key"):
        store.path("../../etc/passwd")
    with pytest.raises(ValueError, match="not a"):
        store.path("sha256/aa/bb/../../../../etc/passwd")


def test_missing_object_is_a_clear_error(store, tmp_path):
    with pytest.raises(StorageError, match="is not in the store"):
        store.open(key_for("0" * 64))


def test_read_only_store_directory_is_a_clear_error(tmp_path, monkeypatch):
    root = tmp_path / "ro"
    (root / "tmp").mkdir(parents=True)
    monkeypatch.setattr(os, "access", lambda p, mode: False)
    with pytest.raises(StorageError, match="not writable: fix its permissions or set OPENASTRO_STORAGE_DIR"):
        LocalObjectStore(root)


def test_atomic_write_replaces_whole_file(tmp_path):
    target = tmp_path / "out" / "result.npz"
    atomic_write_bytes(target, b"first")
    atomic_write_bytes(target, b"second version")
    assert target.read_bytes() == b"second version"
    assert [p.name for p in target.parent.iterdir()] == ["result.npz"]


def test_full_disk_is_a_clear_error_and_leaves_nothing(store, tmp_path, monkeypatch):
    import errno

    real_fdopen = os.fdopen

    class FullFile:
        def __init__(self, fh):
            self.fh = fh

        def __enter__(self):
            return self

        def __exit__(self, *exc):
            self.fh.close()

        def write(self, data):
            raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(os, "fdopen", lambda fd, mode: FullFile(real_fdopen(fd, mode)))
    with pytest.raises(StorageError, match="is full"):
        store.put_bytes(b"z" * 10)
    monkeypatch.undo()
    assert list(store.keys()) == []
    assert not list((store.root / "tmp").iterdir())


def test_failed_atomic_write_keeps_the_old_file_and_leaves_no_temp(tmp_path):
    from app.atomic import atomic_open

    target = tmp_path / "summary.json"
    target.write_text("old")
    with pytest.raises(RuntimeError, match="disk trouble"):
        with atomic_open(target, "w") as fh:
            fh.write("half of the new cont")
            raise RuntimeError("disk trouble")
    assert target.read_text() == "old"
    assert [p.name for p in tmp_path.iterdir()] == ["summary.json"]
