"""Alert packets (ZTF Avro, VOEvent 2.0) and the cross-match providers, offline (server.transients)."""

from __future__ import annotations

import io

import numpy as np
import pandas as pd
import pytest

from server.transients import alerts
from server.transients.crossmatch import (
    NedProvider,
    SkybotProvider,
    StarCatalogProvider,
    cross_match,
)

ZTF_DIR = "/work/shared/ztf-alerts"


def _packet(rng, n_prev=2, crossmatch=None):
    det = alerts.AlertDetection(candid=1234567, jd=2460700.5, band="V", ra_deg=150.01, dec_deg=20.02,
                                isdiffpos=True, mag=17.3, mag_err=0.08, snr=12.5, pid=42, x=100.2, y=80.7,
                                fwhm_px=3.1, elongation=1.1, rb=0.93, pos_err_arcsec=0.3)
    prev = tuple(alerts.AlertDetection(candid=1000 + i, jd=2460690.5 + i, band="V", ra_deg=150.01, dec_deg=20.02,
                                       isdiffpos=True, mag=18.0 - 0.1 * i, mag_err=0.1, snr=6.0, pid=30 + i)
                 for i in range(n_prev))
    cut = rng.normal(size=(63, 63, 3)).astype(np.float32)
    cut[:3, :, 0] = np.nan  # edge padding survives the round trip
    return alerts.AlertPacket(object_id="OA26aaabc", detection=det, previous=prev, reference_id=7,
                              reference_jd_start=2460600.5, reference_jd_end=2460650.5, reference_n_frames=12,
                              cutouts=cut, crossmatch=crossmatch or {}, rb_version="test-scorer")


def test_our_avro_alert_reads_back_with_fastavro_against_the_ztf_schema():
    rng = np.random.default_rng(1)
    p = _packet(rng)
    data = alerts.write_avro(p)
    [rec] = alerts.read_avro(data)
    assert rec["schemavsn"] == "4.02" and rec["objectId"] == "OA26aaabc" and rec["candid"] == 1234567
    c = rec["candidate"]
    assert c["isdiffpos"] == "t" and c["rb"] == pytest.approx(0.93) and c["ndethist"] == 3
    assert c["magpsf"] == pytest.approx(17.3, abs=1e-5) and c["fid"] == alerts.BAND_FID["V"]
    assert [d["candid"] for d in rec["prv_candidates"]] == [1000, 1001]
    for i, key in enumerate(("cutoutScience", "cutoutTemplate", "cutoutDifference")):
        np.testing.assert_array_equal(alerts.read_cutout(rec[key]), p.cutouts[..., i])


def test_our_cutouts_have_the_layout_of_the_ztf_sample_alerts():
    import glob

    import fastavro

    p = _packet(np.random.default_rng(4))
    [ours] = alerts.read_avro(alerts.write_avro(p))
    paths = sorted(glob.glob(f"{ZTF_DIR}/*.avro"))
    assert paths
    for path in paths:
        with open(path, "rb") as fh:
            [rec] = list(fastavro.reader(fh))  # their own (older or equal) schema version
        for key in ("cutoutScience", "cutoutTemplate", "cutoutDifference"):
            assert alerts.read_cutout(rec[key]).shape == alerts.read_cutout(ours[key]).shape == (63, 63)
            assert rec[key]["stampData"][:2] == ours[key]["stampData"][:2] == b"\x1f\x8b"  # gzipped FITS


def test_avro_writer_refuses_a_record_that_breaks_the_schema():
    p = _packet(np.random.default_rng(2))
    bad = alerts.AlertPacket(**{**p.__dict__, "cutouts": np.zeros((32, 32, 3))})
    with pytest.raises(ValueError, match="63, 63, 3"):
        alerts.write_avro(bad)


def test_voevent_packet_validates_against_the_voevent_2_schema():
    p = _packet(np.random.default_rng(3), crossmatch={"skipped": ["ned", "sdss"], "results": []})
    xml = alerts.voevent_xml(p)
    alerts.validate_voevent(xml)
    assert b'role="observation"' in xml and b"crossmatch_skipped" in xml and b"150.0100000" in xml
    # the validator is not a rubber stamp: a packet without its required WhereWhen coordinates fails
    broken = xml.replace(b"<C1>", b"<Cx>").replace(b"</C1>", b"</Cx>")
    with pytest.raises(ValueError, match="VOEvent 2.0"):
        alerts.validate_voevent(broken)


def test_star_provider_vetoes_a_catalog_star_and_passes_empty_sky():
    from server.image.catalogs import DataFrameCatalog

    cat = DataFrameCatalog(pd.DataFrame({"ra": [150.0], "dec": [20.0], "mag": [14.2]}))
    stars = StarCatalogProvider(cat, radius_arcsec=2.0)
    hit = cross_match([stars], 150.0 + 1.0 / 3600 / np.cos(np.radians(20)), 20.0, 2460700.5)
    assert hit.vetoed and hit.results[0].matches[0].separation_arcsec == pytest.approx(1.0, abs=1e-3)
    miss = cross_match([stars], 150.0, 20.0 + 3.0 / 3600, 2460700.5)
    assert not miss.vetoed and miss.results[0].status == "no_match"


def test_online_providers_in_offline_mode_say_they_skipped(tmp_path):
    rep = cross_match([SkybotProvider(radius_arcsec=10, cache_dir=tmp_path, offline=True),
                       NedProvider(radius_arcsec=5, cache_dir=tmp_path, offline=True)], 10.0, -5.0, 2460700.5)
    assert [r.status for r in rep.results] == ["skipped", "skipped"]
    assert rep.skipped == ["skybot", "ned"] and not rep.vetoed
    assert "offline" in rep.results[0].message


def test_online_provider_logic_with_a_fake_service_caches_and_reports_errors(tmp_path):
    calls = []

    def fake_skybot(ra, dec, jd, radius):
        calls.append((ra, dec, jd))
        return [{"kind": "solar_system", "name": "(433) Eros", "ra": ra + 4.0 / 3600, "dec": dec},
                {"kind": "solar_system", "name": "far away", "ra": ra + 0.1, "dec": dec}]

    prov = SkybotProvider(radius_arcsec=10, cache_dir=tmp_path, offline=False, fetch=fake_skybot)
    first = prov.match(10.0, 0.0, 2460700.5)
    assert first.status == "matched" and [m.name for m in first.matches] == ["(433) Eros"]
    # the same query again comes from the disk cache (also in offline mode)
    offline = SkybotProvider(radius_arcsec=10, cache_dir=tmp_path, offline=True, fetch=fake_skybot)
    assert offline.match(10.0, 0.0, 2460700.5).status == "matched" and len(calls) == 1
    assert cross_match([prov], 10.0, 0.0, 2460700.5).vetoed

    def down(*a):
        raise ConnectionError("service unreachable")

    err = NedProvider(radius_arcsec=5, cache_dir=tmp_path, offline=False, fetch=down).match(1.0, 1.0, 0.0)
    assert err.status == "error" and "unreachable" in err.message and err.matches == ()
    galaxy = NedProvider(radius_arcsec=5, offline=False,
                         fetch=lambda ra, dec, jd, r: [{"kind": "galaxy", "name": "NGC 1", "ra": ra, "dec": dec}])
    rep = cross_match([galaxy], 1.0, 1.0, 0.0)
    assert not rep.vetoed and rep.host.name == "NGC 1"  # a host galaxy does not veto a supernova
    with pytest.raises(ValueError, match="dec"):
        galaxy.match(1.0, 95.0, 0.0)
