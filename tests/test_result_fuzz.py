"""Fuzzing the result loader (``validator.checks.check_result``, what the init script, the compare script and the
assimilator all run on a volunteer's file): random bytes, mutated honest results and hand-built npz files with
random members never raise anything but :class:`InvalidResult` (a clean refusal), and never crash.
"""

from __future__ import annotations

import io
import warnings
import zipfile

import numpy as np
from hypothesis import given
from hypothesis import strategies as st

from boinc_fakes import small_ttv_params, spec_for
from fuzz import FUZZ, fuzz
from server.core.boinc_contract import TTV_MAX_NBYTES
from test_validator import SEED_A, good_result
from validator.checks import CheckedResult, InvalidResult, check_result

SPEC = spec_for(small_ttv_params(), SEED_A)


def _check(tmp_path, data: bytes) -> CheckedResult | None:
    path = tmp_path / "oa_fuzz_b00_r00_0_r1_0"
    path.write_bytes(data)
    try:
        return check_result(path, SPEC, TTV_MAX_NBYTES, wu_name="oa_fuzz_b00_r00")
    except InvalidResult as exc:
        assert str(exc)  # a refusal always says why
        return None


@FUZZ
@given(data=st.binary(max_size=4096))
def test_random_bytes_are_refused_cleanly(tmp_path, data):
    assert _check(tmp_path, data) is None


@fuzz(100)
@given(edits=st.lists(st.tuples(st.floats(0, 1, exclude_max=True), st.integers(0, 255)), min_size=1, max_size=8),
       cut=st.one_of(st.none(), st.floats(0, 1)))
def test_mutated_honest_results_are_refused_cleanly_or_still_valid(tmp_path, edits, cut):
    data = bytearray(good_result())
    for where, value in edits:
        data[int(where * len(data))] = value
    if cut is not None:
        data = data[: int(cut * len(data))]
    checked = _check(tmp_path, bytes(data))
    assert checked is None or checked.summary["nlive"] == 30  # a flip in slack bytes may leave it valid


_DTYPES = st.sampled_from(["<f8", "<f4", "<i8", "|u1", "|b1", "<U8", "|O", "<c16", "|V8", "<M8[s]"])


@st.composite
def _members(draw):
    names = draw(st.lists(st.sampled_from(["meta", "samples", "logl", "nlive", "x", "a b", "../evil", "meta"]),
                          min_size=0, max_size=5))
    members = []
    for name in names:
        dtype = draw(_DTYPES)
        shape = tuple(draw(st.lists(st.integers(0, 4), max_size=3)))
        members.append((name, dtype, shape))
    return members


@fuzz(100)
@given(members=_members(), meta=st.one_of(st.none(), st.text(max_size=50),
                                          st.just('{"format": "openastro.result", "version": 1}')))
def test_hand_built_npz_with_random_members_is_refused_cleanly(tmp_path, members, meta):
    buffer = io.BytesIO()
    with warnings.catch_warnings(), zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
        warnings.simplefilter("ignore", UserWarning)  # "Duplicate name": duplicates are part of the fuzz
        if meta is not None:
            npy = io.BytesIO()
            np.save(npy, np.asarray(meta))
            archive.writestr("meta.npy", npy.getvalue())
        for name, dtype, shape in members:
            npy = io.BytesIO()
            array = np.zeros(shape, dtype=dtype) if dtype != "|O" else np.array([{"x": 1}] * 2, dtype=object)
            np.save(npy, array, allow_pickle=True)
            archive.writestr(f"{name}.npy", npy.getvalue())
    assert _check(tmp_path, buffer.getvalue()) is None


_ARRAY_NAMES = ("samples", "samples_u", "samples_id", "samples_it", "ncall", "logl", "logvol", "logwt", "logz",
                "logzerr", "information", "niter", "nlive", "eff")


@fuzz(80)
@given(name=st.sampled_from(_ARRAY_NAMES), dtype=st.sampled_from(["<f8", "<i8", "<f4", "|b1", "<U3"]),
       shape=st.lists(st.integers(0, 5), max_size=3), fill=st.sampled_from([0.0, 1.0, -1.0, np.nan, np.inf, 1e308]))
def test_an_honest_result_with_one_array_replaced_is_refused_cleanly(tmp_path, name, dtype, shape, fill):
    from boinc_fakes import rewrite_result

    with np.errstate(invalid="ignore", over="ignore"):  # nan/inf/1e308 cast to ints: whatever numpy makes of it
        array = np.full(tuple(shape), fill).astype(dtype) if dtype != "<U3" else np.full(tuple(shape), "abc")
    checked = _check(tmp_path, rewrite_result(good_result(), arrays_update={name: array}))
    # only the sampler's efficiency (a report, used by nothing downstream) may be any finite number >= 0
    assert checked is None or (name == "eff" and array.shape == () and 0 <= float(array) < np.inf), checked
