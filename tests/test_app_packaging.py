"""`openastro boinc package`: version checks, layout and refusal to overwrite (tiny bundle)."""

from __future__ import annotations

import stat
import zipfile

import pytest
from click.testing import CliRunner

from server.boinc import package as bp
from server.cli import main as cli_main


def _tiny_bundle(root):
    bundle = root / "dist" / "openastro_app"
    (bundle / "_internal").mkdir(parents=True)
    exe = bundle / "openastro_app"
    exe.write_text("#!/bin/sh\necho openastro-app 0.0\n")
    exe.chmod(0o755)
    (bundle / "_internal" / "base_library.zip").write_bytes(b"PK\x05\x06" + b"\0" * 18)
    libs = bundle / "_internal" / "numpy.libs"
    libs.mkdir()
    (libs / "libopenblas.so").write_bytes(b"\x7fELF")
    (bundle / "_internal" / "libopenblas.so").symlink_to("numpy.libs/libopenblas.so")
    return bundle


@pytest.mark.parametrize("version", ["1", "1.0", "1.000", "v1.00", "", "1.0a"])
def test_version_must_look_like_x_yy(version):
    with pytest.raises(ValueError, match="X.YY"):
        bp.check_version(version)


def test_platform_names_follow_the_boinc_contract():
    assert bp.platform_name("Linux", "x86_64") == "x86_64-pc-linux-gnu"
    assert bp.platform_name("Linux", "aarch64") == "aarch64-unknown-linux-gnu"
    assert bp.platform_name("Windows", "AMD64") == "windows_x86_64"
    assert bp.platform_name("Darwin", "x86_64") == "x86_64-apple-darwin"
    assert bp.platform_name("Darwin", "arm64") == "arm64-apple-darwin"
    with pytest.raises(bp.PackagingError, match="no BOINC platform"):
        bp.platform_name("SunOS", "sparc")


def test_wrapper_without_a_platform_name_gets_a_content_hashed_physical_name(tmp_path):
    wrapper = tmp_path / "wrapper"
    wrapper.write_bytes(b"binary")
    names = bp.physical_names("2.03", "x86_64-pc-linux-gnu", wrapper)
    assert names["wrapper"].startswith("wrapper_") and names["wrapper"].endswith("_x86_64-pc-linux-gnu")
    assert names["zip"] == "openastro_app_2.03_x86_64-pc-linux-gnu.zip"
    assert names["job"] == "openastro_app_job_2.03_x86_64-pc-linux-gnu.xml"
    wrapper.write_bytes(b"another binary")
    assert bp.physical_names("2.03", "x86_64-pc-linux-gnu", wrapper)["wrapper"] != names["wrapper"]


def test_windows_job_xml_runs_the_exe():
    assert "<application>openastro_app/openastro_app.exe</application>" in bp.render_job_xml("windows_x86_64")


def test_cli_package_lays_out_the_version_and_refuses_to_overwrite(tmp_path):
    bundle = _tiny_bundle(tmp_path)
    wrapper = tmp_path / "wrapper_26016_x86_64-pc-linux-gnu"
    wrapper.write_bytes(b"wrapper")
    apps = tmp_path / "apps"
    args = ["boinc", "package", "--version", "1.01", "--wrapper", str(wrapper),
            "--apps-dir", str(apps), "--bundle", str(bundle)]
    runner = CliRunner()
    result = runner.invoke(cli_main, args, env={"OPENASTRO_VAR_DIR": str(tmp_path / "var")})
    assert result.exit_code == 0, result.output
    target = apps / "openastro_app" / "1.01" / "x86_64-pc-linux-gnu"
    assert "app version laid out in" in result.output
    assert (target / "wrapper_26016_x86_64-pc-linux-gnu").read_bytes() == b"wrapper"
    with zipfile.ZipFile(target / "openastro_app_1.01_x86_64-pc-linux-gnu.zip") as archive:
        info = archive.getinfo("openastro_app/openastro_app")
        assert stat.S_IMODE(info.external_attr >> 16) == 0o755
        names = archive.namelist()
        assert "openastro_app/_internal/base_library.zip" in names
        # PyInstaller's in-bundle convenience links are left out; the real file is kept once
        assert "openastro_app/_internal/numpy.libs/libopenblas.so" in names
        assert "openastro_app/_internal/libopenblas.so" not in names
        assert all(i.date_time == (1980, 1, 1, 0, 0, 0) for i in archive.infolist())
    again = runner.invoke(cli_main, args, env={"OPENASTRO_VAR_DIR": str(tmp_path / "var")})
    assert again.exit_code != 0 and "already exists" in again.output
    assert not list((apps / "openastro_app" / "1.01").glob(".openastro-build-*"))


def test_package_refuses_a_missing_wrapper(tmp_path):
    with pytest.raises(bp.PackagingError, match="wrapper .* does not exist"):
        bp.package_app_version(tmp_path / "apps", "1.00", tmp_path / "no_wrapper",
                               bundle_dir=_tiny_bundle(tmp_path))
