"""JSON bodies that never fail to encode.

Session data may hold strings with lone surrogates (the store keeps them exactly); UTF-8 cannot
carry those, so such a body is written with ``\\uXXXX`` escapes instead, which any JSON parser
turns back into the same string.
"""

from __future__ import annotations

import json
from typing import Any

from fastapi.responses import JSONResponse


def dumps(value: Any) -> bytes:
    """Compact JSON as UTF-8 (ASCII escapes only when the text holds lone surrogates)."""
    text = json.dumps(value, ensure_ascii=False, allow_nan=False, separators=(",", ":"))
    try:
        return text.encode("utf-8")
    except UnicodeEncodeError:
        return json.dumps(value, ensure_ascii=True, allow_nan=False, separators=(",", ":")).encode("ascii")


class JSONBody(JSONResponse):
    """``JSONResponse`` rendered with :func:`dumps`."""

    def render(self, content: Any) -> bytes:
        return dumps(content)
