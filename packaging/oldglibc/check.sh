#!/usr/bin/env bash
# packaging/oldglibc/check.sh - prove a frozen bundle runs on an old-glibc system (Debian 11, 2.31).
#
# Usage (as root: debootstrap, mount and chroot need it):
#     packaging/oldglibc/check.sh [BUNDLE]        (default: dist/oldglibc/openastro_app)
#
# BUNDLE is the onedir bundle directory (or its openastro_app executable), e.g. the output of
# packaging/oldglibc/build.sh. What it does:
#   1. a separate, minimal Debian 11 "bullseye" root (debootstrap --variant=minbase: glibc 2.31, no
#      Python, no compiler; made once, reusing build.sh's .deb cache) at var/oldglibc/runroot;
#   2. copies in only the bundle (/opt/openastro_app) and, per task kind, one test work unit
#      (tests/app_workunits.py) laid out as a BOINC slot (soft-link stubs, the captured
#      init_data.xml) under /work/KIND;
#   3. runs `openastro_app run` in each slot with chroot, as uid 65534 with an empty environment
#      (only PATH/HOME/LANG), /proc and /dev mounted like on a real system - and `--version`;
#   4. runs the same work units with the host's in-process app (.venv, app.main) and compares the
#      results' plain data: per array bit-for-bit, else max abs/rel difference (and for the TTV
#      kinds logz, posterior mean/std);
#   5. locates any TTV difference: the TTV likelihood (transit times, log-likelihood) at the same
#      parameter vectors with the host's ttvfast, with the bundle's _ttvfast (bullseye's gcc) loaded
#      into the host's Python, and - when build.sh's build root exists - with the same ttvfast
#      build on bullseye's glibc 2.31 libm (the check root itself has no Python).
# Prints PASS/FAIL per task kind. PASS = exit 0 and a well-formed result of the right kind, seed,
# array names, dtypes and shapes (printed with "bit-identical" or the size of the differences);
# with OPENASTRO_OLDGLIBC_EXACT=1 any difference from the host's in-process result is a FAIL.
# Exit status 0 when every kind passes.
#
# Environment (optional): OPENASTRO_OLDGLIBC_RUNROOT (default var/oldglibc/runroot),
# OPENASTRO_OLDGLIBC_CACHE (var/oldglibc/cache), OPENASTRO_OLDGLIBC_MIRROR, OPENASTRO_HOST_PYTHON
# (.venv/bin/python), OPENASTRO_OLDGLIBC_EXACT (0), OPENASTRO_OLDGLIBC_ROOT (build.sh's build root,
# var/oldglibc/root: used read-only for step 5 when present).
set -euo pipefail

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
REPO=$(cd "$HERE/../.." && pwd)
BUNDLE=${1:-$REPO/dist/oldglibc/openastro_app}
RUNROOT=$(realpath -m "${OPENASTRO_OLDGLIBC_RUNROOT:-$REPO/var/oldglibc/runroot}")
BUILDROOT=$(realpath -m "${OPENASTRO_OLDGLIBC_ROOT:-$REPO/var/oldglibc/root}")  # build.sh's, optional
CACHE=$(realpath -m "${OPENASTRO_OLDGLIBC_CACHE:-$REPO/var/oldglibc/cache}")
MIRROR=${OPENASTRO_OLDGLIBC_MIRROR:-http://deb.debian.org/debian}
HOST_PYTHON=${OPENASTRO_HOST_PYTHON:-$REPO/.venv/bin/python}
EXACT=${OPENASTRO_OLDGLIBC_EXACT:-0}
SUITE=bullseye
RUN_UID=65534  # nobody: the BOINC client runs apps as an unprivileged user
CHROOT=$(command -v chroot || echo /usr/sbin/chroot)

log() { printf '%s\n' "$*"; }
die() { printf 'check.sh: error: %s\n' "$*" >&2; exit 2; }
mounts_under() { awk -v p="$1" '$5 == p || index($5, p "/") == 1 { print $5 }' /proc/self/mountinfo; }
safe_rm() {
  [ -e "$1" ] || return 0
  [ -z "$(mounts_under "$1")" ] || die "refusing to delete $1: mounts below it"
  rm -rf --one-file-system "$1"
}
umount_all() {
  mounts_under "$1" | sort -r | while IFS= read -r m; do
    umount "$m" 2>/dev/null || umount -l "$m" || log "warning: could not unmount $m"
  done
}
trap 'umount_all "$RUNROOT"; umount_all "$RUNROOT.partial"' EXIT

# --- the bundle ---------------------------------------------------------------------------------
[ "$(id -u)" -eq 0 ] || die "run as root (debootstrap, mount and chroot need it)"
case $RUNROOT in /|/bin|/usr|/etc|/dev|/proc|/sys|/var|/opt|/root|/home|/tmp) die "bad runroot $RUNROOT";; esac
[ -f "$BUNDLE" ] && BUNDLE=$(dirname "$BUNDLE")
BUNDLE=$(realpath -m "$BUNDLE")
[ -x "$BUNDLE/openastro_app" ] && [ -d "$BUNDLE/_internal" ] \
  || die "$BUNDLE is not an onedir openastro_app bundle (no openastro_app executable and _internal/)"
