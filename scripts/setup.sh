#!/usr/bin/env bash
# One-time set-up on a fresh Debian 12 machine with Python 3.11: system packages (when missing),
# a virtual environment in .venv, and the project installed into it. Safe to run again.
set -euo pipefail
cd "$(dirname "$0")/.."

APT_PACKAGES=(
  pkg-config libmariadb-dev            # mysqlclient build
  mariadb-server mariadb-client        # the real database engine for tests
  astrometry.net                       # solve-field
  astrometry-data-tycho2-07-littleendian astrometry-data-tycho2-08-littleendian
  astrometry-data-tycho2-09-littleendian astrometry-data-tycho2-10-19-littleendian
  swarp                                # benchmark anchor for reprojection
  chromium chromium-driver             # the portal's browser tests (Selenium, headless)
  redis-server                         # the Celery broker for queue tests (started by scripts/redis_test_server.sh)
  zip unzip binutils strace            # app packaging (zip), glibc floor check (objdump), no-network check
  libcfitsio-bin                       # funpack: the tests check our RICE files are fpack-compatible
  openssl                              # self-signed certificate for the TLS test of `openastro serve`
  # a real BOINC server in the tests (scripts/boinc-test-server.sh; ../shared/boinc-src/README.md)
  autoconf automake libtool m4 make g++ libssl-dev libcurl4-openssl-dev zlib1g-dev
  libmariadb-dev-compat nlohmann-json3-dev libzip-dev python3-mysqldb python-is-python3
  apache2 libapache2-mod-php php php-cli php-mysql php-xml php-gd
  boinc-client                         # the Debian client, attached to the test project over loopback
)

missing=()
for pkg in "${APT_PACKAGES[@]}"; do
  dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" || missing+=("$pkg")
done
if [ ${#missing[@]} -gt 0 ]; then
  echo "setup: installing system packages: ${missing[*]}"
  SUDO=""; [ "$(id -u)" -ne 0 ] && SUDO="sudo"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

PY=${PYTHON:-python3.11}
command -v "$PY" >/dev/null || PY=python3
if [ ! -x .venv/bin/python ]; then
  echo "setup: creating .venv with $($PY --version)"
  "$PY" -m venv .venv
fi
# constraints.txt pins every dependency to the versions the suite last passed with, so a new upstream
# release cannot change a CI run behind our back ('make lock' refreshes it).
stamp=.venv/.installed-$(cat pyproject.toml constraints.txt | sha256sum | cut -c1-16)
if [ ! -f "$stamp" ]; then
  echo "setup: installing the project and its dependencies into .venv"
  .venv/bin/pip install -q --upgrade pip
  .venv/bin/pip install -q -c constraints.txt -e ".[test]"
  rm -f .venv/.installed-*; touch "$stamp"
fi
echo "setup: ready"
