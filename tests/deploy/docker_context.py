"""The Dockerfile read as Docker would: its instructions, the .dockerignore
rules, and the build context its build stage copies.

Docker is not available where the tests run, so :func:`copy_build_sources`
lays out what the build stage's ``COPY`` instructions put in ``WORKDIR``: the
tests build the package from exactly that, as ``pip install .`` in the image
does.
"""

from __future__ import annotations

import fnmatch
import shlex
import shutil
from pathlib import Path

from testkit.paths import REPO


def instructions() -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) of the Dockerfile, continuation lines joined."""
    logical: list[str] = []
    pending = ""
    for raw in (REPO / "Dockerfile").read_text(encoding="utf-8").splitlines():
        line = raw.strip()
        if not pending and (not line or line.startswith("#")):
            continue
        if line.endswith("\\"):
            pending += line[:-1] + " "
            continue
        logical.append(pending + line)
        pending = ""
    result = []
    for line in logical:
        keyword, _, rest = line.partition(" ")
        result.append((keyword.upper(), rest.strip()))
    return result


def ignored(path: str) -> bool:
    """Whether .dockerignore excludes ``path`` (no `!` exceptions are used)."""
    patterns = [
        p.strip() for p in (REPO / ".dockerignore").read_text(encoding="utf-8").splitlines()
    ]
    patterns = [p for p in patterns if p and not p.startswith("#")]
    assert not any(p.startswith("!") for p in patterns)
    parts = Path(path).parts
    prefixes = ["/".join(parts[: i + 1]) for i in range(len(parts))]
    for pattern in patterns:
        bare = pattern.removeprefix("**/")
        for prefix in prefixes:
            if fnmatch.fnmatch(prefix, pattern) or (
                pattern.startswith("**/") and fnmatch.fnmatch(Path(prefix).name, bare)
            ):
                return True
    return False


def build_copies() -> list[tuple[list[str], str]]:
    """(sources, destination) of each COPY from the build context (not
    ``--from`` another stage), in order."""
    copies = []
    for keyword, args in instructions():
        if keyword != "COPY":
            continue
        words = shlex.split(args)
        if any(w.startswith("--from=") for w in words):
            continue
        words = [w for w in words if not w.startswith("--")]
        copies.append((words[:-1], words[-1]))
    return copies


def copy_build_sources(workdir: Path) -> list[str]:
    """Copy into ``workdir`` what the build stage's COPY instructions put in
    its WORKDIR, minus what .dockerignore keeps out of the context; the
    repository-relative paths of the files copied.

    Docker's rules for the forms used: a file lands in the destination
    directory (a trailing ``/``, or several sources) or at the destination; a
    directory's *contents* land in the destination."""
    copied: list[str] = []
    for sources, destination in build_copies():
        into_directory = destination.endswith("/") or len(sources) > 1
        for source in sources:
            origin = REPO / source
            if origin.is_dir():
                for path in sorted(origin.rglob("*")):
                    relative = path.relative_to(REPO).as_posix()
                    if path.is_dir() or ignored(relative):
                        continue
                    target = workdir / destination / path.relative_to(origin)
                    target.parent.mkdir(parents=True, exist_ok=True)
                    shutil.copy2(path, target)
                    copied.append(relative)
            else:
                assert not ignored(source), f".dockerignore excludes {source}, which the build copies"
                target = workdir / destination / origin.name if into_directory else workdir / destination
                target.parent.mkdir(parents=True, exist_ok=True)
                shutil.copy2(origin, target)
                copied.append(source)
    return copied
