"""docs/policy.md's "Reason codes" table is the one users read: every
reason authz can give has its row, with the HTTP status and gRPC code the
wire really carries (authz.errors.OUTCOMES), and no row names a reason that
does not exist."""

from __future__ import annotations

import re

from authz.errors import OUTCOMES, Reason
from testkit.paths import REPO

ROW = re.compile(r"^\| `(?P<reason>[a-z_]+)` \| (?P<http>\d{3}) \| [A-Z_]+ \((?P<grpc>\d+)\) \|")


def _rows() -> dict[str, tuple[int, int]]:
    text = (REPO / "docs" / "policy.md").read_text()
    section = text.split("\n## Reason codes\n", 1)[1].split("\n## ", 1)[0]
    rows: dict[str, tuple[int, int]] = {}
    for line in section.splitlines():
        match = ROW.match(line)
        if match:
            assert match["reason"] not in rows, f"{match['reason']} has two rows"
            rows[match["reason"]] = (int(match["http"]), int(match["grpc"]))
    return rows


def test_every_reason_has_its_row_with_the_status_the_wire_carries() -> None:
    rows = _rows()
    assert set(rows) == {reason.value for reason in Reason}
    for reason in Reason:
        if reason is Reason.ALLOWED:
            assert rows[reason.value] == (200, 0)
            continue
        outcome = OUTCOMES[reason]
        assert rows[reason.value] == (outcome.http_status, outcome.grpc_code), reason
