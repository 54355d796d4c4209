"""Alert packets: ZTF-schema Avro (with the three cutouts) and VOEvent 2.0 XML.

Avro: one alert per Avro object container file, written with fastavro against the ZTF alert schema v4.02 kept in
``schema/`` (see schema/PROVENANCE.md), so ZTF broker software reads our alerts unchanged. Fields we fill (the
others are null): ``jd`` (exposure mid-time, JD UTC), ``fid`` (our band code, ``BAND_FID``), ``pid`` (observation
id), ``candid`` (candidate id), ``isdiffpos`` ('t' brighter, 'f' fainter), ``ra``/``dec``, ``magpsf``/``sigmapsf``
(difference magnitude, calibrated), ``xpos``/``ypos``, ``fwhm``, ``elong``, ``scorr`` (peak S_corr), ``rb``/``drb``
(the real-bogus score), ``rfid`` (reference id), ``jdstartref``/``jdendref``/``nframesref``, ``ndethist`` /
``ncovhist`` (detections of this position so far), ``ssdistnr``/``ssnamenr`` and ``distpsnr1`` from the
cross-match; ``prv_candidates`` carries the previous detections of the same object. Cutouts are 63x63 gzipped
FITS, as in ZTF alerts.

VOEvent: role ``observation`` (``test`` on request), ``Who`` with our author IVORN, ``What`` with the
measurements and the real-bogus score, ``WhereWhen`` in ``UTC-ICRS-TOPO``, ``Why`` with importance = rb.
``validate_voevent`` checks a packet against the IVOA VOEvent 2.0 XSD in ``schema/``.
"""

from __future__ import annotations

import datetime as dt
import gzip
import io
import json
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path

import numpy as np

SCHEMA_DIR = Path(__file__).resolve().parent / "schema"
SCHEMA_VERSION = "4.02"
PUBLISHER = "OpenAstro Compute"
IVORN_ROOT = "ivo://openastro.compute/transients"
#: ZTF uses 1 g, 2 r, 3 i; our other bands get codes of their own
BAND_FID = {"g": 1, "r": 2, "R": 2, "i": 3, "I": 3, "V": 4, "B": 5, "U": 6, "z": 7, "clear": 0, "L": 0}
VOEVENT_NS = "http://www.ivoa.net/xml/VOEvent/v2.0"


@dataclass(frozen=True)
class AlertDetection:
    """One detection of an object, as the alert formats need it (current or previous)."""

    candid: int
    jd: float
    band: str
    ra_deg: float
    dec_deg: float
    isdiffpos: bool
    mag: float | None
    mag_err: float | None
    snr: float
    pid: int
    x: float | None = None
    y: float | None = None
    fwhm_px: float | None = None
    elongation: float | None = None
    rb: float | None = None
    pos_err_arcsec: float | None = None  # 1-sigma position error (FWHM / S/N)


@dataclass(frozen=True)
class AlertPacket:
    object_id: str
    detection: AlertDetection
    previous: tuple[AlertDetection, ...]
    reference_id: int
    reference_jd_start: float
    reference_jd_end: float
    reference_n_frames: int
    cutouts: np.ndarray  # (63, 63, 3): science, reference, difference
    crossmatch: dict = field(default_factory=dict)  # CrossMatchReport.as_dict()
    rb_version: str = "none"


def _inline(node, defs: dict, seen: set):
    """The schema with each named sub-schema written out in full at its first use (later uses by name)."""
    if isinstance(node, str) and node in defs and node not in seen:
        seen.add(node)
        return _inline(defs[node], defs, seen)
    if isinstance(node, list):
        return [_inline(n, defs, seen) for n in node]
    if isinstance(node, dict):
        return {k: (_inline(v, defs, seen) if k in ("type", "items", "fields") else v) for k, v in node.items()}
    return node


