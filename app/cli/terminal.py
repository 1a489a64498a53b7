"""Text from storage, made safe to print on a terminal.

Session ids, metadata and messages are written by API clients; printed raw, an escape sequence
in them can rewrite the screen, set the window title or hide text, and an id such as
``[link=file:///etc]x[/]`` would be taken as Rich markup. :func:`shown` makes a value inert:
control characters become visible escapes (``\\x1b``), and Rich markup is escaped.
"""

from __future__ import annotations

import json
import re
from typing import Any

from rich.markup import escape

# C0 and C1 controls, DEL, and the bidirectional overrides that reorder what a reader sees.
_CONTROLS = re.compile("[\x00-\x1f\x7f-\x9f\u061c\u200e\u200f\u202a-\u202e\u2066-\u2069]")
_CONTROLS_BUT_LINES = re.compile("[\x00-\x08\x0b-\x1f\x7f-\x9f\u061c\u200e\u200f\u202a-\u202e\u2066-\u2069]")
# What json.dumps(ensure_ascii=False) leaves raw: C1 controls, DEL and the bidi characters.
_RAW_IN_JSON = re.compile("[\x7f-\x9f\u061c\u200e\u200f\u202a-\u202e\u2066-\u2069]")


def _visible(match: re.Match[str]) -> str:
    code = ord(match.group())
    return f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}"


def plain(value: Any, *, lines: bool = False) -> str:
    """``value`` as text with control characters shown as escapes (``lines``: keep newlines and tabs)."""
    return (_CONTROLS_BUT_LINES if lines else _CONTROLS).sub(_visible, str(value))


def shown(value: Any, *, lines: bool = False) -> str:
    """``value`` as inert Rich markup: control characters visible, markup escaped."""
    return escape(plain(value, lines=lines))


def json_text(value: Any, **kwargs: Any) -> str:
    """``json.dumps`` for a terminal: characters JSON leaves raw are written as ``\\uXXXX`` escapes."""
    text = json.dumps(value, ensure_ascii=False, **kwargs)
    return _RAW_IN_JSON.sub(lambda m: f"\\u{ord(m.group()):04x}", text)