[ -x "$HOST_PYTHON" ] || die "host Python $HOST_PYTHON not found (make setup), needed for the reference runs"
export OMP_NUM_THREADS=1 OPENBLAS_NUM_THREADS=1 MKL_NUM_THREADS=1
T0=$SECONDS
log "bundle: $BUNDLE ($(du -sh "$BUNDLE" | cut -f1))"
floor=$(cd "$REPO" && "$HOST_PYTHON" -c "import sys; from server.boinc.package import glibc_floor; print(glibc_floor(sys.argv[1]))" "$BUNDLE")
log "bundle glibc floor (objdump -T): GLIBC_$floor"

# --- 1. the minimal old-glibc root --------------------------------------------------------------
umount_all "$RUNROOT"
if [ ! -f "$RUNROOT/.openastro-runroot" ]; then
  [ ! -e "$RUNROOT" ] || die "$RUNROOT exists but was not made by check.sh: move it away"
  command -v debootstrap >/dev/null || {
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends debootstrap >/dev/null; }
  log "debootstrap $SUITE minbase -> $RUNROOT (once)"
  umount_all "$RUNROOT.partial"; safe_rm "$RUNROOT.partial"
  mkdir -p "$CACHE/debs"
  t=$SECONDS
  debootstrap --variant=minbase --arch=amd64 --cache-dir="$CACHE/debs" "$SUITE" "$RUNROOT.partial" \
    "$MIRROR" > "$CACHE/debootstrap-runroot.log" 2>&1 || { tail -n 30 "$CACHE/debootstrap-runroot.log"; exit 2; }
  umount_all "$RUNROOT.partial"
  mv "$RUNROOT.partial" "$RUNROOT"
  echo "$SUITE minbase, made by packaging/oldglibc/check.sh" > "$RUNROOT/.openastro-runroot"
  log "  made in $((SECONDS - t)) s"
fi
log "old-glibc root: $RUNROOT ($(du -sh --one-file-system "$RUNROOT" | cut -f1)): $(chroot "$RUNROOT" /usr/bin/ldd --version | head -n1)"
pythons=$(chroot "$RUNROOT" /bin/sh -c 'ls /usr/bin/python* /usr/local/bin/python* 2>/dev/null || true')
[ -z "$pythons" ] || die "the check root must not have a Python: $pythons"
log "  no Python in the root: ok; gcc: $(chroot "$RUNROOT" /bin/sh -c 'command -v gcc || echo none')"

# --- 2. bundle + work units into the root; host references --------------------------------------
safe_rm "$RUNROOT/opt/openastro_app"; safe_rm "$RUNROOT/work"
mkdir -p "$RUNROOT/opt" "$RUNROOT/work"
cp -a "$BUNDLE" "$RUNROOT/opt/openastro_app"
HOSTDIR=$(mktemp -d "${TMPDIR:-/tmp}/oldglibc-check.XXXXXX")
trap 'umount_all "$RUNROOT"; umount_all "$RUNROOT.partial"; rm -rf "$HOSTDIR"' EXIT
log ""
log "work units and host in-process references (host: $("$HOST_PYTHON" -V), glibc $(ldd --version | head -n1 | awk '{print $NF}'))"
(cd "$REPO" && "$HOST_PYTHON" - "$RUNROOT/work" "$HOSTDIR" <<'EOF'
import json, sys, time
from pathlib import Path
sys.path.insert(0, "tests")
import app_workunits as aw
from app.main import main
from app.spec import KINDS

work, host = Path(sys.argv[1]), Path(sys.argv[2])
manifest = {}
for kind in KINDS:
    wu = getattr(aw, kind.replace("-", "_") + "_workunit")()
    slot = aw.lay_out_slot(work / kind, wu, mode="stub")          # what goes into the old root
    ref = aw.lay_out_slot(host / kind, wu, mode="stub")           # host reference, same layout
    t = time.monotonic()
    rc = main(["run", "--slot", str(ref.slot_dir)])
    print(f"  {kind:15s} host in-process: exit {rc} in {time.monotonic() - t:.1f} s", flush=True)
    manifest[kind] = {"slot": "/" + str(slot.slot_dir.relative_to(work.parent)),
                      "output": str(slot.output_path), "reference": str(ref.output_path),
                      "reference_rc": rc}
(host / "manifest.json").write_text(json.dumps(manifest, indent=1))
EOF
) 2>"$HOSTDIR/reference.stderr" || { tail -n 20 "$HOSTDIR/reference.stderr"; die "host reference runs failed"; }
chown -R "$RUN_UID:$RUN_UID" "$RUNROOT/work"

