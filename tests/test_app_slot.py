"""BOINC slot handling: soft-link stubs for inputs and outputs, init_data.xml, standalone defaults."""

from __future__ import annotations

import pytest

from app import slot
from app_workunits import CAPTURED_INIT_DATA, init_data_xml


def test_captured_init_data_gives_period_ncpus_and_bounds():
    config = slot.parse_init_data(CAPTURED_INIT_DATA.read_text())
    assert config.under_boinc
    assert config.checkpoint_period_s == 60.0
    assert config.ncpus == 1
    assert config.rsc_memory_bound == 5e8
    assert config.rsc_disk_bound == 5e8
    assert config.wu_name == "oa_py_copy_1"
    assert config.result_name == "oa_py_copy_1_0"


def test_fractional_or_overridden_ncpus_round_to_at_least_one():
    assert slot.parse_init_data(init_data_xml("w", ncpus=0.5)).ncpus == 1
    assert slot.parse_init_data(init_data_xml("w", ncpus=4)).ncpus == 4
    assert slot.parse_init_data(init_data_xml("w", checkpoint_period=7)).checkpoint_period_s == 7.0


def test_missing_init_data_means_standalone_defaults(tmp_path):
    config = slot.load_slot_config(tmp_path)
    assert not config.under_boinc
    assert (config.checkpoint_period_s, config.ncpus) == (60.0, 1)
    assert config.wu_name is None


def test_malformed_init_data_names_the_problem():
    with pytest.raises(ValueError, match="not well-formed"):
        slot.parse_init_data("<app_init_data><ncpus>1")
    with pytest.raises(ValueError, match="<ncpus> is not a number"):
        slot.parse_init_data("<app_init_data><ncpus>many</ncpus></app_init_data>")
    with pytest.raises(ValueError, match="expected <app_init_data>"):
        slot.parse_init_data("<other/>")


def _project_and_slot(tmp_path):
    project = tmp_path / "projects" / "host_proj"
    slot_dir = tmp_path / "slots" / "1"
    project.mkdir(parents=True)
    slot_dir.mkdir(parents=True)
    return project, slot_dir


def test_input_stub_resolves_to_project_file(tmp_path):
    project, slot_dir = _project_and_slot(tmp_path)
    (project / "in_phys_1.fits").write_bytes(b"SIMPLE  =                    T")
    (slot_dir / "in.fits").write_text("<soft_link>../../projects/host_proj/in_phys_1.fits</soft_link>\n")
    resolved = slot.resolve_input(slot_dir, "in.fits")
    assert resolved.via_stub
    assert resolved.path.resolve() == (project / "in_phys_1.fits").resolve()


def test_copied_input_is_read_in_place(tmp_path):
    _, slot_dir = _project_and_slot(tmp_path)
    (slot_dir / "in.txt").write_text("oa_py input copy_1: m31 field 42\n")
    resolved = slot.resolve_input(slot_dir, "in.txt")
    assert not resolved.via_stub and resolved.path == slot_dir / "in.txt"


def test_missing_input_or_dangling_stub_raises_file_not_found(tmp_path):
    _, slot_dir = _project_and_slot(tmp_path)
    with pytest.raises(FileNotFoundError, match="'absent.fits' not found"):
        slot.resolve_input(slot_dir, "absent.fits")
    (slot_dir / "in.fits").write_text("<soft_link>../../projects/host_proj/gone</soft_link>")
    with pytest.raises(FileNotFoundError, match="does not exist"):
        slot.resolve_input(slot_dir, "in.fits")


def test_malformed_stub_is_an_error_not_data(tmp_path):
    _, slot_dir = _project_and_slot(tmp_path)
    (slot_dir / "in.fits").write_text("<soft_link>../../projects/x")
    with pytest.raises(ValueError, match="malformed BOINC soft-link stub"):
        slot.resolve_input(slot_dir, "in.fits")


def test_output_stub_is_written_through_to_its_target_not_over_the_stub(tmp_path):
    project, slot_dir = _project_and_slot(tmp_path)
    stub_text = "<soft_link>../../projects/host_proj/wu_1_0_r75024448_0</soft_link>\n"
    (slot_dir / "result.npz").write_text(stub_text)
    out = slot.resolve_output(slot_dir, "result.npz")
    assert out.via_stub
    assert out.path.resolve() == (project / "wu_1_0_r75024448_0").resolve()
    assert not out.path.exists()  # the client creates the stub; the target appears when written


def test_output_without_stub_goes_into_the_slot(tmp_path):
    _, slot_dir = _project_and_slot(tmp_path)
    out = slot.resolve_output(slot_dir, "result.npz")
    assert not out.via_stub and out.path == slot_dir / "result.npz"


def test_large_real_file_starting_like_a_stub_is_not_taken_for_one(tmp_path):
    _, slot_dir = _project_and_slot(tmp_path)
    (slot_dir / "big.txt").write_text("<soft_link>" + "x" * 5000)
    assert slot.read_stub_target(slot_dir / "big.txt") is None


def test_check_writable_refuses_a_path_that_is_not_a_directory(tmp_path):
    (tmp_path / "plain_file").write_text("x")
    with pytest.raises(OSError):
        slot.check_writable(tmp_path / "plain_file")
    with pytest.raises(FileNotFoundError):
        slot.check_writable(tmp_path / "missing_dir")


def test_check_writable_refuses_a_read_only_directory(tmp_path):
    import os

    locked = tmp_path / "locked"
    locked.mkdir()
    locked.chmod(0o555)
    try:
        if os.access(locked, os.W_OK):
            pytest.skip("running as a user that ignores directory permissions (root)")
        with pytest.raises(PermissionError):
            slot.check_writable(locked)
    finally:
        locked.chmod(0o755)
