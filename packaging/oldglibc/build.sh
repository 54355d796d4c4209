#!/usr/bin/env bash
# packaging/oldglibc/build.sh - release build of the volunteer app for old-glibc Linux machines.
#
# Why: PyInstaller bundles the build machine's libpython, libstdc++, libgcc_s, libssl..., so the
# frozen app needs the build machine's glibc (2.36 on Debian 12) and does not start on Ubuntu
# 22.04 / 20.04 or RHEL 9 (docs/volunteer_app.md, "glibc floor"). This script makes the same
# build (same spec, same excludes and strip rules: server.boinc.package.build_frozen_app) inside
# a Debian 11 "bullseye" chroot (glibc 2.31), with a CPython 3.11 built there from source and the
# pinned wheels of constraints.txt; ttvfast (no cp311 wheel) is compiled by bullseye's gcc.
#
# Usage (as root: debootstrap, mount and chroot need it):
#     packaging/oldglibc/build.sh
#     packaging/oldglibc/check.sh dist/oldglibc/openastro_app    # prove it runs on glibc 2.31
#
# Steps (each one prints its wall time; a rerun skips what its stamp says is done and current,
# so the script is idempotent and resumes after a failure or an interrupt):
#   1. host: install debootstrap (apt) if missing; download CPython's source and check its sha256
#   2. debootstrap bullseye (minbase) into the build root; apt sources: bullseye, -updates, -security
#   3. apt-get install the CPython build dependencies in the chroot
#   4. build CPython 3.11.2 --enable-shared (rpath to its own lib/) into /opt/python3.11
#   5. copy the checkout's working tree (git ls-files: tracked + untracked-not-ignored files as they
#      are on disk, uncommitted changes included) to /build/openastro in the chroot  [every run]
#   6. venv /opt/venv; pip install -c constraints.txt the packages the freeze needs (wheels only,
#      except ttvfast, compiled from its sdist)
#   7. freeze: server.boinc.package.build_frozen_app run by the chroot's Python       [every run]
#   8. copy the bundle out, print its glibc floor (server.boinc.package.glibc_floor) and size,
#      write BUNDLE.buildinfo.txt beside it (commit, dirty files, floor, pip freeze)  [every run]
#
# Environment (all optional):
#     OPENASTRO_OLDGLIBC_ROOT    build chroot            (default: var/oldglibc/root in the checkout)
#     OPENASTRO_OLDGLIBC_CACHE   downloads and .debs     (default: var/oldglibc/cache)
#     OPENASTRO_OLDGLIBC_OUT     bundle destination      (default: dist/oldglibc/openastro_app)
#     OPENASTRO_OLDGLIBC_MIRROR  Debian mirror           (default: http://deb.debian.org/debian)
#     OPENASTRO_OLDGLIBC_JOBS    make -j                 (default: nproc)
#     OPENASTRO_OLDGLIBC_CA_BUNDLE  CA certificates pip trusts in the chroot (default: the host's,
#                                $PIP_CERT / $SSL_CERT_FILE / /etc/ssl/certs/ca-certificates.crt, so
#                                a TLS-intercepting proxy the host trusts works in the chroot too)
#
# /proc and /dev are mounted into the chroot only while steps 3-8 use it and are unmounted on exit
# (also on error or Ctrl-C). Nothing here deletes a directory that still has a mount under it.
# The chroot, the cache and the bundle stay out of git (var/ and dist/ are in .gitignore).
# Measured timings and the achieved floor: docs/volunteer_app.md, "glibc floor".
set -euo pipefail

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
REPO=$(cd "$HERE/../.." && pwd)
ROOT=${OPENASTRO_OLDGLIBC_ROOT:-$REPO/var/oldglibc/root}
CACHE=${OPENASTRO_OLDGLIBC_CACHE:-$REPO/var/oldglibc/cache}
OUT=${OPENASTRO_OLDGLIBC_OUT:-$REPO/dist/oldglibc/openastro_app}
MIRROR=${OPENASTRO_OLDGLIBC_MIRROR:-http://deb.debian.org/debian}
SECURITY_MIRROR=${OPENASTRO_OLDGLIBC_SECURITY_MIRROR:-http://deb.debian.org/debian-security}
JOBS=${OPENASTRO_OLDGLIBC_JOBS:-$(nproc)}
CA_BUNDLE=${OPENASTRO_OLDGLIBC_CA_BUNDLE:-${PIP_CERT:-${SSL_CERT_FILE:-/etc/ssl/certs/ca-certificates.crt}}}
SUITE=bullseye
ROOT=$(realpath -m "$ROOT"); CACHE=$(realpath -m "$CACHE"); OUT=$(realpath -m "$OUT")

# CPython: Debian bookworm's 3.11.2 source (python.org is not reachable from every build host)
PY_URL=http://deb.debian.org/debian/pool/main/p/python3.11/python3.11_3.11.2.orig.tar.gz
PY_SHA256=2411c74bda5bbcfcddaf4531f66d1adc73f247f529aee981b029513aefdbf849
PY_PREFIX=/opt/python3.11
# the same configure flags as the pyenv-built Python of the project's .venv (shared libpython, rpath,
# no PGO/LTO), so C extensions compiled here get the same CFLAGS (-O3 -fwrapv ...) as on the host
PY_CONFIGURE=(--prefix="$PY_PREFIX" --enable-shared --with-ensurepip=install
              "LDFLAGS=-Wl,-rpath,$PY_PREFIX/lib")
VENV=/opt/venv
# build tools are not in constraints.txt (pip freeze leaves them out): pinned here, to what made the
# host's ttvfast wheel (its WHEEL file: setuptools 84.2.1) and the host venv's pip
TOOL_PINS=("pip==26.3" "setuptools==84.2.1")
# what the frozen app needs (pip adds their dependencies, all pinned by constraints.txt); the spec
# excludes everything else anyway, and the venv is kept small so nothing unexpected gets collected.
# certifi: not needed (the app never connects) but a build in the project's .venv collects it, so it
# is installed for the same bundle contents. Compared with a host build the bundle then lacks
# only the host's system liberfa.so.1 (collected there from Debian's liberfa1, needed by no file).
FREEZE_PACKAGES=(pyinstaller pyinstaller-hooks-contrib numpy scipy astropy astropy-iers-data pyerfa
                 PyYAML packaging certifi dynesty emcee ttvfast)
BUILD_DEPS=(build-essential pkg-config ca-certificates xz-utils libssl-dev zlib1g-dev libbz2-dev
            libffi-dev liblzma-dev libsqlite3-dev libreadline-dev libncursesw5-dev uuid-dev
            libgdbm-dev libgdbm-compat-dev)

STAMPS=$ROOT/.openastro-oldglibc
TIMES=()
T_ALL=$SECONDS

# --- helpers ------------------------------------------------------------------------------------

log() { printf '%s\n' "$*"; }
die() { printf 'build.sh: error: %s\n' "$*" >&2; exit 1; }
step() { STEP_NAME=$1; STEP_T0=$SECONDS; log ""; log "==> [$(date -u +%H:%M:%S)] $1"; }
step_done() {
  local took=$((SECONDS - STEP_T0))
  log "    ${STEP_NAME}: ${1:-done} in ${took} s"
  TIMES+=("$(printf '%-62s %5d s  %s' "$STEP_NAME" "$took" "${1:-}")")
}
hash_of() { printf '%s\n' "$@" | sha256sum | cut -c1-16; }
stamp_ok() { [ -f "$STAMPS/$1" ] && [ "$(cat "$STAMPS/$1")" = "$2" ]; }
stamp_set() { mkdir -p "$STAMPS"; printf '%s\n' "$2" > "$STAMPS/$1"; }

mounts_under() {  # mount points at or below $1 (from /proc/self/mountinfo, field 5)
  awk -v p="$1" '$5 == p || index($5, p "/") == 1 { print $5 }' /proc/self/mountinfo
}
safe_rm() {  # delete a directory tree, never across a mount
  local target=$1
  [ -e "$target" ] || return 0
  [ -z "$(mounts_under "$target")" ] || die "refusing to delete $target: mounts below it: $(mounts_under "$target" | tr '\n' ' ')"
  rm -rf --one-file-system "$target"
}
mount_chroot() {  # /proc and /dev (recursive bind, slave so nothing propagates back to the host)
  local r=$1
  if [ -z "$(mounts_under "$r/proc")" ]; then mount -t proc proc "$r/proc"; fi
  if [ -z "$(mounts_under "$r/dev")" ]; then
    mount --rbind /dev "$r/dev"
    mount --make-rslave "$r/dev"
  fi
}
umount_chroot() {  # every mount at or below $1, deepest first (also debootstrap's, after a kill)
  local r=$1 m
  mounts_under "$r" | sort -r | while IFS= read -r m; do
    umount "$m" 2>/dev/null || umount -l "$m" || log "warning: could not unmount $m"
  done
}
cleanup() {
  local rc=$?
  umount_chroot "$ROOT"
  umount_chroot "$ROOT.partial" 2>/dev/null || true
  [ $rc -eq 0 ] || log "build.sh: FAILED (exit $rc) in step '${STEP_NAME:-setup}'; rerun to resume"
}
trap cleanup EXIT

in_chroot() {  # run a command in the build root with a clean, explicit environment
  env -i PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin HOME=/root LANG=C.UTF-8 \
    DEBIAN_FRONTEND=noninteractive OMP_NUM_THREADS=1 OPENBLAS_NUM_THREADS=1 MKL_NUM_THREADS=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_DEFAULT_TIMEOUT=180 PIP_NO_INPUT=1 SOURCE_DATE_EPOCH=315532800 \
    PIP_CERT=/build/host-ca-bundle.crt \
    ${http_proxy:+http_proxy=$http_proxy} ${https_proxy:+https_proxy=$https_proxy} \
    ${no_proxy:+no_proxy=$no_proxy} \
    chroot "$ROOT" "$@"
}
chroot_sh() { in_chroot /bin/bash -euo pipefail -c "$1"; }
run_logged() {  # run_logged LOGFILE CMD... : output to the log, its tail on failure
  local logfile=$1; shift
  if ! "$@" >"$logfile" 2>&1; then
    log "    --- last 40 lines of $logfile ---"; tail -n 40 "$logfile"; return 1
  fi
}

# --- checks -------------------------------------------------------------------------------------

[ "$(id -u)" -eq 0 ] || die "run as root (debootstrap, mount and chroot need it)"
case $ROOT in /|/bin|/usr|/etc|/dev|/proc|/sys|/var|/opt|/root|/home|/tmp|"") die "OPENASTRO_OLDGLIBC_ROOT=$ROOT is not a chroot path";; esac
[ "$(uname -m)" = x86_64 ] || die "this script builds x86_64-pc-linux-gnu on an x86_64 host"
command -v git >/dev/null || die "git is needed (the project tree is copied from git ls-files)"
export OMP_NUM_THREADS=1 OPENBLAS_NUM_THREADS=1 MKL_NUM_THREADS=1
log "old-glibc build: Debian $SUITE root $ROOT"
log "                 bundle -> $OUT"
mkdir -p "$CACHE/debs" "$(dirname "$ROOT")"
umount_chroot "$ROOT"  # left over from a killed run

# --- 1. host tools and sources ------------------------------------------------------------------

step "host: debootstrap, CPython source"
if ! command -v debootstrap >/dev/null; then
  log "    installing debootstrap on the host (apt-get)"
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends debootstrap >/dev/null
fi
PY_TARBALL=$CACHE/$(basename "$PY_URL")
if [ ! -f "$PY_TARBALL" ] || ! echo "$PY_SHA256  $PY_TARBALL" | sha256sum -c --status; then
  log "    downloading $PY_URL"
  curl -fsSL --retry 3 -o "$PY_TARBALL.part" "$PY_URL"
  echo "$PY_SHA256  $PY_TARBALL.part" | sha256sum -c --status \
    || die "sha256 of $PY_URL is $(sha256sum "$PY_TARBALL.part" | cut -d' ' -f1), expected $PY_SHA256"
  mv "$PY_TARBALL.part" "$PY_TARBALL"
fi
log "    $(basename "$PY_TARBALL"): sha256 verified ($PY_SHA256)"
step_done "debootstrap $(dpkg-query -W -f='${Version}' debootstrap)"

# --- 2. debootstrap -----------------------------------------------------------------------------

step "debootstrap $SUITE minbase"
if [ -f "$STAMPS/debootstrap" ]; then
  step_done "cached"
else
  [ ! -e "$ROOT" ] || die "$ROOT exists but was not made by this script (no $STAMPS/debootstrap): move it away"
  umount_chroot "$ROOT.partial"
  safe_rm "$ROOT.partial"  # an interrupted earlier attempt; the .debs stay in the cache
  run_logged "$CACHE/debootstrap-build.log" \
    debootstrap --variant=minbase --arch=amd64 --cache-dir="$CACHE/debs" "$SUITE" "$ROOT.partial" "$MIRROR"
  umount_chroot "$ROOT.partial"
  mv "$ROOT.partial" "$ROOT"
  cat > "$ROOT/etc/apt/sources.list" <<EOF
deb $MIRROR $SUITE main
deb $MIRROR $SUITE-updates main
deb $SECURITY_MIRROR $SUITE-security main
EOF
  stamp_set debootstrap "$SUITE $MIRROR"
  step_done "$(du -sh --one-file-system "$ROOT" | cut -f1)"
fi
log "    chroot glibc: $(chroot "$ROOT" /usr/bin/ldd --version | head -n1)"
cp -L /etc/resolv.conf "$ROOT/etc/resolv.conf"
mkdir -p "$ROOT/build"
[ -f "$CA_BUNDLE" ] || die "CA bundle $CA_BUNDLE not found (set OPENASTRO_OLDGLIBC_CA_BUNDLE)"
cp -L "$CA_BUNDLE" "$ROOT/build/host-ca-bundle.crt"  # pip's trust store in the chroot
mount_chroot "$ROOT"

# --- 3. build dependencies ----------------------------------------------------------------------

step "apt: CPython build dependencies"
key=$(hash_of "${BUILD_DEPS[@]}" "$MIRROR" "$SECURITY_MIRROR")
if stamp_ok apt "$key"; then
  step_done "cached"
else
  mkdir -p "$ROOT/build/logs"
  run_logged "$ROOT/build/logs/apt.log" chroot_sh "
    apt-get update -o Acquire::Retries=3
    apt-get -y -o Acquire::Retries=3 dist-upgrade
    apt-get install -y -o Acquire::Retries=3 --no-install-recommends ${BUILD_DEPS[*]}
    apt-get clean"
  stamp_set apt "$key"
  step_done "gcc $(chroot "$ROOT" gcc -dumpfullversion)"
fi

# --- 4. CPython ---------------------------------------------------------------------------------

step "CPython 3.11.2 --enable-shared -> $PY_PREFIX"
py_key=$(hash_of "$PY_SHA256" "${PY_CONFIGURE[@]}" "$(cat "$STAMPS/apt")")
if stamp_ok python "$py_key"; then
  step_done "cached"
else
  mkdir -p "$ROOT/build/src" "$ROOT/build/logs"
  cp "$PY_TARBALL" "$ROOT/build/src/cpython.tar.gz"
  safe_rm "$ROOT/build/cpython"
  safe_rm "$ROOT$PY_PREFIX"
  mkdir -p "$ROOT/build/cpython"
  tar -xzf "$PY_TARBALL" -C "$ROOT/build/cpython" --strip-components=1
  log "    configure"
  run_logged "$ROOT/build/logs/cpython-configure.log" \
    chroot_sh "cd /build/cpython && ./configure $(printf '%q ' "${PY_CONFIGURE[@]}")"
  log "    make -j$JOBS (log: build/logs/cpython-make.log in the chroot)"
  run_logged "$ROOT/build/logs/cpython-make.log" chroot_sh "cd /build/cpython && make -j$JOBS"
  # modules the build could not make: only those listed here may be missing
  missing=$(sed -n '/necessary bits to build these optional modules were not found/,/^$/p;
                    /Failed to build these modules/,/^$/p' "$ROOT/build/logs/cpython-make.log" \
            | grep -v 'were not found\|Failed to build\|To find the necessary' | tr -s ' \n' ' ' || true)
  for mod in $missing; do
    case $mod in _tkinter|nis|_dbm) ;;
      *) die "CPython module $mod was not built (see $ROOT/build/logs/cpython-make.log)" ;;
    esac
  done
  [ -z "${missing// /}" ] || log "    not built (not needed): $missing"
  log "    make install"
  run_logged "$ROOT/build/logs/cpython-install.log" chroot_sh "cd /build/cpython && make install"
  chroot_sh "$PY_PREFIX/bin/python3.11 - <<'EOF'