# --- 3. run the bundle in the old root ----------------------------------------------------------
mount -t proc proc "$RUNROOT/proc"
mount --rbind /dev "$RUNROOT/dev"; mount --make-rslave "$RUNROOT/dev"
in_root() {  # in_root DIR CMD...: run in the old root as nobody, empty environment
  local dir=$1; shift
  env -i PATH=/usr/bin:/bin HOME=/nonexistent LANG=C.UTF-8 \
    "$CHROOT" --userspec=$RUN_UID:$RUN_UID "$RUNROOT" /bin/sh -c 'cd "$1" && shift && exec "$@"' sh "$dir" "$@"
}
log ""
log "runs in the old-glibc root (chroot, uid $RUN_UID, empty environment)"
version=$(in_root /work /opt/openastro_app/openastro_app --version 2>&1) || die "--version failed: $version"
log "  --version: $version"
kinds=$("$HOST_PYTHON" -c 'import json,sys; print(" ".join(json.load(open(sys.argv[1]))))' "$HOSTDIR/manifest.json")
for kind in $kinds; do
  slot=$("$HOST_PYTHON" -c 'import json,sys; print(json.load(open(sys.argv[1]))[sys.argv[2]]["slot"])' "$HOSTDIR/manifest.json" "$kind")
  t=$SECONDS
  set +e
  in_root "$slot" /opt/openastro_app/openastro_app run > "$HOSTDIR/$kind.stdout" 2> "$HOSTDIR/$kind.stderr"
  rc=$?
  set -e
  echo "$rc $((SECONDS - t))" > "$HOSTDIR/$kind.rc"
  log "  $kind: exit $rc in $((SECONDS - t)) s; $(grep -E '^\[|^error' "$HOSTDIR/$kind.stderr" | tail -n1 | cut -c1-150)"
done
umount_all "$RUNROOT"

