"""Adversarial volunteer results, made at test time from one honest result (nothing binary is kept in git).

``adversarial_results(good, other_seed, other_campaign_seed)`` returns ``{name: Bad}``: either bytes to upload or
a symbolic link target. Each one is something an attacker, a broken host or a bit flip could hand the validator
or the assimilator; every one must be refused by both. ``member_bomb()`` is a real zip bomb: a 2 MB npz whose
``samples.npy`` member truly expands to 2 GiB of zeros with a correct CRC (built from repeated deflate blocks, so
making it costs no compression of 2 GiB).
"""

from __future__ import annotations

import functools
import io
import json
import pickle
import struct
import zlib
from dataclasses import dataclass

import numpy as np

from boinc_fakes import rewrite_result

ROW_ARRAYS = ("samples", "samples_u", "samples_id", "samples_it", "ncall", "logl", "logvol", "logwt", "logz",
              "logzerr", "information")
BOMB_BYTES = 2 << 30  # what the bomb's member expands to


@dataclass(frozen=True)
class Bad:
    data: bytes | None = None       # the file's bytes, or
    link_to: str | None = None      # a symbolic link to this path
    why: str = ""                   # words the refusal must contain (case-insensitive, any of "a|b")


def _arrays(data: bytes) -> dict[str, np.ndarray]:
    with np.load(io.BytesIO(data), allow_pickle=False) as npz:
        return {k: np.array(npz[k]) for k in npz.files}


def _meta(data: bytes) -> dict:
    return json.loads(str(_arrays(data)["meta"]))