@lru_cache(maxsize=1)
def alert_schema():
    """The parsed ZTF alert schema, its named sub-schemas (candidate, cutout, ...) inlined."""
    import fastavro

    defs = {}
    for name in ("cutout", "candidate", "prv_candidate", "fp_hist"):
        doc = json.loads((SCHEMA_DIR / f"{name}.avsc").read_text())
        defs[f"{doc['namespace']}.{doc['name']}"] = doc
    alert = json.loads((SCHEMA_DIR / "alert.avsc").read_text())
    return fastavro.parse_schema(_inline(alert, defs, set()))


def _null_fields(schema_name: str) -> dict:
    """Every field of a sub-schema set to None (the schema's default for the optional ones)."""
    doc = json.loads((SCHEMA_DIR / f"{schema_name}.avsc").read_text())
    return {f["name"]: None for f in doc["fields"]}


def cutout_fits_gz(image: np.ndarray, name: str) -> dict:
    from astropy.io import fits

    buf = io.BytesIO()
    hdu = fits.PrimaryHDU(np.asarray(image, dtype=np.float32))
    hdu.header["ORIGIN"] = (PUBLISHER, "cutout of a transient candidate")
    hdu.writeto(buf)
    return {"fileName": name, "stampData": gzip.compress(buf.getvalue(), mtime=0)}


def read_cutout(stamp: dict) -> np.ndarray:
    """Pixels of an alert cutout (ours or ZTF's: gzipped FITS)."""
    from astropy.io import fits

    import warnings

    from astropy.io.fits.verify import VerifyWarning

    raw = stamp["stampData"]
    data = gzip.decompress(raw) if raw[:2] == b"\x1f\x8b" else raw
    with warnings.catch_warnings():
        # ZTF's cutouts carry a SIMPLE card astropy finds non-standard; the pixels read correctly
        warnings.simplefilter("ignore", VerifyWarning)
        with fits.open(io.BytesIO(data)) as hdul:
            return np.asarray(hdul[0].data, dtype=np.float32)


def _fid(band: str) -> int:
    return BAND_FID.get(band, BAND_FID.get(band.lower(), 0))


def _candidate_record(d: AlertDetection, p: AlertPacket, n_hist: int) -> dict:
    rec = _null_fields("candidate")
    nearest_star = None
    sso = None
    for r in p.crossmatch.get("results", []):
        for m in r.get("matches", []):
            if m["kind"] == "star" and (nearest_star is None or m["separation_arcsec"] < nearest_star["separation_arcsec"]):
                nearest_star = m
            if m["kind"] == "solar_system" and sso is None:
                sso = m
    rec.update({
        "jd": d.jd, "fid": _fid(d.band), "pid": int(d.pid), "programid": 0, "candid": int(d.candid),
        "isdiffpos": "t" if d.isdiffpos else "f", "ra": d.ra_deg, "dec": d.dec_deg,
        "magpsf": float(d.mag) if d.mag is not None else float("nan"),
        "sigmapsf": float(d.mag_err) if d.mag_err is not None else float("nan"),
        "xpos": d.x, "ypos": d.y, "fwhm": d.fwhm_px, "elong": d.elongation, "scorr": d.snr,
        "rb": d.rb, "drb": d.rb, "ranr": d.ra_deg, "decnr": d.dec_deg,
        "ndethist": n_hist, "ncovhist": n_hist, "nmtchps": 0 if nearest_star is None else 1,
        "rfid": int(p.reference_id), "jdstartref": p.reference_jd_start, "jdendref": p.reference_jd_end,
        "nframesref": int(p.reference_n_frames), "rbversion": p.rb_version, "drbversion": p.rb_version,
        "nmatches": 0, "tblid": 0,
    })
    if nearest_star is not None:
        rec["distpsnr1"] = float(nearest_star["separation_arcsec"])
    if sso is not None:
        rec["ssdistnr"] = float(sso["separation_arcsec"])
        rec["ssnamenr"] = str(sso["name"])
    return rec


