"""Sample inputs for the ingest tests, each written to its published format (shared by several test files)."""

from __future__ import annotations

import numpy as np
from astropy.io import fits


def small_image(seed: int = 0, shape=(48, 64)) -> np.ndarray:
    return np.random.default_rng(seed).normal(1000.0, 10.0, shape).astype(np.float32)


def astrobin_header() -> fits.Header:
    """Keywords as N.I.N.A. / SGP / MaxIm write them into the FITS files AstroBin users share."""
    h = fits.Header()
    h["IMAGETYP"] = "LIGHT"
    h["EXPOSURE"] = 120.0
    h["DATE-OBS"] = "2024-03-05T21:10:11.500"
    h["XBINNING"] = 2
    h["YBINNING"] = 2
    h["GAIN"] = 100
    h["EGAIN"] = 0.25
    h["XPIXSZ"] = 3.76
    h["INSTRUME"] = "ZWO ASI2600MM Pro"
    h["TELESCOP"] = "RedCat 51"
    h["FOCALLEN"] = 250.0
    h["FILTER"] = "V"
    h["CCD-TEMP"] = -10.0
    h["OBJECT"] = "SS Cyg"
    h["OBJCTRA"] = "21 42 42.80"
    h["OBJCTDEC"] = "+43 35 09.9"
    h["SITELAT"] = "+45 30 00"
    h["SITELONG"] = "-071 15 00"
    h["SITEELEV"] = 350.0
    h["OBSERVER"] = "A. Amateur"
    return h


HEADER = """#TYPE=Extended
#OBSCODE=TST01
#SOFTWARE=OpenAstro test writer 1.0
#DELIM={delim}
#DATE={date}
#OBSTYPE=CCD
#NAME,DATE,MAG,MERR,FILT,TRANS,MTYPE,CNAME,CMAG,KNAME,KMAG,AMASS,GROUP,CHART,NOTES
"""


def ext_row(star="SS CYG", date="2450702.1234", mag="11.235", err="0.003", filt="B", trans="NO", mtype="STD",
            cname="105", cmag="10.593", kname="110", kmag="11.090", amass="1.561", group="1", chart="070613",
            notes="na", delim=","):
    return delim.join([star, date, mag, err, filt, trans, mtype, cname, cmag, kname, kmag, amass, group, chart,
                       notes])


CSV_HEADER = ("JD,Magnitude,Uncertainty,HQuncertainty,Band,Observer Code,Comment Code(s),Comp Star 1,Comp Star 2,"
              "Charts,Comments,Transfomed,Airmass,Validation Flag,Cmag,Kmag,HJD,Star Name,Observer Affiliation,"
              "Measurement Method,Grouping Method,ADS Reference,Digitizer,Credit")


def csv_row(jd="2459000.51234", mag="10.512", unc="0.011", band="V", obs="XYZ", hjd="2459000.51688",
            star="SS Cyg", comments=""):
    return ",".join([jd, mag, unc, "", band, obs, "", "000-BBC-123", "000-BBC-124", "X12345AB", comments, "1",
                     "1.234", "V", "10.1", "11.2", hjd, star, "AAVSO", "STD", "", "", "", ""])


ETD_TEXT = """# Exoplanet Transit Database export, WASP-12 b
#planet=WASP-12 b
#ra=06 30 32.79
#dec=+29 40 20.3
#,Epoch,HJD-2400000,Error,O-C,Duration (min),Depth (mmag),Observer,DQ
1,1850,57049.46712,0.00055,0.0012,178.2,15.1,Jane Observer,2
2,1851,57050.55923,0.00071,-0.0004,181.0,14.2,J. Doe,3
3,18x2,57051.65,0.0009,0.001,180,14,Bad Epoch,3
4,1853,57052.74,0.0,0.001,180,14,Zero Error,3
5,1854,57053.83,0.0009,0.001,180,14,Bad DQ,9
6,1855,0.8,0.0009,0.001,180,14,Bad Time,3
7,1856,57055.9
8,1850,57049.46701,0.00060,0.0011,179.0,15.0,Jane Observer,2
9,1857,57057.0,0.0010,,,,Sparse Row,
"""


def record(number="", prov="", disc=" ", note1=" ", note2="C", date="2024 01 02.12345", ra="05 12 33.123",
           dec="-12 30 45.67", mag="", band=" ", code="H01"):
    """One record, each field placed at its published column range (1-based, inclusive)."""
    cols = [" "] * 80

    def put(first, last, text):
        width = last - first + 1
        if len(text) > width:
            raise ValueError(f"{text!r} does not fit columns {first}-{last}")
        cols[first - 1 : last] = list(text.ljust(width))

    put(1, 5, number)
    put(6, 12, prov)
    put(13, 13, disc)
    put(14, 14, note1)
    put(15, 15, note2)
    put(16, 32, date)
    put(33, 44, ra)
    put(45, 56, dec)
    put(66, 70, mag.rjust(5) if mag else "")
    put(71, 71, band)
    put(78, 80, code)
    return "".join(cols)


