"""Text for people: the terminal's width, NO_COLOR, and wrapping that never breaks a command."""

from __future__ import annotations

import os
import re
import shutil
import sys
import textwrap

MIN_WIDTH = 60
# A pipe or a file gets no wrapping (grep sees one check per line); condensed text still needs
# a width there.
PIPE_WIDTH = 100
ELLIPSIS = "…"


def no_color() -> bool:
    """https://no-color.org: NO_COLOR set and not empty turns colour off, even on a terminal."""
    return bool(os.environ.get("NO_COLOR"))


def terminal_width() -> int | None:
    """Columns to wrap at (at least MIN_WIDTH), or None when stdout is not a terminal."""
    isatty = getattr(sys.stdout, "isatty", None)
    if isatty is None or not isatty():
        return None
    return max(MIN_WIDTH, shutil.get_terminal_size().columns)


def wrap(text: str, width: int | None, first: str, rest: str) -> list[str]:
    """`text` after `first`, continuation lines after `rest` (a hanging indent); words and
    hyphenated tokens (flags, versions, CPU lists) are never split. No width: one line."""
    if width is None or len(first) + len(text) <= width:
        return [first + text]
    return textwrap.wrap(
        text,
        width,
        initial_indent=first,
        subsequent_indent=rest,
        break_long_words=False,
        break_on_hyphens=False,
    ) or [first.rstrip()]


def _split_commands(fix: str) -> list[str]:
    """A fix's `; `-separated parts, never splitting inside quotes, backticks or brackets."""
    parts: list[str] = []
    depth, quote, start = 0, "", 0
    for i, ch in enumerate(fix):
        if quote:
            quote = "" if ch == quote else quote
        elif ch in "'\"`" and (i == 0 or fix[i - 1] in " =("):  # not an apostrophe
            quote = ch
        elif ch in "([{":
            depth += 1
        elif ch in ")]}":
            depth = max(0, depth - 1)
        elif depth == 0 and fix.startswith("; ", i):
            parts.append(fix[start:i])
            start = i + 2
    parts.append(fix[start:])
    return [p.strip() for p in parts if p.strip()]


def fix_lines(fix: str, width: int | None, indent: str) -> list[str]:
    """`fix: TEXT` on one line when it fits; else `fix:` alone and each `; `-separated part on
    its own line, unbroken, so every command stays copy-pasteable."""
    line = f"{indent}fix: {fix}"
    if width is None or len(line) <= width:
        return [line]
    return [f"{indent}fix:"] + [f"{indent}  {part}" for part in _split_commands(fix)]


def condense(text: str, width: int) -> str:
    """`text` on one line of at most `width` columns: its first sentence when that fits, else
    cut at a word boundary with an ellipsis."""
    if len(text) <= width:
        return text
    sentence = re.split(r"(?<=\.) ", text, maxsplit=1)[0]
    if len(sentence) <= width and sentence != text:
        return sentence
    return textwrap.shorten(text, width, placeholder=f" {ELLIPSIS}", break_on_hyphens=False)
