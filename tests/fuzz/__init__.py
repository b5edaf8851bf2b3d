"""Property-based fuzzing (hypothesis) of what reads untrusted input: the
gRPC and HTTP doors, the path normalizer, the policy loader and the token
parser. Every input must end in a decision, a clean refusal or a
``FILE:LINE`` config error, never in an exception of another kind.

Each target has a fixed budget of examples (a few seconds each), and no
example database is written: a failure prints the example, and
``@reproduce_failure`` with the printed blob replays it. For a longer hunt,
``AUTHZ_FUZZ_SCALE=20 python -m pytest tests/fuzz`` multiplies every budget.
"""

from __future__ import annotations

import os

from hypothesis import HealthCheck, settings

SCALE = float(os.environ.get("AUTHZ_FUZZ_SCALE", "1"))


def budget(examples: int) -> settings:
    """The settings of one fuzz target: ``examples`` inputs (times
    ``AUTHZ_FUZZ_SCALE``), no per-example deadline (the machine is shared),
    no database."""
    return settings(max_examples=max(1, round(examples * SCALE)), deadline=None, database=None, print_blob=True,
                    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large,
                                           HealthCheck.function_scoped_fixture])