import ctypes, ssl, sqlite3, lzma, bz2, zlib, readline, uuid, hashlib, _decimal, _ctypes
import multiprocessing.synchronize, sysconfig
print('    python', sysconfig.get_python_version(), '|', ssl.OPENSSL_VERSION, '| sqlite', sqlite3.sqlite_version)
assert sysconfig.get_config_var('Py_ENABLE_SHARED') == 1
EOF
libs=\$(ldd $PY_PREFIX/bin/python3.11)  # not piped into grep -q: SIGPIPE + pipefail
case \$libs in *'=> $PY_PREFIX/lib/libpython3.11.so'*) ;;
  *) echo \"python3.11 does not find its libpython through its rpath: \$libs\"; exit 1 ;; esac"
  safe_rm "$ROOT/build/cpython"
  stamp_set python "$py_key"
  step_done "$(du -sh "$ROOT$PY_PREFIX" | cut -f1) installed"
fi

# --- 5. project tree ----------------------------------------------------------------------------

step "copy the working tree to /build/openastro"
safe_rm "$ROOT/build/openastro"
mkdir -p "$ROOT/build/openastro"
(cd "$REPO" && git ls-files -z --cached --others --exclude-standard \
   | while IFS= read -r -d '' f; do if [ -e "$f" ]; then printf '%s\0' "$f"; fi; done \
   | tar --null -T - -cf -) | tar -xf - -C "$ROOT/build/openastro"
