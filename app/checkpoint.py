"""Checkpoint policy of the volunteer app: what to do with the checkpoint found in the slot.

The checkpoint *format* belongs to the kernel that writes it (``app.ttv.samplers``: a versioned
``{format, format_version, kind, fingerprint, state}`` envelope around dynesty's pickled sampler,
or an emcee ``.npz``; both written to a temp file, fsynced and ``os.replace``d, so a kill leaves
either the previous or the new checkpoint). Checkpoints never leave the machine that wrote them.
The *policy* is here, the same for every kind:

* no file -> fresh start (one stderr line);
* a file that cannot be decoded (truncated, garbage) -> moved aside to ``NAME.unreadable`` and the
  task starts over, saying so in one stderr line;
* a decodable checkpoint of another format, version or kind -> :class:`CheckpointMismatch`,
  refused loudly (non-zero exit, ``EXIT_CHECKPOINT_MISMATCH``), never silently reused or
  overwritten;
* temp files a killed writer left beside it are removed at start-up.

No numpy at import time (``app.main`` imports this before capping threads).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Callable, Mapping

from app.runtime import log


class CheckpointUnreadable(ValueError):
    """The checkpoint file cannot be decoded (readers raise this; the task starts over)."""


class CheckpointMismatch(ValueError):
    """The checkpoint is readable but belongs to another format, version or kind."""


def inspect_checkpoint(path: Path, read_header: Callable[[Path], Mapping[str, Any]],
                       expected: Mapping[str, Any]) -> bool:
    """Apply the policy above; True when the checkpoint at ``path`` should be resumed from.

    ``read_header(path)`` decodes the file and returns its identifying fields, raising
    :class:`CheckpointUnreadable` when it cannot. ``expected`` lists the fields that must match.
    """
    path = Path(path)
    if not path.exists():
        log("no checkpoint; fresh start")
        return False
    try:
        header = read_header(path)
    except CheckpointUnreadable as exc:
        aside = path.with_name(path.name + ".unreadable")
        os.replace(path, aside)
        log(f"checkpoint {path.name} is unreadable ({exc}); starting over (kept as {aside.name})")
        return False
    wrong = {key: header.get(key) for key, value in expected.items() if header.get(key) != value}
    if wrong:
        raise CheckpointMismatch(f"checkpoint {path.name} has {wrong}, this app needs "
                                 f"{ {key: expected[key] for key in wrong} }")
    log(f"resuming from checkpoint {path.name}")
    return True


def remove_stale_temps(path: Path, patterns: tuple[str, ...] = (".{name}.*.tmp",)) -> list[Path]:
    """Delete temp files a killed writer left beside ``path``.

    The default pattern matches only our own temp names for ``path``; pass the TTV kernel's
    ``.ckpt-*`` pattern only for a directory the task owns (the slot), never the shared
    project directory an output stub points into.
    """
    path = Path(path)
    removed = []
    for pattern in patterns:
        for tmp in sorted(path.parent.glob(pattern.format(name=path.name))):
            if tmp.is_file():
                tmp.unlink(missing_ok=True)
                removed.append(tmp)
    return removed
