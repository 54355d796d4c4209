"""``openastro-validate-init``: script_validator's init script.

Called as BOINC calls it (bare name, default arguments): ``../bin/openastro-validate-init PATH...`` from
``PROJECT/tmp_HOST``, one PATH per output file of one result. Exit 0 = valid, 3 = transient (retry later),
anything else = invalid. Each decision is one line on stderr (the daemon's log).
"""

from __future__ import annotations

import sys

from server.core.boinc_contract import EXIT_INVALID, EXIT_TRANSIENT, EXIT_VALID
from validator.checks import InvalidResult
from validator.common import Transient, check_upload, log, open_app, record_validation, work_unit_for_file

PROGRAM = "openastro-validate-init"


def validate_paths(paths: list[str]) -> int:
    if not paths:
        log(PROGRAM, "called without output file paths: configure script_validator with the bare script name "
                     "(no argument tokens); treating as transient so nothing is wrongly invalidated")
        return EXIT_TRANSIENT
    app = open_app()
    for path in paths:
        try:
            wu, result_name = work_unit_for_file(app, path)
        except (ValueError, LookupError) as exc:
            log(PROGRAM, f"INVALID {path}: {exc}")
            return EXIT_INVALID
        try:
            checked = check_upload(wu, path)
        except InvalidResult as exc:
            log(PROGRAM, f"INVALID {result_name} ({wu.kind}): {exc}")
            record_validation(app, wu, result_name, None, False, str(exc), None)
            return EXIT_INVALID
        record_validation(app, wu, result_name, checked.sha256, True, "", dict(checked.summary))
        log(PROGRAM, f"valid {result_name} ({wu.kind})")
    return EXIT_VALID


def main(argv: list[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    try:
        return validate_paths(args)
    except Transient as exc:
        log(PROGRAM, f"TRANSIENT: {exc}")
        return EXIT_TRANSIENT


if __name__ == "__main__":
    sys.exit(main())
