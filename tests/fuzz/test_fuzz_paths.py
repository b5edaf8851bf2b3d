"""The path normalizer (authz.paths) on arbitrary text: it refuses with
InvalidPath or returns a path that is already normal (normalizing again
changes nothing), starts with '/', has no empty segment run ('//') and no
dot segment. A request target always splits into a path and a query."""

from __future__ import annotations

import contextlib
import re

from hypothesis import given
from hypothesis import strategies as st

from authz.errors import InvalidPath
from authz.paths import normalize_path, split_path
from tests.fuzz import budget
from tests.fuzz.strategies import PIECES

paths = st.one_of(
    st.text(),
    st.lists(st.sampled_from(PIECES), max_size=16).map("".join),
    st.lists(st.one_of(st.sampled_from(PIECES), st.text(max_size=3)),
             max_size=12).map(lambda parts: "/" + "".join(parts)),
)

_DOT_SEGMENT = re.compile(r"/\.\.?(?=/|$)")


def _normal(path: str) -> None:
    assert path.startswith("/"), path
    assert "//" not in path, path
    assert not _DOT_SEGMENT.search(path), path
    assert normalize_path(path) == path, path


@budget(3000)
@given(raw=paths)
def test_normalize_refuses_cleanly_or_returns_a_normal_path(raw: str) -> None:
    try:
        normalized = normalize_path(raw)
    except InvalidPath as exc:
        assert exc.reason.value == "invalid_path"
        return
    _normal(normalized)


@budget(1500)
@given(target=st.one_of(st.text(), st.lists(st.sampled_from([*PIECES, "?", "&", "="]), max_size=16).map("".join)))
def test_a_request_target_splits_into_a_path_without_query_or_fragment(target: str) -> None:
    path, query = split_path(target)
    assert "?" not in path and "#" not in path and "#" not in query
    with contextlib.suppress(InvalidPath):
        _normal(normalize_path(path))
