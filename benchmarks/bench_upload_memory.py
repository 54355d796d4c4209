"""Peak memory of the upload server for large-when-decoded ``.fits.fz`` uploads (issue 13: a 4.3 MB file grew the
server by ~530 MB).

Run: ``python -m benchmarks.bench_upload_memory`` from the repository root.

Starts ``openastro serve`` in a subprocess on a fresh SQLite database and store, uploads a small warm-up file
(imports and first-use allocations), then each case, and prints the growth of the server's peak RSS (VmHWM from
``/proc/<pid>/status``) that each upload caused, beside the size of the image it decodes to (the anchor: what a
whole-image decode would have to hold).
"""

from __future__ import annotations

import os

for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS", "NUMEXPR_NUM_THREADS"):
    os.environ[_var] = "1"

import signal  # noqa: E402
import socket  # noqa: E402
import subprocess  # noqa: E402
import sys  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

import httpx  # noqa: E402
import numpy as np  # noqa: E402
from astropy.io import fits  # noqa: E402

CLI = [sys.executable, "-c", "from server.cli import main; main()"]


def _peak_rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError("no VmHWM")


def _fz(path: Path, image: np.ndarray) -> Path:
    header = fits.Header({"DATE-OBS": "2024-03-05T21:10:11", "OBJECT": "bench"})
    fits.HDUList([fits.PrimaryHDU(), fits.CompImageHDU(image, header, compression_type="RICE_1")]).writeto(path)
    return path


def main() -> None:
    tmp = Path(tempfile.mkdtemp(prefix="bench-upload-"))
    env = {**os.environ, "OPENASTRO_VAR_DIR": str(tmp / "var"), "OPENASTRO_PROGRESS": "false"}
    subprocess.run([*CLI, "db", "upgrade"], env=env, check=True, capture_output=True)
    subprocess.run([*CLI, "site", "add", "Bench"], env=env, check=True, capture_output=True)
    key = subprocess.run([*CLI, "site", "key", "Bench"], env=env, check=True, capture_output=True,
                         text=True).stdout.strip().splitlines()[-1]
    sparse = np.zeros((4096, 4096), dtype=np.int32)
    sparse[::97, ::89] = 7
    sparse_big = np.zeros((6144, 6144), dtype=np.int32)
    sparse_big[::97, ::89] = 7
    cases = [
        ("4096x4096 int32, sparse", _fz(tmp / "a.fits.fz", sparse), sparse.nbytes),
        ("6144x6144 int32, sparse", _fz(tmp / "b.fits.fz", sparse_big), sparse_big.nbytes),
        ("8192x4096 int16, Poisson noise", _fz(tmp / "c.fits.fz", np.random.default_rng(0).poisson(
            100, (4096, 8192)).astype(np.int16)), 4096 * 8192 * 2),
    ]
    del sparse, sparse_big
    warm = _fz(tmp / "warm.fits.fz", np.random.default_rng(1).poisson(100, (64, 64)).astype(np.int16))
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    with open(tmp / "serve.log", "wb") as log:
        server = subprocess.Popen([*CLI, "serve", "--port", str(port)], env=env, stdout=log, stderr=subprocess.STDOUT)
    try:
        with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=300) as client:
            for _ in range(600):
                try:
                    if client.get("/api/v1/health").status_code == 200:
                        break
                except httpx.TransportError:
                    time.sleep(0.1)
            headers = {"Authorization": f"Bearer {key}"}
            client.post("/api/v1/observations", headers=headers, files={"file": ("warm.fits.fz", warm.read_bytes())})
            print(f"{'case':<32} {'file MB':>8} {'decoded MiB':>12} {'peak RSS growth MB':>19}")
            for name, path, decoded in cases:
                before = _peak_rss_mb(server.pid)
                r = client.post("/api/v1/observations", headers=headers,
                                files={"file": (path.name, path.read_bytes())})
                r.raise_for_status()
                growth = _peak_rss_mb(server.pid) - before
                print(f"{name:<32} {path.stat().st_size / 1e6:>8.1f} {decoded / 2**20:>12.0f} {growth:>19.1f}")
    finally:
        server.send_signal(signal.SIGINT)
        server.wait(30)


if __name__ == "__main__":
    main()
