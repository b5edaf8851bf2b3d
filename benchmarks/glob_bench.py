"""How long one glob match takes on a hostile 64 KiB path, for every pattern
shape that makes a backtracking regex engine slow (docs/security.md 50).

Path and principal globs compile to RE2 automata (``authz.matchers.Globs``),
whose matching time grows linearly with the text whatever the pattern. Each
row calls the matcher directly (below the path-length limit a request would
meet first: ``paths.max_length``, 8192 by default), on a path built to keep
the pattern almost matching all the way and then fail, the worst case for
backtracking. Shown per shape:

- the best and median time of one match on the 64 KiB path, and whether it is
  under the 1 ms bound;
- the time on an 8 KiB path, and the 64 KiB / 8 KiB ratio (about 8 when the
  time is linear in the length);
- for contrast, the backtracking regex the same glob compiled to before
  (Python's ``re``) on a short version of the path, whose length is given:
  even a few hundred bytes take it milliseconds to seconds.

Run: ``python benchmarks/glob_bench.py [--quick] [--no-before]``. Prints a
table; asserts nothing about time (it does check that the automaton and the
backtracking regex give the same answer on the short path).
"""

from __future__ import annotations

import argparse
import re
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import NamedTuple

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from authz.matchers import compile_globs, compile_paths, glob_regex
from authz.paths import MAX_PATH_LENGTH

BIG = 64 * 1024
SMALL = 8 * 1024
BOUND_US = 1000.0


class Shape(NamedTuple):
    name: str
    patterns: tuple[str, ...]
    #: The hostile text for a length (trimmed to exactly that length).
    text: Callable[[int], str]
    #: The length the backtracking regex is shown on.
    before_length: int
    principal: bool = False


def _repeat(head: str, unit: str, length: int) -> str:
    return (head + unit * (length // len(unit) + 1))[:length]


SHAPES = [
    Shape("'**' three times", ("/**/a/**/b/**/c",), lambda n: _repeat("/", "a/b/", n), 300),
    Shape("'*' five times in one segment", ("/files/*a*a*a*a*b",), lambda n: _repeat("/files/", "a", n), 120),
    Shape("'*' thirteen times in one segment", ("/*a*a*a*a*a*a*a*a*a*a*a*a*b",), lambda n: _repeat("/", "a", n), 26),
    Shape("'**' eight times", ("/**/**/**/**/**/**/**/**/x",), lambda n: _repeat("/", "a/", n), 40),
    Shape("'**' and '*' inside segments", ("/**/*a*/**/*b*/**/*c*/d",), lambda n: _repeat("/", "xaby/", n), 200),
    Shape("'*' segments, no '**'", ("/*/*/*/*/*/*/*/*/z",), lambda n: _repeat("/", "a/", n), 4000),
    Shape("a policy's worth of patterns at once",
          ("/api/orders", "/api/orders/*", "/api/orders/**", "/**/a/**/b/**/c", "/files/*a*a*a*a*b",
           "/**/*a*/**/*b*/**/*c*/d", "/**/**/**/**/**/**/**/**/x", "/static/**/*.js"),
          lambda n: _repeat("/", "a/b/xaby/", n), 68),
    Shape("a principal glob", ("spiffe://**/ns/*a*a*a*b/**/sa/*",),
          lambda n: _repeat("spiffe://td/ns/", "a", n), 120, principal=True),
]


def _time_us(call: Callable[[], object], repeat: int) -> list[float]:
    times = []
    for _ in range(repeat):
        started = time.perf_counter()
        call()
        times.append((time.perf_counter() - started) * 1e6)
    return times


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer repetitions")
    parser.add_argument("--no-before", action="store_true", help="skip the backtracking contrast column")
    args = parser.parse_args()
    repeat = 5 if args.quick else 30

    print(f"Python {sys.version.split()[0]}; default path-length limit {MAX_PATH_LENGTH} characters "
          f"(paths.max_length); every match below is on a longer text, calling the matcher directly.\n")
    header = (f"{'shape':<38} {'64 KiB best':>12} {'median':>9} {'< 1 ms':>7} {'8 KiB':>9} {'ratio':>6}"
              f"   {'backtracking re (before)':>26}")
    print(header)
    print("-" * len(header))
    worst = 0.0
    for shape in SHAPES:
        globs = compile_globs(shape.patterns) if shape.principal else compile_paths(shape.patterns)
        big, small = shape.text(BIG), shape.text(SMALL)
        big_times = _time_us(lambda g=globs, t=big: g.matches(t), repeat)
        small_times = _time_us(lambda g=globs, t=small: g.matches(t), repeat)
        best, median, small_best = min(big_times), statistics.median(big_times), min(small_times)
        worst = max(worst, median)
        before = "skipped"
        if not args.no_before:
            short = shape.text(shape.before_length)
            backtracking = re.compile("|".join(f"(?:{glob_regex(p)})" for p in shape.patterns))
            started = time.perf_counter()
            expected = backtracking.fullmatch(short) is not None
            took = (time.perf_counter() - started) * 1e6
            if globs.matches(short) is not expected:
                print(f"error: {shape.name}: the automaton and the backtracking regex disagree on {short!r}")
                return 1
            before = f"{took:>12,.0f} µs on {shape.before_length:>5} B"
        verdict = "yes" if best < BOUND_US else "NO"
        print(f"{shape.name:<38} {best:>10.1f}µs {median:>7.1f}µs {verdict:>7} {small_best:>7.1f}µs "
              f"{best / small_best:>6.1f}   {before:>26}")
    print(f"\n(best and median of {repeat} matches; the slowest median on 64 KiB: {worst:.1f} µs)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
