"""The ingest service: detection by content, content-hash dedup, one transaction per file, nothing left behind
by a failure, and one record when the same content is ingested concurrently."""

from __future__ import annotations

import gzip
import threading
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from astropy.io import fits
from sqlalchemy import func, select

from ingest_samples import CSV_HEADER, ETD_TEXT, HEADER, astrobin_header, csv_row, ext_row, record, small_image
from server.core.context import OpenAstro
from server.core.db.models import Instrument, Observation, PhotometryPoint, Site, Target, TransitTime
from server.ingest.service import IngestError, IngestOptions, ingest_path


@pytest.fixture
def db_app(settings, any_db_url):
    """The application on a fresh migrated database: SQLite, and a real MariaDB server (marker 'mariadb')."""
    app = OpenAstro(settings.with_overrides(database_url=any_db_url))
    app.db.upgrade()
    yield app
    app.db.engine.dispose()


def count(app, model) -> int:
    with app.db.session() as s:
        return s.scalar(select(func.count()).select_from(model))


def fits_file(path: Path, seed: int = 0, **cards) -> Path:
    h = astrobin_header()
    for key, value in cards.items():
        h[key] = value
    fits.PrimaryHDU(small_image(seed), h).writeto(path)
    return path


def add_site(app, name="Backyard") -> int:
    with app.db.session() as s:
        site = Site(name=name, latitude_deg=45.5, longitude_deg=-71.25, height_m=350.0)
        s.add(site)
        s.flush()
        return site.id


def test_fits_ingest_records_metadata_stores_raw_bytes_and_links_target_and_instrument(db_app, tmp_path):
    site_id = add_site(db_app)
    path = fits_file(tmp_path / "light.fits")
    result = ingest_path(db_app, path, IngestOptions(site_id=site_id))
    assert result.created and result.kind == "image" and result.source_format == "fits"
    assert db_app.store.path(result.storage_key).read_bytes() == path.read_bytes()
    with db_app.db.session() as s:
        obs = s.get(Observation, result.observation_id)
        # MariaDB DATETIME keeps whole seconds (models.py has no fsp=6); mjd and meta keep the sub-second part
        assert obs.date_obs.replace(microsecond=0).isoformat() == "2024-03-05T21:10:11" and obs.exptime == 120.0
        assert obs.mjd == pytest.approx(60374.0 + 76211.5 / 86400, abs=1e-9)
        assert obs.meta["fits"]["date_obs"] == "2024-03-05T21:10:11.500000+00:00"
        assert obs.filter == "V" and obs.binning == 2 and obs.gain == 0.25 and obs.site_id == site_id
        assert obs.target.name == "SS Cyg" and obs.target.ra_deg == pytest.approx(325.6783333, abs=1e-6)
        assert obs.instrument.camera == "ZWO ASI2600MM Pro"
        assert obs.instrument.pixel_scale_arcsec == pytest.approx(206.264806 * 3.76 / 250.0)
        assert obs.meta["fits"]["gain_setting"] == 100 and obs.status == "ingested"


def test_same_file_twice_returns_the_first_record_not_a_copy(db_app, tmp_path):
    path = fits_file(tmp_path / "a.fits")
    first = ingest_path(db_app, path)
    copy = tmp_path / "renamed.fit"
    copy.write_bytes(path.read_bytes())
    again = ingest_path(db_app, path)
    renamed = ingest_path(db_app, copy)
    assert first.created and not again.created and not renamed.created
    assert first.observation_id == again.observation_id == renamed.observation_id
    assert count(db_app, Observation) == 1 and count(db_app, Target) == 1 and len(list(db_app.store.keys())) == 1


def test_compressed_fz_is_ingested_as_fits_fz(oa_app, tmp_path):
    path = tmp_path / "a.fits.fz"
    fits.HDUList([fits.PrimaryHDU(), fits.CompImageHDU(small_image(), astrobin_header(),
                                                       compression_type="RICE_1")]).writeto(path)
    result = ingest_path(oa_app, path)
    assert result.source_format == "fits.fz" and result.kind == "image"


def bad_files(tmp_path: Path) -> dict[str, Path]:
    out = {}
    out["not_fits"] = tmp_path / "not.fits"
    out["not_fits"].write_bytes(b"GIF89a" + bytes(3000))
    good = fits_file(tmp_path / "good.fits", seed=3)
    out["truncated"] = tmp_path / "truncated.fits"
    out["truncated"].write_bytes(good.read_bytes()[:6000])
    h = fits.Header()
    h["SIMPLE"], h["BITPIX"], h["NAXIS"], h["NAXIS1"], h["NAXIS2"] = True, -64, 2, 10**7, 10**7
    out["absurd"] = tmp_path / "absurd.fits"
    out["absurd"].write_bytes(h.tostring().encode())
    out["no_date"] = tmp_path / "nodate.fits"
    fits.PrimaryHDU(small_image()).writeto(out["no_date"])
    out["gzip"] = tmp_path / "frame.fits.gz"
    out["gzip"].write_bytes(gzip.compress(good.read_bytes()))
    out["empty"] = tmp_path / "empty.csv"
    out["empty"].write_bytes(b"")
    return out


