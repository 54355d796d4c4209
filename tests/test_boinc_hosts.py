"""`openastro boinc hosts`: which attached hosts can take work (server.boinc.hosts), from BOINC's host table.

The host rows are what real clients report (tests/..shared boinc-captures/init_data.xml's host_info for the Debian
client: os_name "Linux Debian", os_version "... [6.18.44-fc-v769|libc 2.36]", p_vendor GenuineIntel); the Windows,
Mac and Raspberry Pi rows follow the same fields as those clients fill them.
"""

from __future__ import annotations

import json

import pytest

from server.boinc.hosts import (AppVersionRow, HostRow, attach_floors, format_report, glibc_of, host_platforms,
                                reach, usable_versions, version_floors)

NOW = 1_800_000_000
DAY = 86400


def host(i=1, os_name="Linux Debian", os_version="Debian GNU/Linux 12 (bookworm) [6.18.44-fc-v769|libc 2.36]",
         vendor="GenuineIntel", model="Intel(R) Xeon(R) Processor [Family 6 Model 167 Stepping 1]", credit=100.0,
         age_days=1.0, misc='{"client_version": "7.20.5"}') -> HostRow:
    return HostRow(i, os_name, os_version, vendor, model, 8, 16 * 2**30, int(NOW - age_days * DAY), credit, misc)


LINUX = AppVersionRow(100, "x86_64-pc-linux-gnu", glibc_floor=(2, 30))


def test_the_glibc_a_linux_client_reports_is_read_from_its_os_version():
    assert glibc_of("Debian GNU/Linux 12 (bookworm) [6.1.0-18-amd64|libc 2.36]") == (2, 36)
    assert glibc_of("Ubuntu 18.04.6 LTS [4.15.0|libc 2.27 (Ubuntu GLIBC 2.27-3ubuntu1.6)]") == (2, 27)
    assert glibc_of("Microsoft Windows 11 Professional x64 Edition, (10.00.22631.00)") is None


@pytest.mark.parametrize("os_name, vendor, model, family, primary", [
    ("Linux Debian", "GenuineIntel", "Intel(R) Xeon(R)", "linux", "x86_64-pc-linux-gnu"),
    ("Linux Raspbian", "ARM", "Cortex-A72 [Impl 0x41 Arch 8 Variant 0x0 Part 0xd08 Rev 3]", "linux",
     "aarch64-unknown-linux-gnu"),
    ("Microsoft Windows 11", "AuthenticAMD", "AMD Ryzen 7 5800X 8-Core Processor", "windows", "windows_x86_64"),
    ("Darwin", "Apple", "Apple M2 [x86 Family 0 Model 0 Stepping 0]", "macos", "arm64-apple-darwin"),
    ("Darwin", "GenuineIntel", "Intel(R) Core(TM) i7-8700B", "macos", "x86_64-apple-darwin"),
    ("Android", "ARM", "Snapdragon 865", "android", "aarch64-android-linux-gnu"),
])
def test_platforms_are_inferred_as_the_client_asks_for_them(os_name, vendor, model, family, primary):
    fam, platforms = host_platforms(host(os_name=os_name, vendor=vendor, model=model, os_version=""))
    assert fam == family and platforms[0] == primary


def test_a_linux_host_below_the_glibc_floor_cannot_take_the_version_and_the_reason_says_so():
    old = host(os_version="Ubuntu 18.04.6 LTS [4.15.0|libc 2.27]")
    usable, why = usable_versions(old, [LINUX])
    assert usable == () and why == "glibc 2.27 < x86_64-pc-linux-gnu floor 2.30"
    assert usable_versions(host(), [LINUX]) == ((LINUX,), "")
    # a deprecated version is never offered
    assert usable_versions(host(), [AppVersionRow(100, "x86_64-pc-linux-gnu", deprecated=True)])[0] == ()


def test_a_container_plan_class_needs_docker_or_podman_on_the_host():
    mac = dict(os_name="Darwin", vendor="Apple", model="Apple M1", os_version="")
    container = AppVersionRow(101, "arm64-apple-darwin", plan_class="docker")
    assert usable_versions(host(**mac), [container])[1] == "arm64-apple-darwin docker needs Docker/Podman"
    with_podman = host(**mac, misc=json.dumps({"docker": {"version": "5.0.2", "type": 2}}))
    assert usable_versions(with_podman, [container]) == ((container,), "")


def test_reach_counts_the_share_of_active_hosts_and_of_their_credit_with_no_usable_version():
    hosts = [host(1, credit=100.0),
             host(2, os_name="Microsoft Windows 10", vendor="GenuineIntel", os_version="", credit=300.0),
             host(3, os_name="Microsoft Windows 10", vendor="GenuineIntel", os_version="", credit=1e6, age_days=90),
             host(4, os_version="CentOS 7 [3.10|libc 2.17]", credit=100.0)]
    report = reach(hosts, [LINUX], now=NOW, active_days=30)
    assert [h.host.id for h in report.active] == [1, 2, 4]
    assert report.share_without_version() == pytest.approx((2 / 3, 400 / 500))
    assert report.by_platform() == {"x86_64-pc-linux-gnu": 2, "windows_x86_64": 1}
    lines = format_report(report, [LINUX])
    assert lines[0] == "app versions: 1.00 x86_64-pc-linux-gnu glibc >= 2.30"
    assert lines[-1] == "with no usable app version: 66.7% of active hosts, 80.0% of their recent credit"
    assert "none: no app version for windows (windows_x86_64, windows_intelx86)" in lines[3]


def test_glibc_floors_come_from_the_dot_file_boinc_package_writes_beside_each_version(tmp_path):
    d = tmp_path / "apps" / "openastro_app" / "1.02" / "x86_64-pc-linux-gnu"
    d.mkdir(parents=True)
    (d / ".openastro.json").write_text(json.dumps({"glibc_floor": "2.28"}))
    w = tmp_path / "apps" / "openastro_app" / "1.02" / "windows_x86_64"
    w.mkdir()
    (w / ".openastro.json").write_text(json.dumps({"glibc_floor": None}))
    floors = version_floors(tmp_path, "openastro_app")
    assert floors == {("1.02", "x86_64-pc-linux-gnu"): (2, 28), ("1.02", "windows_x86_64"): None}
    rows = attach_floors([(102, "x86_64-pc-linux-gnu", "", 0), (102, "windows_x86_64", "", 0)], floors)
    assert rows[0].glibc_floor == (2, 28) and rows[1].glibc_floor is None


def test_a_host_row_from_boincs_database_tolerates_null_columns():
    row = HostRow.from_db((7, None, None, None, None, None, None, None, None, None))
    assert row == HostRow(7, "", "", "", "", 0, 0.0, 0, 0.0, "")
    assert reach([row], [LINUX], now=NOW).hosts[0].why_not == "no app version for unknown (platform unknown)"
