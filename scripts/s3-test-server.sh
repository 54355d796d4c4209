#!/usr/bin/env bash
# A real S3-compatible HTTP server for the tests: moto's stand-alone server (moto_server, from PyPI `moto[server]`),
# a separate process that speaks the S3 REST API on 127.0.0.1 (buckets in memory, gone when it stops).
# Usage: scripts/s3-test-server.sh PORT   (runs in the foreground: the caller's PID is the server's; stop it by PID)
# CI or a shell: scripts/s3-test-server.sh 9000 & then OPENASTRO_S3_ENDPOINT_URL=http://127.0.0.1:9000
set -euo pipefail
PORT=${1:?usage: s3-test-server.sh PORT}
cd "$(dirname "$0")/.."
BIN=.venv/bin/moto_server
[ -x "$BIN" ] || BIN=$(command -v moto_server) || { echo "moto_server not found: pip install 'moto[server]'" >&2; exit 1; }
exec "$BIN" -H 127.0.0.1 -p "$PORT"