COMMIT=$(git -C "$REPO" rev-parse HEAD)
DIRTY=$(git -C "$REPO" status --porcelain --untracked-files=normal)
nfiles=$(find "$ROOT/build/openastro" -type f | wc -l)
step_done "$nfiles files, commit ${COMMIT:0:10}$([ -n "$DIRTY" ] && echo " + $(printf '%s\n' "$DIRTY" | wc -l) uncommitted change(s)")"

# --- 6. venv + pinned packages ------------------------------------------------------------------

step "venv + pip install -c constraints.txt"
venv_key=$(hash_of "$py_key" "$(cat "$REPO/constraints.txt")" "${FREEZE_PACKAGES[@]}" "${TOOL_PINS[@]}")
if stamp_ok venv "$venv_key"; then
  step_done "cached"
else
  safe_rm "$ROOT$VENV"
  { cat "$ROOT/build/openastro/constraints.txt"; printf '%s\n' "${TOOL_PINS[@]}"; } \
    > "$ROOT/build/constraints-all.txt"
  run_logged "$ROOT/build/logs/pip.log" chroot_sh "
    $PY_PREFIX/bin/python3.11 -m venv $VENV
    $VENV/bin/python -m pip install -c /build/constraints-all.txt pip
    # wheels only, except ttvfast (no cp311 wheel: compiled here by bullseye's gcc); the pins also
    # constrain the isolated build environment of ttvfast (--build-constraint)
    $VENV/bin/python -m pip install -c /build/constraints-all.txt \
        --build-constraint /build/constraints-all.txt \
        --only-binary :all: --no-binary ttvfast ${FREEZE_PACKAGES[*]}
    $VENV/bin/python -m pip check"
  grep -i 'ttvfast' "$ROOT/build/logs/pip.log" | grep -i 'build\|wheel' | sed 's/^/    /' | head -n 3 || true
  stamp_set venv "$venv_key"
  step_done "$(chroot "$ROOT" $VENV/bin/python -m pip list --format=freeze 2>/dev/null | wc -l) packages"
