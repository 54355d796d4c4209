"""Work-unit spec validation and the result envelope (plain data, allow_pickle=False)."""

from __future__ import annotations

import io
import json

import numpy as np
import pytest

from app import spec as specmod

VALID = {"format": "openastro.wu", "version": 1, "kind": "reproject-tile", "seed": [12345, 2],
         "inputs": {"cutout": "cutout.fits"}, "params": {"tile_bounds": [0, 10, 0, 10]}}


def _with(**changes):
    obj = json.loads(json.dumps(VALID))
    obj.update(changes)
    return obj


def test_valid_spec_parses_and_gives_its_seed_sequence():
    parsed = specmod.parse_spec(VALID)
    assert parsed.kind == "reproject-tile"
    assert parsed.seed == (12345, 2)
    ss = parsed.seed_sequence()
    assert ss.entropy == 12345 and ss.spawn_key == (2,)
    # the seed is the spawned child of the campaign's root sequence
    child = np.random.SeedSequence(12345).spawn(3)[2]
    assert ss.generate_state(4).tolist() == child.generate_state(4).tolist()


@pytest.mark.parametrize("changes, message", [
    ({"format": "other"}, "expected 'openastro.wu'"),
    ({"version": 2}, "version 2 is not supported"),
    ({"version": True}, "version True is not supported"),
    ({"kind": "ttv-magic"}, "unknown task kind 'ttv-magic'"),
    ({"seed": []}, "seed must be a non-empty list"),
    ({"seed": [1, -2]}, r"got \[1, -2\]"),
    ({"seed": [1.5]}, r"got \[1.5\]"),
    ({"seed": [True]}, r"got \[True\]"),
    ({"inputs": {"cutout": "../etc/passwd"}}, "not a plain file name"),
    ({"inputs": {"cutout": "/abs/path"}}, "not a plain file name"),
    ({"inputs": ["cutout.fits"]}, "inputs must be an object"),
    ({"params": []}, "params must be an object"),
    ({"extra": 1}, r"unknown keys \['extra'\]"),
])
def test_malformed_spec_is_refused_with_the_offending_value(changes, message):
    with pytest.raises(specmod.SpecError, match=message):
        specmod.parse_spec(_with(**changes))


def test_spec_missing_keys_and_non_object_are_refused():
    obj = dict(VALID)
    del obj["seed"]
    with pytest.raises(specmod.SpecError, match=r"lacks keys \['seed'\]"):
        specmod.parse_spec(obj)
    with pytest.raises(specmod.SpecError, match="must be a JSON object"):
        specmod.parse_spec([VALID])


def test_load_spec_refuses_invalid_json_and_huge_files(tmp_path):
    bad = tmp_path / "wu.json"
    bad.write_text('{"format": "openastro.wu", ')
    with pytest.raises(specmod.SpecError, match="not valid JSON"):
        specmod.load_spec(bad)
    bad.write_bytes(b" " * (specmod.MAX_SPEC_BYTES + 1))
    with pytest.raises(specmod.SpecError, match="at most"):
        specmod.load_spec(bad)


def _meta(kind="reproject-tile"):
    return specmod.result_meta(kind, (1, 2), app_version="0.1.0", wu_name="wu_1",
                               timings={"wall_s": 1.5})


def test_result_envelope_round_trips_without_pickle(tmp_path):
    arrays = {"tile": np.arange(6, dtype=np.float32).reshape(2, 3), "bounds": np.array([0, 2, 0, 3])}
    path = tmp_path / "result.npz"
    specmod.write_result(path, _meta(), arrays)
    envelope = specmod.read_result(path)
    assert envelope.kind == "reproject-tile"
    assert envelope.meta["seed"] == [1, 2] and envelope.meta["timings"] == {"wall_s": 1.5}
    np.testing.assert_array_equal(envelope.arrays["tile"], arrays["tile"])
    assert set(envelope.arrays) == {"tile", "bounds"}
    assert not list(tmp_path.glob(".*.tmp"))


def test_result_refuses_object_arrays_on_write_and_pickles_on_read(tmp_path):
    with pytest.raises(ValueError, match="dtype object"):
        specmod.encode_result(_meta(), {"bad": np.array([{"a": 1}], dtype=object)})
    path = tmp_path / "evil.npz"
    np.savez(path, meta=np.asarray(json.dumps(_meta())), payload=np.array([{"x": 1}], dtype=object))
    with pytest.raises(specmod.ResultFormatError, match="not a readable result npz"):
        specmod.read_result(path)


@pytest.mark.parametrize("meta, message", [
    ({"format": "openastro.ttv-result", "version": 1, "kind": "ttv-nested"}, "expected 'openastro.result'"),
    ({"format": "openastro.result", "version": 9, "kind": "ttv-nested"}, "version 9 is not supported"),
    ({"format": "openastro.result", "version": 1, "kind": "nope"}, "kind 'nope' is unknown"),
])
def test_result_with_wrong_format_version_or_kind_is_refused(meta, message):
    buffer = io.BytesIO()
    np.savez(buffer, meta=np.asarray(json.dumps(meta)), x=np.zeros(2))
    buffer.seek(0)
    with pytest.raises(specmod.ResultFormatError, match=message):
        specmod.read_result(buffer)


def test_truncated_result_file_is_a_format_error(tmp_path):
    path = tmp_path / "result.npz"
    specmod.write_result(path, _meta(), {"tile": np.ones((50, 50))})
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(specmod.ResultFormatError):
        specmod.read_result(path)
