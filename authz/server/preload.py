"""What the workers' parent process imports before it forks any worker.

``authz serve`` starts its workers from a multiprocessing fork server
(``supervisor.WorkerHandle``) that imports this module first: the worker's
code, the policy compiler with the CEL analysis parser it uses at load, the
gRPC and crypto libraries. Each worker forked from it shares those pages
with its siblings instead of importing its own copy. ``gc.freeze()`` moves
every object imported so far out of the collector's reach, so a worker's
collections never touch (and so never copy) the shared pages.

Nothing here opens a socket, starts a thread or loads a policy: the fork
server stays a plain parent, and every worker loads and checks the
supervisor's policy generation itself (``authz.server.generation``).
"""

from __future__ import annotations

import gc

import authz.server.worker  # noqa: F401  (the worker's code and all it imports)

try:  # the analysis parser policy loading uses (authz.cel), imported lazily there
    from celpy import celparser

    celparser.CELParser()  # builds (and caches) the grammar's tables
except ImportError:  # pragma: no cover - celpy is a dependency
    pass

gc.collect()
gc.freeze()
