"""``openastro-validate-compare``: script_validator's compare script.

Called as ``../bin/openastro-validate-compare PATHS_OF_RESULT_1... PATHS_OF_RESULT_2...`` (equal halves)
from ``PROJECT/tmp_HOST``. Exit 0 = equivalent, 3 = transient, anything else = not equivalent. Sampler runs
are compared statistically (hosts differ in floating point), tiles with a NaN-aware tolerance. Each file first
passes every init check again (``validator.common.check_upload``): non-finite, foreign or oversized results are
never equivalent to anything.
"""

from __future__ import annotations

import sys

from server.core.boinc_contract import EXIT_INVALID, EXIT_TRANSIENT, EXIT_VALID
from validator.checks import InvalidResult, compare_envelopes
from validator.common import Transient, check_upload, log, open_app, work_unit_for_file

PROGRAM = "openastro-validate-compare"


def compare_paths(paths: list[str]) -> int:
    if not paths or len(paths) % 2:
        log(PROGRAM, f"expected the paths of two results (equal halves), got {len(paths)}: configure "
                     "script_validator with the bare script name; treating as transient")
        return EXIT_TRANSIENT
    half = len(paths) // 2
    app = open_app()
    for first, second in zip(paths[:half], paths[half:]):
        try:
            wu_a, name_a = work_unit_for_file(app, first)
            wu_b, name_b = work_unit_for_file(app, second)
        except (ValueError, LookupError) as exc:
            log(PROGRAM, f"NOT EQUIVALENT: {exc}")
            return EXIT_INVALID
        if wu_a.id != wu_b.id:
            log(PROGRAM, f"NOT EQUIVALENT: {name_a} and {name_b} belong to different work units")
            return EXIT_INVALID
        try:
            env_a = check_upload(wu_a, first).envelope  # the init checks again: compare trusts no earlier call
            env_b = check_upload(wu_b, second).envelope
        except InvalidResult as exc:
            log(PROGRAM, f"NOT EQUIVALENT ({wu_a.name}): {exc}")
            return EXIT_INVALID
        verdict = compare_envelopes(env_a, env_b)
        if not verdict.equivalent:
            log(PROGRAM, f"NOT EQUIVALENT {name_a} vs {name_b}: {verdict.reason}")
            return EXIT_INVALID
        log(PROGRAM, f"equivalent {name_a} vs {name_b}: {verdict.reason}")
    return EXIT_VALID


def main(argv: list[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    try:
        return compare_paths(args)
    except Transient as exc:
        log(PROGRAM, f"TRANSIENT: {exc}")
        return EXIT_TRANSIENT


if __name__ == "__main__":
    sys.exit(main())
