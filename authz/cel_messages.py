"""The CEL runtime's error reports, made readable on one line: the first
error with its position, syntax errors in plain words, and a type clash
named by its operator and the types on each side (``'==' cannot be applied
to list(string) and string``) rather than by the overload the checker
looked for."""

from __future__ import annotations

import re
from collections.abc import Mapping

_ERROR_LINE = re.compile(r"ERROR: <input>:(-?\d+):(-?\d+): (.*)")
_MISMATCHED = re.compile(r"Syntax error: (?:mismatched|extraneous) input (.*?) expecting .*")
_OVERLOAD = re.compile(r"found no matching overload for '([^']*)' applied to '\((.*)\)'")
#: Operators by the name of their overloads (others lose their underscores: '_==_' is '==').
_OPERATORS = {"_[_]": "[]", "@in": "in", "!_": "!", "-_": "-", "_?_:_": "?:"}
#: Type names as a policy author writes them.
_TYPE_NAMES = {"google.protobuf.Timestamp": "timestamp", "google.protobuf.Duration": "duration",
               "google.protobuf.Value": "dyn"}


def first_error(report: str, names: Mapping[str, str] | None = None) -> tuple[str, int | None, int | None]:
    """The first error of ``report`` as (message, line, column), the message
    saying where in the expression when the report does; ``names`` renames
    types in it (a message type the checker declared → what it stands for)."""
    for line in report.splitlines():
        match = _ERROR_LINE.search(line)
        if not match:
            continue
        text = readable(match.group(3), names)
        row, column = int(match.group(1)), int(match.group(2))
        if row < 1:
            return text, None, None
        where = f"line {row}, column {column} of the expression" if row > 1 else f"column {column}"
        return f"{text} ({where})", row, column
    first = report.splitlines()[0] if report else "invalid expression"
    return readable(first.removeprefix("INVALID_ARGUMENT: "), names), None, None


def readable(text: str, names: Mapping[str, str] | None = None) -> str:
    text = text.removesuffix(" [INVALID_ARGUMENT]").replace(" (in container '')", "")
    match = _MISMATCHED.fullmatch(text)
    if match:
        found = match.group(1)
        return ("syntax error: unexpected end of expression" if found == "'<EOF>'"
                else f"syntax error: unexpected {found}")
    if text.startswith("Syntax error:"):
        return "syntax error:" + text[len("Syntax error:"):]
    match = _OVERLOAD.search(text)
    if match:
        function, arguments = match.group(1), match.group(2)
        operator = _OPERATORS.get(function) or function.strip("_")
        types = _split_types(arguments)
        said = " and ".join(types) if len(types) <= 2 else f"({', '.join(types)})"
        text = f"{text[: match.start()]}'{operator}' cannot be applied to {said}{text[match.end():]}"
    renames = {**_TYPE_NAMES, **(names or {})}
    for name in sorted(renames, key=len, reverse=True):
        text = text.replace(name, renames[name])
    return text


def _split_types(text: str) -> list[str]:
    """``list(string), map(string, int)`` → its two types (a comma inside
    parentheses belongs to a type)."""
    parts, depth, start = [], 0, 0
    for index, char in enumerate(text):
        if char in "(<":
            depth += 1
        elif char in ")>":
            depth -= 1
        elif char == "," and depth == 0:
            parts.append(text[start:index].strip())
            start = index + 1
    parts.append(text[start:].strip())
    return parts