def _prv_record(d: AlertDetection) -> dict:
    rec = _null_fields("prv_candidate")
    rec.update({"jd": d.jd, "fid": _fid(d.band), "pid": int(d.pid), "programid": 0, "candid": int(d.candid),
                "isdiffpos": "t" if d.isdiffpos else "f", "ra": d.ra_deg, "dec": d.dec_deg,
                "magpsf": d.mag, "sigmapsf": d.mag_err, "scorr": d.snr, "rb": d.rb, "rbversion": "none"})
    return rec


def alert_record(p: AlertPacket) -> dict:
    """The alert as a dict following the ZTF schema."""
    c = np.asarray(p.cutouts)
    if c.shape != (63, 63, 3):
        raise ValueError(f"cutouts must have shape (63, 63, 3), got {c.shape}")
    cid = p.detection.candid
    return {
        "schemavsn": SCHEMA_VERSION, "publisher": PUBLISHER, "objectId": p.object_id, "candid": int(cid),
        "candidate": _candidate_record(p.detection, p, len(p.previous) + 1),
        "prv_candidates": [_prv_record(d) for d in p.previous], "fp_hists": None,
        "cutoutScience": cutout_fits_gz(c[..., 0], f"candid{cid}_sci.fits.gz"),
        "cutoutTemplate": cutout_fits_gz(c[..., 1], f"candid{cid}_ref.fits.gz"),
        "cutoutDifference": cutout_fits_gz(c[..., 2], f"candid{cid}_diff.fits.gz"),
    }


def write_avro(p: AlertPacket) -> bytes:
    """The alert as an Avro object container file (bytes), validated against the schema while writing."""
    import fastavro

    buf = io.BytesIO()
    fastavro.writer(buf, alert_schema(), [alert_record(p)], validator=True)
    return buf.getvalue()


def read_avro(data: bytes) -> list[dict]:
    """Alerts in an Avro container (reader schema: the ZTF schema, so a mismatch fails here)."""
    import fastavro

    return list(fastavro.reader(io.BytesIO(data), reader_schema=alert_schema()))


def _jd_to_iso(jd: float) -> str:
    from astropy.time import Time

    return Time(jd, format="jd", scale="utc").isot


