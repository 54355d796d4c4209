"""BOINC input/output templates per task kind (the files in ``templates/`` are rendered from here).

Rules from the contract (../shared/boinc-contract.md):

* Values in the input template win over the same ``create_work`` options, so quorum and error limits live
  in the template, and the per-work-unit resource estimates (``rsc_fpops_est``/``_bound``, memory, disk)
  do NOT: they come from the cost model on the ``create_work`` command line (one call per cost class).
* Every input and the output use ``<copy_file/>``: inputs are real files in the slot, and the output does
  not exist until the app writes it (no soft-link stub to be overwritten and lost).
* ``max_nbytes`` is sized to the real outputs (server.core.boinc_contract); a larger file is a client error.
* Template file names carry a version: BOINC re-reads the output template whenever it creates a result,
  so a template that live work units use is never edited; a change gets a new file name.
"""

from __future__ import annotations

from pathlib import Path

from server.core.boinc_contract import TEMPLATES, KindTemplates

REPO_TEMPLATES_DIR = Path(__file__).resolve().parent.parent / "templates"
DELAY_BOUND_S = 4 * 86400  # a volunteer has 4 days to return a result before it is re-sent


def render_input_template(t: KindTemplates) -> str:
    lines = ["<input_template>"]
    for number in range(t.n_inputs):
        lines += ["    <file_info>", f"        <number>{number}</number>", "    </file_info>"]
    lines.append("    <workunit>")
    for number, open_name in enumerate(t.input_open_names):
        lines += ["        <file_ref>", f"            <file_number>{number}</file_number>",
                  f"            <open_name>{open_name}</open_name>", "            <copy_file/>",
                  "        </file_ref>"]
    lines += [f"        <delay_bound>{DELAY_BOUND_S}</delay_bound>",
              f"        <min_quorum>{t.min_quorum}</min_quorum>",
              f"        <target_nresults>{t.target_nresults}</target_nresults>",
              f"        <max_error_results>{t.max_error_results}</max_error_results>",
              f"        <max_total_results>{t.max_total_results}</max_total_results>",
              f"        <max_success_results>{t.max_success_results}</max_success_results>",
              "    </workunit>", "</input_template>", ""]
    return "\n".join(lines)


def render_output_template(t: KindTemplates) -> str:
    from server.core.boinc_contract import RESULT_OPEN_NAME

    return "\n".join([
        "<output_template>",
        "    <file_info>",
        "        <name><OUTFILE_0/></name>",
        "        <generated_locally/>",
        "        <upload_when_present/>",
        f"        <max_nbytes>{t.max_nbytes}</max_nbytes>",
        "        <url><UPLOAD_URL/></url>",
        "    </file_info>",
        "    <result>",
        "        <file_ref>",
        "            <file_name><OUTFILE_0/></file_name>",
        f"            <open_name>{RESULT_OPEN_NAME}</open_name>",
        "            <copy_file/>",
        "        </file_ref>",
        "    </result>",
        "</output_template>",
        ""])


def rendered_templates() -> dict[str, str]:
    """File name -> text of every template the project uses."""
    out: dict[str, str] = {}
    for t in TEMPLATES.values():
        for name, text in ((t.input_template, render_input_template(t)),
                           (t.output_template, render_output_template(t))):
            if out.get(name, text) != text:
                raise ValueError(f"two task kinds render different text for the template {name!r}")
            out[name] = text
    return out


def write_templates(directory: Path) -> list[Path]:
    """Write the templates into ``directory``; refuse to change an existing file (versioned names)."""
    from server.core.storage import atomic_write_bytes

    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    written = []
    for name, text in sorted(rendered_templates().items()):
        path = directory / name
        if path.exists():
            if path.read_text(encoding="utf-8") != text:
                raise ValueError(f"{path} exists with different content: templates in use are never edited; "
                                 "bump the _vN in the template name instead")
            continue
        atomic_write_bytes(path, text.encode("utf-8"))
        written.append(path)
    return written
