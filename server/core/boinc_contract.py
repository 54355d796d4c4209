"""The names and limits OpenAstro shares with a BOINC server (see ../shared/boinc-contract.md).

One place for what the work generator, the templates, the validator, the assimilator, the installer
and the local executor must agree on: the BOINC app name, the versioned template files per task kind,
the open names inside a slot, the size limit of each kind's output, and how BOINC names work units,
results and uploaded files.

Templates are *versioned by file name*: BOINC re-reads the output template whenever it creates a
result, so a template that live work units use must never be edited; a change gets a new ``_vN``.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

APP_NAME = "openastro_app"          # the one BOINC app (server/boinc/package.py lays out its versions)
SPEC_OPEN_NAME = "wu.json"          # open name of the work-unit spec in the slot
RESULT_OPEN_NAME = "result.npz"     # open name of the result file in the slot
CUTOUT_OPEN_NAME = "cutout.fits"    # open name of a reproject-tile input cutout

# Console scripts installed into the project's bin/ (bare names: script_validator and
# script_assimilator pass their default arguments only to bare names, see the contract).
VALIDATE_INIT_SCRIPT = "openastro-validate-init"
VALIDATE_COMPARE_SCRIPT = "openastro-validate-compare"
ASSIMILATE_SCRIPT = "openastro-assimilate"
WORK_GENERATOR_SCRIPT = "openastro-work-generator"

# BOINC's own defaults when neither the template nor the command line sets a value (create_work).
BOINC_DEFAULTS = {"min_quorum": 1, "target_nresults": 1, "max_error_results": 1, "max_total_results": 1,
                  "max_success_results": 1, "rsc_fpops_est": 3.6e12, "rsc_fpops_bound": 8.64e13,
                  "rsc_memory_bound": 5e8, "rsc_disk_bound": 1e9, "delay_bound": 7 * 86400}
WU_XML_MAX_BYTES = 64 * 1024  # the expanded <workunit> XML is capped at 64 KiB

# Validator exit codes (script_validator): 0 valid/equivalent, 3 transient (retry later), other invalid.
EXIT_VALID = 0
EXIT_INVALID = 1
EXIT_TRANSIENT = 3

# Assimilator --error mask bits (script_assimilator)
ERROR_MASK_BITS = {1: "couldn't send", 2: "too many errors", 4: "too many success results",
                   8: "too many total results", 16: "cancelled", 32: "no canonical result"}


@dataclass(frozen=True)
class KindTemplates:
    """The template pair and result limits of one task kind."""

    kind: str
    input_template: str      # file name under templates/
    output_template: str
    n_inputs: int            # number of <file_info> in the input template (file numbers 0..n-1)
    input_open_names: tuple[str, ...]
    min_quorum: int
    target_nresults: int
    max_error_results: int
    max_total_results: int
    max_success_results: int
    max_nbytes: int          # upload limit of result.npz (client error when exceeded)

    @property
    def quorum(self) -> int:
        return self.min_quorum


# Result sizes (npz, deflate): a ttv-nested run stores n = niter + nlive rows of
# samples + samples_u (2 x ndim float64) and 9 per-row arrays (72 B): ~(16 ndim + 72) B per row before
# compression. The generator caps a run at nlive <= MAX_NLIVE_PER_RUN and the sampler's iterations at
# MAX_ROWS_PER_RUN (maxcall-independent: dynesty stops at dlogz), so 12 free parameters x 200k rows
# = 53 MB uncompressed is the largest honest output; 64 MB leaves room for the envelope.
MAX_NLIVE_PER_RUN = 1000
MAX_ROWS_PER_RUN = 200_000
TTV_MAX_NBYTES = 64 * 1024 * 1024
# reproject-tile: tile, weight (float32) + footprint (bool) of at most MAX_TILE_PIXELS pixels.
MAX_TILE_PIXELS = 1024 * 1024
TILE_MAX_NBYTES = MAX_TILE_PIXELS * 9 + 64 * 1024

def _kind_templates(kind: str, quorum: int) -> KindTemplates:
    stem = "ttv" if kind.startswith("ttv-") else "tile"
    q = "" if quorum == 2 else f"_q{quorum}"
    opens = (SPEC_OPEN_NAME,) if stem == "ttv" else (SPEC_OPEN_NAME, CUTOUT_OPEN_NAME)
    nbytes = TTV_MAX_NBYTES if stem == "ttv" else TILE_MAX_NBYTES
    # quorum N: N results are sent; up to 3 client errors and 6 results in all before the WU errors out.
    return KindTemplates(kind, f"openastro_{stem}{q}_in_v1.xml", f"openastro_{stem}_out_v1.xml", len(opens),
                         opens, quorum, quorum, 3, 3 * quorum, quorum + 2, nbytes)


QUORUMS = (1, 2)
TEMPLATES = {(kind, q): _kind_templates(kind, q) for kind in ("ttv-nested", "ttv-emcee", "reproject-tile")
             for q in QUORUMS}
DEFAULT_QUORUM = 2  # two volunteers' results are compared before one is trusted


def templates_for(kind: str, quorum: int = DEFAULT_QUORUM) -> KindTemplates:
    try:
        return TEMPLATES[(kind, quorum)]
    except KeyError:
        raise ValueError(f"no BOINC templates for task kind {kind!r} with quorum {quorum!r}; "
                         f"kinds: {sorted({k for k, _ in TEMPLATES})}, quorums: {QUORUMS}") from None


# --- names ----------------------------------------------------------------------------------------

WU_NAME_RE = re.compile(r"^[A-Za-z0-9_.\-]{1,160}$")
# Upload file names: RESULT_NAME + "_r" + random + "_" + file index, RESULT_NAME = WU_NAME + "_" + replica
# (observed: oa_py_link_1_0_r75024448_0 for result oa_py_link_1_0 of work unit oa_py_link_1).
_UPLOAD_RE = re.compile(r"^(?P<result>(?P<wu>[A-Za-z0-9_.\-]+)_(?P<replica>[0-9]+))_r(?P<rand>[0-9]+)_(?P<index>[0-9]+)"
                        r"(?:\.gz)?$")


@dataclass(frozen=True)
class UploadName:
    wu_name: str
    result_name: str
    replica: int
    file_index: int


def parse_upload_name(file_name: str) -> UploadName:
    """WU and result names from an uploaded output file's name (set by the server, not the volunteer)."""
    match = _UPLOAD_RE.match(file_name)
    if match is None:
        raise ValueError(f"{file_name!r} is not a BOINC output file name (RESULT_rNNN_I, RESULT = WU_N)")
    return UploadName(match["wu"], match["result"], int(match["replica"]), int(match["index"]))


def check_wu_name(name: str) -> str:
    if not isinstance(name, str) or not WU_NAME_RE.match(name):
        raise ValueError(f"work-unit name {name!r} is not 1-160 characters of letters, digits, '_', '.', '-'")
    return name


def fanout_dir(file_name: str, fanout: int = 1024) -> str:
    """BOINC's download/upload fan-out directory for a file name (``dir_hier_path``): hex digits 1-7 of
    the md5 of the name, as an integer modulo ``uldl_dir_fanout``, written in hex."""
    import hashlib

    if fanout <= 0:
        return ""
    digest = hashlib.md5(file_name.encode()).hexdigest()
    return f"{int(digest[1:8], 16) % fanout:x}"