def voevent_xml(p: AlertPacket, *, role: str = "observation", author: str = PUBLISHER,
                contact_email: str | None = None) -> bytes:
    """The alert as a VOEvent 2.0 packet (UTF-8 XML bytes)."""
    from lxml import etree

    if role not in ("observation", "prediction", "utility", "test"):
        raise ValueError(f"VOEvent role must be observation, prediction, utility or test, got {role!r}")
    d = p.detection
    root = etree.Element(f"{{{VOEVENT_NS}}}VOEvent", nsmap={"voe": VOEVENT_NS},
                         attrib={"version": "2.0", "role": role,
                                 "ivorn": f"{IVORN_ROOT}#{p.object_id}-{d.candid}"})
    who = etree.SubElement(root, "Who")
    etree.SubElement(who, "AuthorIVORN").text = IVORN_ROOT
    etree.SubElement(who, "Date").text = dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%S")
    auth = etree.SubElement(who, "Author")
    etree.SubElement(auth, "shortName").text = author
    if contact_email:
        etree.SubElement(auth, "contactEmail").text = contact_email
    what = etree.SubElement(root, "What")

    def param(parent, name, value, unit=None, ucd=None, dtype="float"):
        if value is None:
            return
        attrs = {"name": name, "value": str(value), "dataType": dtype}
        if unit:
            attrs["unit"] = unit
        if ucd:
            attrs["ucd"] = ucd
        etree.SubElement(parent, "Param", attrib=attrs)

    param(what, "objectId", p.object_id, dtype="string")
    param(what, "candid", d.candid, dtype="int")
    param(what, "band", d.band, dtype="string")
    param(what, "isdiffpos", "t" if d.isdiffpos else "f", dtype="string")
    param(what, "magpsf", None if d.mag is None else round(d.mag, 4), "mag", "phot.mag")
    param(what, "sigmapsf", None if d.mag_err is None else round(d.mag_err, 4), "mag", "stat.error;phot.mag")
    param(what, "snr", round(d.snr, 3), ucd="stat.snr")
    param(what, "rb", None if d.rb is None else round(d.rb, 4), ucd="stat.probability")
    param(what, "ndethist", len(p.previous) + 1, dtype="int")
    param(what, "reference_id", p.reference_id, dtype="int")
    host = next((m for r in p.crossmatch.get("results", []) for m in r.get("matches", [])
                 if m["kind"] == "galaxy"), None)
    if host is not None:
        param(what, "host", host["name"], dtype="string")
    skipped = p.crossmatch.get("skipped") or []
    if skipped:
        param(what, "crossmatch_skipped", ",".join(skipped), dtype="string")
    ww = etree.SubElement(root, "WhereWhen")
    odl = etree.SubElement(ww, "ObsDataLocation")
    etree.SubElement(odl, "ObservatoryLocation", id="GEOSURFACE")
    ol = etree.SubElement(odl, "ObservationLocation")
    etree.SubElement(ol, "AstroCoordSystem", id="UTC-ICRS-TOPO")
    ac = etree.SubElement(ol, "AstroCoords", coord_system_id="UTC-ICRS-TOPO")
    t = etree.SubElement(etree.SubElement(ac, "Time", unit="s"), "TimeInstant")
    etree.SubElement(t, "ISOTime").text = _jd_to_iso(d.jd)
    pos = etree.SubElement(ac, "Position2D", unit="deg")
    etree.SubElement(pos, "Name1").text = "RA"
    etree.SubElement(pos, "Name2").text = "Dec"
    v2 = etree.SubElement(pos, "Value2")
    etree.SubElement(v2, "C1").text = f"{d.ra_deg:.7f}"
    etree.SubElement(v2, "C2").text = f"{d.dec_deg:.7f}"
    if d.pos_err_arcsec is None or not (np.isfinite(d.pos_err_arcsec) and d.pos_err_arcsec >= 0):
        raise ValueError(f"a VOEvent needs the position error (Error2Radius), got {d.pos_err_arcsec!r}")
    etree.SubElement(pos, "Error2Radius").text = f"{d.pos_err_arcsec / 3600.0:.7f}"
    how = etree.SubElement(root, "How")
    etree.SubElement(how, "Description").text = (
        "ZOGY difference imaging (Zackay, Ofek & Gal-Yam 2016) against a stacked reference; 5-sigma detection in "
        "the score image; real-bogus classification of the 63x63 cutout triplet.")
    why = etree.SubElement(root, "Why", importance=f"{(d.rb if d.rb is not None else 0.0):.4f}")
    inf = etree.SubElement(why, "Inference", probability=f"{(d.rb if d.rb is not None else 0.0):.4f}")
    etree.SubElement(inf, "Concept").text = "transient candidate"
    return etree.tostring(root, xml_declaration=True, encoding="UTF-8", pretty_print=True)


@lru_cache(maxsize=1)
def _voevent_schema():
    from lxml import etree

    return etree.XMLSchema(etree.parse(str(SCHEMA_DIR / "VOEvent-v2.0.xsd")))


def validate_voevent(xml: bytes) -> None:
    """Raise ValueError with the schema's messages when ``xml`` is not a valid VOEvent 2.0 packet."""
    from lxml import etree

    try:
        doc = etree.fromstring(xml)
    except etree.XMLSyntaxError as exc:
        raise ValueError(f"VOEvent is not well-formed XML: {exc}") from None
    schema = _voevent_schema()
    if not schema.validate(doc):
        errors = "; ".join(f"line {e.line}: {e.message}" for e in schema.error_log)
        raise ValueError(f"VOEvent does not validate against VOEvent 2.0: {errors}")