# --- 4. compare with the host ---------------------------------------------------------------------
log ""
log "comparison with the host's in-process results"
set +e
(cd "$REPO" && "$HOST_PYTHON" - "$HOSTDIR" "$RUNROOT" "$BUNDLE" "$EXACT" "$BUILDROOT" "$CHROOT" <<'EOF'
import ctypes, glob, json, os, sys
from pathlib import Path
import numpy as np
from app.spec import read_result

hostdir, runroot, bundle = Path(sys.argv[1]), Path(sys.argv[2]), Path(sys.argv[3])
exact, buildroot, chroot = sys.argv[4] == "1", Path(sys.argv[5]), sys.argv[6]
manifest = json.loads((hostdir / "manifest.json").read_text())
status = {}


def rel(a, b):
    a, b = np.asarray(a, float), np.asarray(b, float)
    d = np.abs(a - b)
    scale = np.maximum(np.abs(a), np.abs(b))
    r = np.where(d == 0, 0.0, d / np.where(scale == 0, 1.0, scale))
    return float(d.max(initial=0.0)), float(r.max(initial=0.0))


def flat(meta):  # one level of nesting (the TTV kernel's own meta sits under "ttv")
    out = {}
    for k, v in meta.items():
        if isinstance(v, dict) and k == "ttv":
            out.update({f"ttv.{kk}": vv for kk, vv in v.items()})
        else:
            out[k] = v
    return out


def is_timing(key):
    return key.split(".")[-1] in ("timings", "wall_s_last_session")


def weighted_moments(samples, logwt):
    w = np.exp(logwt - logwt.max()); w /= w.sum()
    mean = w @ samples
    return mean, np.sqrt(w @ (samples - mean) ** 2)


for kind, m in manifest.items():
    rc, secs = (hostdir / f"{kind}.rc").read_text().split()
    problems, notes = [], []
    if int(rc) != 0:
        problems.append(f"exit {rc}: " + " | ".join((hostdir / f"{kind}.stderr").read_text().splitlines()[-3:]))
    out = Path(m["output"])  # the stub's target in the old root's project dir
    if not problems:
        try:
            got = read_result(out)
        except Exception as exc:  # noqa: BLE001 - reported
            problems.append(f"result unreadable: {exc}")
    if not problems:
        want = read_result(m["reference"])
        for key in ("kind", "seed", "format", "version", "app_version"):
            if got.meta.get(key) != want.meta.get(key):
                problems.append(f"meta[{key!r}] {got.meta.get(key)!r} != {want.meta.get(key)!r}")
        if set(got.arrays) != set(want.arrays):
            problems.append(f"arrays {sorted(got.arrays)} != {sorted(want.arrays)}")
        same, differ = [], []
        for name in sorted(want.arrays):
            a, b = got.arrays.get(name), want.arrays[name]
            if a is None:
                continue
            if a.dtype != b.dtype or a.shape != b.shape:
                if kind == "ttv-nested" and a.dtype == b.dtype and a.ndim == b.ndim:
                    differ.append(f"{name}: shape {a.shape} vs host {b.shape}")
                else:
                    problems.append(f"array {name}: {a.dtype}{a.shape} vs host {b.dtype}{b.shape}")
                continue
            if a.tobytes() == b.tobytes():
                same.append(name)
            elif a.dtype.kind in "fiub":
                dabs, drel = rel(a, b)
                differ.append(f"{name}: max |diff| {dabs:.3g}, max rel {drel:.3g}")
            else:
                differ.append(f"{name}: differs")
        fg, fw = flat(got.meta), flat(want.meta)
        meta_keys = sorted(k for k in set(fg) | set(fw) if not is_timing(k))
        meta_same = [k for k in meta_keys if fg.get(k) == fw.get(k)]
        meta_diff = [k for k in meta_keys if fg.get(k) != fw.get(k)]
        notes.append(f"bit-identical arrays: {', '.join(same) or 'none'}")
        if differ:
            notes.append("differing arrays: " + "; ".join(differ))
        notes.append(f"meta equal (all but timings): {', '.join(meta_same)}"
                     + (f"; meta differs: {', '.join(meta_diff)}" if meta_diff else ""))
        if differ and kind == "ttv-nested":
            g, w = got.arrays, want.arrays
            notes.append(f"logz {g['logz'][-1]:.6f} +- {g['logzerr'][-1]:.3f} vs host {w['logz'][-1]:.6f} "
                         f"+- {w['logzerr'][-1]:.3f}")
            n = min(len(g["samples"]), len(w["samples"]))
            first = next((i for i in range(n) if g["samples"][i].tobytes() != w["samples"][i].tobytes()), n)
            notes.append(f"samples identical up to row {first} of {n}")
            mg, sg = weighted_moments(g["samples"], g["logwt"]); mw, sw = weighted_moments(w["samples"], w["logwt"])
            notes.append(f"posterior mean differs by {np.max(np.abs(mg - mw) / sw):.3g} sigma, "
                         f"std by {np.max(np.abs(sg / sw - 1)):.3g} (relative)")
        if differ and kind == "ttv-emcee":
            g, w = got.arrays["chain"], want.arrays["chain"]
            half = g.shape[0] // 2
            fg, fw = g[half:].reshape(-1, g.shape[-1]), w[half:].reshape(-1, w.shape[-1])
            notes.append(f"posterior (2nd half) mean differs by {np.max(np.abs(fg.mean(0) - fw.mean(0)) / fw.std(0)):.3g} sigma")
        if differ and exact:
            problems.append("differs from the host's in-process result (OPENASTRO_OLDGLIBC_EXACT=1)")
    status[kind] = not problems
    print(f"{'PASS' if not problems else 'FAIL'} {kind} (old-glibc root, {secs} s)"
          + (": bit-identical to the host's in-process result" if not problems and all(
              "differing arrays" not in n for n in notes) else ""))
    for line in problems + notes:
        print(f"    {line}")

# Where do TTV differences come from? Evaluate the likelihood (TTVFast transit times + log-likelihood)
# at the same parameter vectors (the host reference runs' samples) three ways:
#   host         host Python + host-built ttvfast (gcc 12), host glibc libm
#   bundle core  host Python + the bundle's _ttvfast (bullseye gcc 10) through ctypes, host libm
#   build root   bullseye Python + the same bullseye-built ttvfast, glibc 2.31 libm (only when the
#                build root of build.sh exists; the check root itself has no Python)
ext = sorted(glob.glob(str(bundle / "_internal" / "ttvfast" / "_ttvfast*.so")))
if "ttv-nested" in manifest:
    import subprocess

    import app.ttv.model as model_mod
    from app.ttv.likelihood import TTVLikelihood

    wu_file = next(Path(manifest["ttv-nested"]["reference"]).parent.glob("*_wu_json"))
    spec = json.loads(wu_file.read_text())["params"]["likelihood"]
    xs = [read_result(manifest["ttv-nested"]["reference"]).arrays["samples"]]
    if "ttv-emcee" in manifest:
        xs.append(read_result(manifest["ttv-emcee"]["reference"]).arrays["chain"].reshape(-1, xs[0].shape[1]))
    xs = np.concatenate(xs)

    def evaluate(like):
        times, logl = [], []
        for x in xs:
            t = like.model_times(x)
            times.append(np.full(like.n_obs, np.nan) if t is None else t.copy())
            logl.append(like(x))
        return np.array(times), np.array(logl), like.dt

    def report(label, other, ref):
        (t1, l1, dt1), (t0, l0, dt0) = other, ref
        ok = np.isfinite(t1).all(1) & np.isfinite(t0).all(1)
        tt_same = int(sum(a.tobytes() == b.tobytes() for a, b in zip(t1[ok], t0[ok])))
        tt_abs, tt_rel = rel(t1[ok], t0[ok])
        ll_same = int(np.sum(l1 == l0))
        ll_abs, ll_rel = rel(l1, l0)
        print(f"    {label}: dt {dt1:g} vs {dt0:g} d; transit times bit-identical for {tt_same}/{ok.sum()} vectors "
              f"(max |diff| {tt_abs * 86400:.3g} s, max rel {tt_rel:.3g}); log-likelihoods identical for "
              f"{ll_same}/{len(l0)} (max |diff| {ll_abs:.3g}, max rel {ll_rel:.3g})")

    print(f"TTV likelihood at {len(xs)} parameter vectors (the host runs' samples), vs the host's own:")
    host = evaluate(TTVLikelihood(spec))
    if ext:
        fn = ctypes.CDLL(ext[0]).TTVFast
        fn.restype = None
        fn.argtypes = model_mod._core().argtypes
        saved, model_mod._CORE = model_mod._CORE, fn
        report(f"bundle's {Path(ext[0]).name} (bullseye gcc) on the host's glibc", evaluate(TTVLikelihood(spec)), host)
        model_mod._CORE = saved
    if os.path.lexists(buildroot / "opt/venv/bin/python") and (buildroot / "build/openastro/app").is_dir():
        tmp = buildroot / "build" / "check-libm"
        tmp.mkdir(exist_ok=True)
        np.save(tmp / "xs.npy", xs)
        (tmp / "spec.json").write_text(json.dumps(spec))
        code = """
import json, sys
import numpy as np
sys.path.insert(0, "/build/openastro")
from app.ttv.likelihood import TTVLikelihood
like = TTVLikelihood(json.load(open("/build/check-libm/spec.json")))
xs = np.load("/build/check-libm/xs.npy")
times, logl = [], []
for x in xs:
    t = like.model_times(x)
    times.append(np.full(like.n_obs, np.nan) if t is None else t.copy())
    logl.append(like(x))
np.savez("/build/check-libm/out.npz", times=np.array(times), logl=np.array(logl), dt=like.dt)
"""
        done = subprocess.run(["env", "-i", "PATH=/usr/bin:/bin", "OMP_NUM_THREADS=1", "OPENBLAS_NUM_THREADS=1",
                               chroot, str(buildroot), "/opt/venv/bin/python", "-c", code],
                              capture_output=True, text=True)
        if done.returncode == 0:
            with np.load(tmp / "out.npz") as z:
                old = (z["times"], z["logl"], float(z["dt"]))
            glibc = subprocess.run([chroot, str(buildroot), "/usr/bin/ldd", "--version"],
                                   capture_output=True, text=True).stdout.splitlines()[0].split()[-1]
            report(f"same ttvfast build on glibc {glibc} (build root {buildroot.name}/)", old, host)
        else:
            print(f"    build root evaluation failed: {done.stderr.strip()[-300:]}")
        for f in tmp.iterdir():
            f.unlink()
        tmp.rmdir()
sys.exit(0 if all(status.values()) else 1)
EOF
)
rc=$?
set -e
log ""
log "check.sh: $([ $rc -eq 0 ] && echo "all task kinds PASS" || echo "FAILURES") on $(chroot "$RUNROOT" /usr/bin/ldd --version | head -n1) in $((SECONDS - T0)) s"
exit $rc