@pytest.mark.parametrize("case, reason", [
    ("not_fits", "not a FITS file"), ("truncated", "truncated"), ("absurd", "above the limit"),
    ("no_date", "neither DATE-OBS nor MJD-OBS"), ("empty", "empty file"), ("gzip", "gzip-compressed"),
])
def test_bad_files_give_a_clear_error_and_leave_nothing_behind(db_app, tmp_path, case, reason):
    path = bad_files(tmp_path)[case]
    with pytest.raises(IngestError, match=reason):
        ingest_path(db_app, path)
    assert count(db_app, Observation) == 0 and count(db_app, Target) == 0
    assert list(db_app.store.keys()) == [] and list((db_app.store.root / "tmp").iterdir()) == []


def test_kind_is_detected_by_content_not_extension(oa_app, tmp_path):
    fits_named_txt = tmp_path / "frame.txt"
    fits_named_txt.write_bytes(fits_file(tmp_path / "x.fits").read_bytes())
    report_named_fits = tmp_path / "report.fits"
    report_named_fits.write_text(HEADER.format(delim=",", date="JD") + ext_row() + "\n")
    assert ingest_path(oa_app, fits_named_txt).source_format == "fits"
    assert ingest_path(oa_app, report_named_fits).source_format == "aavso-extended"


def test_aavso_extended_rows_become_photometry_points_and_bad_rows_are_reported(db_app, tmp_path):
    path = tmp_path / "report.txt"
    rows = [ext_row(), ext_row(date="2450702.2", mag="<14.5", filt="V"), ext_row(date="bad"),
            ext_row(star="RR Lyr", date="2450703.5", mag="7.9")]
    path.write_text(HEADER.format(delim=",", date="JD") + "\n".join(rows) + "\n")
    result = ingest_path(db_app, path)
    assert result.kind == "photometry" and result.n_rows == 3
    assert [e.line for e in result.row_errors] == [10]
    with db_app.db.session() as s:
        points = s.scalars(select(PhotometryPoint).order_by(PhotometryPoint.jd_utc)).all()
        assert [p.band for p in points] == ["B", "V", "B"] and [p.is_upper_limit for p in points] == [False, True, False]
        assert points[0].jd_utc == pytest.approx(2450702.1234) and points[0].observer_code == "TST01"
        assert {p.target_id for p in points[:2]} != {points[2].target_id}
        obs = s.get(Observation, result.observation_id)
        assert obs.meta["n_errors"] == 1 and obs.meta["errors"][0]["line"] == 10
        assert obs.date_obs.isoformat().startswith("1997-09-")


def test_aavso_hjd_dates_are_converted_back_to_jd_utc_when_the_target_has_coordinates(oa_app, tmp_path):
    from server.core.timeconv import utc_to_hjd_utc

    ra, dec = 325.6783, 43.5861  # SS Cyg
    with oa_app.db.session() as s:
        s.add(Target(name="SS CYG", ra_deg=ra, dec_deg=dec, kind="variable"))
    truth_jd = np.array([2459000.31234, 2459100.75])  # injected JD_UTC
    hjd = utc_to_hjd_utc(truth_jd, ra_deg=ra, dec_deg=dec, site=None, time_format="jd", geocenter=True)
    assert np.all(np.abs(hjd - truth_jd) * 86400 > 30)  # the heliocentric correction is ~1-5 min here
    path = tmp_path / "hjd.txt"
    path.write_text(HEADER.format(delim=",", date="HJD") +
                    "\n".join(ext_row(date=f"{h:.8f}") for h in hjd) + "\n")
    result = ingest_path(oa_app, path)
    with oa_app.db.session() as s:
        points = s.scalars(select(PhotometryPoint).order_by(PhotometryPoint.jd_utc)).all()
        got = np.array([p.jd_utc for p in points])
        # recovered within 1e-7 d (8.6 ms): the 8-decimal HJD in the file is the limit
        assert result.n_rows == 2 and np.allclose(got, truth_jd, atol=1e-7, rtol=0)
        assert all(p.bjd_tdb is not None for p in points)


def test_aavso_hjd_rows_without_known_coordinates_fail_clearly(oa_app, tmp_path):
    path = tmp_path / "hjd.txt"
    path.write_text(HEADER.format(delim=",", date="HJD") + ext_row(star="NEW STAR") + "\n")
    with pytest.raises(IngestError, match="no coordinates are known for 'NEW STAR'"):
        ingest_path(oa_app, path)
    assert count(oa_app, Observation) == 0 and count(oa_app, Target) == 0 and list(oa_app.store.keys()) == []


def test_aavso_download_csv_becomes_points_with_upper_limits(oa_app, tmp_path):
    path = tmp_path / "aavsodata.csv"
    path.write_text("\n".join([CSV_HEADER, csv_row(), csv_row(jd="2459001.5", mag="<13.9"), csv_row(jd="x")]) + "\n")
    result = ingest_path(oa_app, path)
    assert result.source_format == "aavso-csv" and result.n_rows == 2 and len(result.row_errors) == 1
    with oa_app.db.session() as s:
        limits = s.scalars(select(PhotometryPoint.is_upper_limit).order_by(PhotometryPoint.jd_utc)).all()
        assert limits == [False, True]


