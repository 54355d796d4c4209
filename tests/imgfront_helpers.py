"""Shared helpers for the image-front tests (catalogs, synthetic frames, solving, calibration)."""
from __future__ import annotations

import http.server
import re
import threading
import urllib.parse
from contextlib import contextmanager

import numpy as np
import pandas as pd

from server.image.catalogs import angular_separation_deg


def offline_catalog():
    """The process-wide offline catalog (Gaia+Hipparcos+Tycho-2 index), loaded once."""
    from server.image.catalogs import default_offline_catalog

    return default_offline_catalog()


def max_wcs_error_arcsec(true_wcs, solved_wcs, shape, n: int = 9) -> float:
    """Largest sky separation between two WCSs over an n x n grid spanning the whole frame."""
    ny, nx = shape
    gy, gx = np.mgrid[0:ny - 1:complex(n), 0:nx - 1:complex(n)]
    a = true_wcs.all_pix2world(gx.ravel(), gy.ravel(), 0)
    b = solved_wcs.all_pix2world(gx.ravel(), gy.ravel(), 0)
    return float(angular_separation_deg(a[0], a[1], b[0], b[1]).max() * 3600.0)


_CIRCLE = re.compile(r"CIRCLE\('ICRS',\s*([-\d.eE+]+),\s*([-\d.eE+]+),\s*([-\d.eE+]+)\)")
_GLIM = re.compile(r"phot_g_mean_mag\s*<=\s*([-\d.eE+]+)")


class FakeGaiaTap:
    """A real HTTP server on 127.0.0.1 answering Gaia-TAP-style ADQL cone queries from a table.

    The table has Gaia columns (source_id, ra, dec, phot_g_mean_mag, phot_bp_mean_mag,
    phot_rp_mean_mag). It parses the CIRCLE and the G limit out of the posted ADQL, so the
    client's query text is exercised for real. ``requests`` counts the queries served;
    ``fail_with`` makes it answer every request with that HTTP status.
    """

    def __init__(self, table: pd.DataFrame):
        self.table = table
        self.requests: list[str] = []
        self.fail_with: int | None = None
        outer = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def log_message(self, *args):  # keep pytest output clean
                pass

            def do_POST(self):
                length = int(self.headers.get("Content-Length", 0))
                form = urllib.parse.parse_qs(self.rfile.read(length).decode())
                if self.path.rstrip("/") != "/tap/sync" or form.get("LANG") != ["ADQL"]:
                    self.send_error(400, "bad TAP request")
                    return
                query = form["QUERY"][0]
                outer.requests.append(query)
                if outer.fail_with is not None:
                    self.send_error(outer.fail_with, "injected failure")
                    return
                m, g = _CIRCLE.search(query), _GLIM.search(query)
                if m is None or g is None:
                    self.send_error(400, f"cannot parse {query!r}")
                    return
                ra0, dec0, r = (float(v) for v in m.groups())
                t = outer.table
                sep = angular_separation_deg(ra0, dec0, t["ra"].to_numpy(), t["dec"].to_numpy())
                sel = t[(sep <= r) & (t["phot_g_mean_mag"] <= float(g.group(1)))]
                body = sel.to_csv(index=False).encode()
                self.send_response(200)
                self.send_header("Content-Type", "text/csv")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/tap"
        self._thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def __enter__(self):
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self.server.shutdown()
        self.server.server_close()
        self._thread.join(timeout=5)


def random_gaia_table(rng: np.random.Generator, ra0: float, dec0: float, radius_deg: float, n: int) -> pd.DataFrame:
    """Stars uniform on the sphere cap around (ra0, dec0) with Gaia-like columns."""
    from server.image.solve import _inverse_gnomonic  # tangent-plane helper; small caps only

    rr = radius_deg * np.sqrt(rng.random(n))
    th = rng.uniform(0, 2 * np.pi, n)
    ra, dec = _inverse_gnomonic(rr * np.cos(th), rr * np.sin(th), ra0, dec0)
    g = rng.uniform(8, 17, n)
    bprp = rng.uniform(0.2, 2.0, n)
    bp = g + 0.4 * bprp
    rp = bp - bprp
    bp[::17] = np.nan  # some stars without BP/RP
    return pd.DataFrame({"source_id": np.arange(1, n + 1) * 1000 + 7, "ra": ra, "dec": dec,
                         "phot_g_mean_mag": g, "phot_bp_mean_mag": bp, "phot_rp_mean_mag": rp,
                         "phot_g_mean_flux_over_error": np.full(n, 500.0)})


@contextmanager
def fake_gaia_tap(table: pd.DataFrame):
    with FakeGaiaTap(table) as srv:
        yield srv
