"""A worker's memory, black box: RSS after many unique callers, PSS per worker.

1. Idle: ``authz serve`` on the acceptance policy with 1, then N workers;
   the sum of the workers' PSS (``/proc/PID/smaps_rollup``, shared pages
   divided among the processes that map them) and what each worker more adds.
2. Callers: ``authz serve --workers 1`` with default cache settings on the
   same policy plus an HS256 issuer (tokens that mint in microseconds; what a
   worker keeps per caller does not depend on the algorithm), fed, on the
   gRPC door, Checks each with a token of a caller never seen before; the
   worker's RSS after each checkpoint (120,000 callers, then ``--tokens``).

Run: ``.venv/bin/python benchmarks/worker_memory_bench.py [--workers 2]
[--checkpoints 120000,1000000] [--json]``. Asserts nothing about size (it
does check that every answer is an allow).
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.worker_proc import (
    Authz,
    Sender,
    check_bytes,
    hs256_policy,
    hs256_tokens,
    pss_mb,
    rss_mb,
    settle,
    worker_pids,
)
from testkit.paths import ACCEPTANCE


def idle(workers: int) -> dict[str, float]:
    with Authz(ACCEPTANCE / "policy.yaml", workers=workers) as authz:
        pids = worker_pids(authz)
        for pid in pids:
            settle(pid)
        return {"workers": workers, "pss_sum_mb": sum(pss_mb(p) for p in pids),
                "rss_mean_mb": sum(rss_mb(p) for p in pids) / len(pids),
                "supervisor_pss_mb": pss_mb(authz.proc.popen.pid)}


def callers(checkpoints: list[int]) -> list[dict[str, float]]:
    out = []
    with tempfile.TemporaryDirectory(prefix="authz-membench-") as tmp:
        policy = hs256_policy(ACCEPTANCE / "policy.yaml", Path(tmp))
        with Authz(policy, workers=1) as authz:
            pid = worker_pids(authz)[0]
            sender = Sender(authz.grpc_address, window=16)
            settle(pid)
            out.append({"callers": 0, "rss_mb": rss_mb(pid), "pss_mb": pss_mb(pid)})
            sent, now, started = 0, int(time.time()), time.monotonic()
            for target in checkpoints:
                count = target - sent
                requests = (check_bytes(t, sent + i) for i, t in enumerate(hs256_tokens(sent, count, now)))
                allowed = sender.send(requests)
                if allowed != count:
                    raise SystemExit(f"error: {count - allowed} of {count} Checks were not allowed")
                sent = target
                settle(pid)
                out.append({"callers": sent, "rss_mb": rss_mb(pid), "pss_mb": pss_mb(pid),
                            "seconds": time.monotonic() - started})
                print(f"  after {sent:,} unique callers: worker RSS {out[-1]['rss_mb']:.0f} MB", flush=True)
            sender.close()
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workers", type=int, default=2, help="N for the PSS sum")
    parser.add_argument("--checkpoints", default="120000,1000000", help="unique callers at which RSS is read")
    parser.add_argument("--skip-idle", action="store_true")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args(argv)
    result: dict[str, object] = {}
    if not args.skip_idle:
        one, many = idle(1), idle(args.workers)
        per_worker = (many["pss_sum_mb"] - one["pss_sum_mb"]) / max(args.workers - 1, 1)
        print(f"idle, 1 worker: PSS {one['pss_sum_mb']:.0f} MB, RSS {one['rss_mean_mb']:.0f} MB; "
              f"{args.workers} workers: PSS sum {many['pss_sum_mb']:.0f} MB (+{per_worker:.0f} MB per worker "
              f"more; goal < 60), RSS {many['rss_mean_mb']:.0f} MB each; supervisor PSS "
              f"{many['supervisor_pss_mb']:.0f} MB", flush=True)
        result["idle"] = [one, many]
        result["pss_per_worker_mb"] = per_worker
    rows = callers([int(c) for c in args.checkpoints.split(",")])
    result["callers"] = rows
    print(f"one worker, default caches: RSS {rows[0]['rss_mb']:.0f} MB idle, "
          + ", ".join(f"{r['rss_mb']:.0f} MB after {int(r['callers']):,}" for r in rows[1:]) + " (goal < 160)")
    if args.json:
        print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