def test_etd_table_becomes_bjd_tdb_transit_times(db_app, tmp_path):
    from server.core.timeconv import hjd_utc_to_bjd_tdb

    path = tmp_path / "wasp12.csv"
    path.write_text(ETD_TEXT)
    result = ingest_path(db_app, path)
    assert result.kind == "transit_times" and result.n_rows == 3 and len(result.row_errors) == 6
    with db_app.db.session() as s:
        times = s.scalars(select(TransitTime).order_by(TransitTime.epoch)).all()
        target = s.get(Target, times[0].target_id)
        assert target.name == "WASP-12" and [t.planet for t in times] == ["b"] * 3
        assert [t.epoch for t in times] == [1850, 1851, 1857] and times[0].source == "etd:Jane Observer"
        hjd = np.array([2457049.46712, 2457050.55923, 2457057.0])
        expected = hjd_utc_to_bjd_tdb(hjd, ra_deg=target.ra_deg, dec_deg=target.dec_deg).bjd_tdb
        got = np.array([t.t_obs for t in times])
        assert np.allclose(got, expected, atol=1e-9, rtol=0)
        # BJD_TDB - HJD_UTC is TT-UTC (69.184 s in 2015) plus a barycentre-heliocentre term of a few seconds
        assert np.all(np.abs((got - hjd) * 86400 - 69.184) < 5.0)
        assert times[0].sigma == pytest.approx(0.00055) and times[0].flag == "DQ2"
        assert times[0].t_pred == pytest.approx(times[0].t_obs - 0.0012)
    again = tmp_path / "wasp12-again.csv"
    again.write_text(ETD_TEXT.replace("# Exoplanet", "# re-export of the Exoplanet"))
    with pytest.raises(IngestError, match=r"3 refused when recording(.|\n)*epoch 1850 from 'etd:Jane Observer' is already"):
        ingest_path(db_app, again)
    assert count(db_app, TransitTime) == 3 and count(db_app, Observation) == 1


def test_etd_hjd_without_coordinates_is_refused_and_leaves_nothing(db_app, tmp_path):
    path = tmp_path / "etd.csv"
    path.write_text("#planet=XO-1 b\nEpoch,HJD-2400000,Error\n1,57049.5,0.001\n")
    with pytest.raises(IngestError, match="need the star's coordinates"):
        ingest_path(db_app, path)
    assert count(db_app, Observation) == 0 and count(db_app, Target) == 0 and list(db_app.store.keys()) == []


def test_etd_without_planet_name_uses_the_option(oa_app, tmp_path):
    path = tmp_path / "etd.csv"
    path.write_text("Epoch,BJD_TDB,Error\n1,2459049.5,0.001\n2,2459050.6,0.001\n")
    with pytest.raises(IngestError, match="does not name the planet"):
        ingest_path(oa_app, path)
    result = ingest_path(oa_app, path, IngestOptions(planet="KELT-9 b"))
    assert result.n_rows == 2


def test_mpc_records_are_stored_as_an_astrometry_observation_with_a_plain_csv(oa_app, tmp_path):
    path = tmp_path / "obs.txt"
    path.write_text("\n".join(["COD H01", record(number="00433", mag="11.2", band="R"),
                               record(number="00433", date="2024 01 02.22345"), record(number="00433", ra="99")]))
    result = ingest_path(oa_app, path)
    assert result.kind == "astrometry" and result.n_rows == 2 and [e.line for e in result.row_errors] == [4]
    with oa_app.db.session() as s:
        obs = s.get(Observation, result.observation_id)
        key = obs.meta["astrometry"]["records_key"]
        assert obs.target.name == "433" and obs.meta["astrometry"]["observatories"] == ["H01"]
    records = pd.read_csv(oa_app.store.path(key))
    assert list(records["designation"]) == [433, 433] and records["ra_deg"].iloc[0] == pytest.approx(78.13801375)


def test_concurrent_ingests_of_the_same_content_produce_one_record(db_app, tmp_path):
    paths = []
    for i in range(6):
        p = tmp_path / f"copy{i}.fits"
        p.write_bytes(fits_file(tmp_path / "src.fits").read_bytes() if i == 0 else paths[0].read_bytes())
        paths.append(p)
    barrier = threading.Barrier(len(paths))
    results, failures = [], []

    def work(p):
        barrier.wait()
        try:
            results.append(ingest_path(db_app, p))
        except Exception as exc:  # noqa: BLE001 - collected and asserted on below
            failures.append(exc)

    threads = [threading.Thread(target=work, args=(p,)) for p in paths]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert failures == []
    assert len({r.observation_id for r in results}) == 1 and sum(r.created for r in results) == 1
    assert count(db_app, Observation) == 1 and count(db_app, Target) == 1 and count(db_app, Instrument) == 0