def _with_nan(data: bytes) -> bytes:
    samples = _arrays(data)["samples"].copy()
    samples[len(samples) // 2, 0] = np.nan
    return rewrite_result(data, arrays_update={"samples": samples})


def _with_inf(data: bytes) -> bytes:
    a = _arrays(data)
    logl, logz = a["logl"].copy(), a["logz"].copy()
    logl[-1], logz[-1] = np.inf, np.inf
    return rewrite_result(data, arrays_update={"logl": logl, "logz": logz})


def _ten_times(data: bytes) -> bytes:
    """Every row ten times (logl stays sorted), niter raised to match: 10x the samples the work unit asked for."""
    a = _arrays(data)
    rows = {k: np.repeat(a[k], 10, axis=0) for k in ROW_ARRAYS}
    return rewrite_result(data, arrays_update=rows | {"niter": np.int64(len(rows["logl"]) - int(a["nlive"]))})


def _largest_declaration(data: bytes) -> bytes:
    """As many rows as any run may hold (MAX_ROWS_PER_RUN) of zeros: passes the container check, so the checks
    after loading run on the largest arrays a result of this work unit can declare."""
    from server.core.boinc_contract import MAX_ROWS_PER_RUN

    a = _arrays(data)
    rows = {k: np.zeros((MAX_ROWS_PER_RUN, *a[k].shape[1:]), dtype=a[k].dtype) for k in ROW_ARRAYS}
    return rewrite_result(data, arrays_update=rows)


def _object_array(data: bytes) -> bytes:
    arrays = _arrays(data)
    arrays["samples"] = np.array([{"evil": 1}] * 3, dtype=object)
    buffer = io.BytesIO()
    np.savez(buffer, **arrays)  # numpy pickles object arrays into the member
    return buffer.getvalue()


def _pickle(data: bytes) -> bytes:
    return pickle.dumps({k: v for k, v in _arrays(data).items()})


def zip_of(members: list[tuple[str, bytes, int, int, int]]) -> bytes:
    """A zip written by hand: (name, stored bytes, method, crc, uncompressed size) per member, so that sizes and
    contents can be exactly what an attacker chooses."""
    out, central = io.BytesIO(), io.BytesIO()
    for name, payload, method, crc, usize in members:
        offset = out.tell()
        raw = name.encode()
        out.write(struct.pack("<4s5H3L2H", b"PK\x03\x04", 20, 0, method, 0, 0x21, crc, len(payload), usize,
                              len(raw), 0) + raw)
        out.write(payload)
        central.write(struct.pack("<4s6H3L5H2L", b"PK\x01\x02", 20, 20, 0, method, 0, 0x21, crc, len(payload),
                                  usize, len(raw), 0, 0, 0, 0, 0, offset) + raw)
    start = out.tell()
    out.write(central.getvalue())
    out.write(struct.pack("<4s4H2LH", b"PK\x05\x06", 0, 0, len(members), len(members), len(central.getvalue()),
                          start, 0))
    return out.getvalue()


def _npy_header(dtype: str, shape: tuple) -> bytes:
    buffer = io.BytesIO()
    np.lib.format.write_array_header_1_0(buffer, {"descr": dtype, "fortran_order": False, "shape": shape})
    return buffer.getvalue()


@functools.lru_cache(maxsize=4)
def member_bomb(meta_json: str, declared_only: bool = False) -> bytes:
    """meta + ``samples.npy``: a float64 (rows, 3) array of zeros, 2 GiB uncompressed, ~2 MB deflated, CRC
    correct. ``declared_only``: the same stream, but the central directory declares a small honest-looking size
    (zipfile then stops there and the CRC cannot match)."""
    meta = io.BytesIO()
    np.save(meta, np.asarray(meta_json), allow_pickle=False)
    meta_bytes = meta.getvalue()
    meta_member = ("meta.npy", meta_bytes, 0, zlib.crc32(meta_bytes), len(meta_bytes))
    rows = (BOMB_BYTES - 128) // 24
    header = _npy_header("<f8", (rows, 3))
    zeros = rows * 24
    chunk = 1 << 20
    comp = zlib.compressobj(9, zlib.DEFLATED, -15)
    first = comp.compress(header + bytes(chunk)) + comp.flush(zlib.Z_SYNC_FLUSH)
    block = comp.compress(bytes(chunk)) + comp.flush(zlib.Z_SYNC_FLUSH)  # 1 MiB of zeros after a zero window
    n_chunks, rest = divmod(zeros, chunk)
    tail = comp.compress(bytes(rest)) + comp.flush()
    stream = first + block * (n_chunks - 1) + tail
    if declared_only:
        small = _npy_header("<f8", (100, 3))
        return zip_of([meta_member, ("samples.npy", stream, 8, zlib.crc32(small + bytes(2400)), len(small) + 2400)])
    crc, big = zlib.crc32(header), bytes(1 << 24)
    for _ in range(zeros // len(big)):
        crc = zlib.crc32(big, crc)
    crc = zlib.crc32(bytes(zeros % len(big)), crc)
    return zip_of([meta_member, ("samples.npy", stream, 8, crc, len(header) + zeros)])


def adversarial_results(good: bytes, *, other_wu_seed, other_campaign_seed, other_wu_name: str) -> dict[str, Bad]:
    meta_json = str(_arrays(good)["meta"])
    return {
        "nan": Bad(_with_nan(good), why="non-finite"),
        "inf": Bad(_with_inf(good), why="non-finite"),
        "wrong seed": Bad(rewrite_result(good, meta_update={"seed": [1, 2, 3]}), why="seed"),
        "wrong work unit": Bad(rewrite_result(good, meta_update={"seed": list(other_wu_seed),
                                                                 "wu_name": other_wu_name}),
                               why="another work unit"),
        "wrong campaign": Bad(rewrite_result(good, meta_update={"seed": list(other_campaign_seed)}),
                              why="another campaign"),
        "10x samples": Bad(_ten_times(good), why="forged sample counts|exceed"),
        "largest declaration": Bad(_largest_declaration(good), why="forged or truncated"),
        "member bomb": Bad(member_bomb(meta_json), why="zip bomb"),
        "member bomb with lying sizes": Bad(member_bomb(meta_json, declared_only=True), why="crc|forged sizes"),
        "pickle": Bad(_pickle(good), why="not a readable npz"),
        "object array": Bad(_object_array(good), why="a pickle"),
        "link to /dev/zero": Bad(link_to="/dev/zero", why="symbolic link"),
        "link to /etc/passwd": Bad(link_to="/etc/passwd", why="symbolic link"),
        "truncated": Bad(good[: len(good) // 2], why="not a readable npz|truncated"),
        "empty": Bad(b"", why="empty"),
        "wrong schema": Bad(rewrite_result(good, meta_update={"version": 99}), why="version 99"),
        "missing array": Bad(rewrite_result(good, drop=("logwt",)), why=r"missing \['logwt'\]"),
    }