fi

# --- 7. freeze ----------------------------------------------------------------------------------

step "freeze: server.boinc.package.build_frozen_app (chroot Python)"
safe_rm "$ROOT/build/freeze"
run_logged "$ROOT/build/logs/freeze.log" chroot_sh "cd /build/openastro && $VENV/bin/python - <<'EOF'
from pathlib import Path
from server.boinc.package import build_frozen_app, glibc_floor, tree_size
bundle = build_frozen_app(Path('/build/freeze'))
print('bundle', bundle, 'floor', glibc_floor(bundle), 'bytes', tree_size(bundle))
EOF"
grep '^bundle ' "$ROOT/build/logs/freeze.log" | sed 's/^/    /'
step_done

# --- 8. copy out, floor, size -------------------------------------------------------------------

step "copy out and measure"
BUNDLE=$ROOT/build/freeze/dist/openastro_app
[ -x "$BUNDLE/openastro_app" ] || die "no bundle at $BUNDLE"
if [ -e "$OUT" ] && [ ! -x "$OUT/openastro_app" ]; then
  die "$OUT exists and is not an openastro_app bundle: not overwriting it"
fi
mkdir -p "$(dirname "$OUT")"
safe_rm "$OUT.tmp"
cp -a "$BUNDLE" "$OUT.tmp"
safe_rm "$OUT"
mv "$OUT.tmp" "$OUT"
floor_report=$(chroot_sh "cd /build/openastro && $VENV/bin/python - <<'EOF'
import re, subprocess
from pathlib import Path
from server.boinc.package import glibc_floor, tree_size
bundle = Path('/build/freeze/dist/openastro_app')
need = []
for p in sorted(bundle.rglob('*')):
    if p.is_symlink() or not p.is_file() or p.open('rb').read(4) != b'\x7fELF':
        continue
    out = subprocess.run(['objdump', '-T', str(p)], capture_output=True, text=True).stdout
    vs = [tuple(map(int, m)) for m in re.findall(r'GLIBC_([0-9]+)\.([0-9]+)', out)]
    if vs:
        need.append((max(vs), p.relative_to(bundle).as_posix()))
need.sort(reverse=True)
files = sum(1 for p in bundle.rglob('*') if p.is_file())
print(f'glibc floor: GLIBC_{glibc_floor(bundle)}  ({len(need)} ELF files with GLIBC symbols)')
for v, name in need[:6]:
    print(f'    needs {v[0]}.{v[1]}: {name}')
print(f'size: {tree_size(bundle) / 1e6:.1f} MB in {files} files')
EOF")
printf '%s\n' "$floor_report" | sed 's/^/    /'
{
  echo "openastro_app old-glibc build ($SUITE chroot, $(chroot "$ROOT" /usr/bin/ldd --version | head -n1))"
  echo "built: $(date -u +%Y-%m-%dT%H:%M:%SZ) by packaging/oldglibc/build.sh"
  echo "commit: $COMMIT"
  [ -z "$DIRTY" ] || { echo "uncommitted changes included:"; printf '%s\n' "$DIRTY" | sed 's/^/  /'; }
  echo "python: $(chroot "$ROOT" $VENV/bin/python -VV | tr '\n' ' ')"
  echo "gcc: $(chroot "$ROOT" gcc -dumpfullversion)"
  printf '%s\n' "$floor_report"
  echo "pip freeze:"
  chroot "$ROOT" $VENV/bin/python -m pip freeze --all 2>/dev/null | sed 's/^/  /'
} > "$OUT.buildinfo.txt"
step_done "$(du -sh "$OUT" | cut -f1)"

log ""
log "==> timings"
printf '    %s\n' "${TIMES[@]}"
log "    total: $((SECONDS - T_ALL)) s"
log ""
log "bundle: $OUT"
log "build info: $OUT.buildinfo.txt"
log "next: packaging/oldglibc/check.sh $OUT"
