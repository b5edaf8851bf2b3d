"""What a section's compiler may ask of the policy compiler
(:class:`authz.config.compile.PolicyCompiler`): report a problem at a
``FILE:LINE``, compile a CEL expression, check a header name, read a key file.
The sections (``callers``, ``response``, ``deny_with``) take this protocol
rather than the compiler, so none of them imports the module that imports it."""

from __future__ import annotations

from collections.abc import Callable
from typing import Protocol, TypeVar

from authz.cel import Expression
from authz.config.source import Located, Path

T = TypeVar("T")

#: What is said of a header name that fails ``header_name``, with the name as written.
UNSETTABLE_HEADER = "{!r} is not a header authz may set or remove (lower-case names; not pseudo or hop-by-hop headers)"


class Compiling(Protocol):
    located: Located

    def problem(self, path: Path, message: str) -> None: ...
    def once(self, seen: set[str], value: str, path: Path, message: str) -> None: ...
    def attempt(self, path: Path, build: Callable[[], T]) -> T | None: ...
    def cel(self, path: Path, source: str, result: str) -> Expression | None: ...
    def key_file(self, name: str, path: Path, parse: Callable[[bytes], T]) -> T | None: ...
    def header_name(self, name: str, path: Path, message: str = UNSETTABLE_HEADER, *,
                    fold: bool = False) -> str | None: ...
