"""The one hypothesis profile every fuzz test uses: a fixed example budget, derandomized so that CI runs the same
examples every time (a fuzz failure is a bug to fix, never a flake), no per-example deadline (the machine is shared).

Use ``@FUZZ`` on a ``@given`` test; ``@fuzz(n)`` to set a different budget for an expensive target. The budget can
be raised for a local hunt with ``OPENASTRO_FUZZ_EXAMPLES=5000``.
"""

from __future__ import annotations

import os

from hypothesis import HealthCheck, settings

_SCALE = int(os.environ.get("OPENASTRO_FUZZ_EXAMPLES", "0"))


def fuzz(max_examples: int = 200):
    return settings(max_examples=_SCALE or max_examples, derandomize=True, deadline=None, database=None,
                    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large,
                                           HealthCheck.function_scoped_fixture])


FUZZ = fuzz()
