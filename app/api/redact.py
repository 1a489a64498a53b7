"""Keeps configured secrets (the database password, the API token...) out of responses and log lines.

Isotope's own messages never carry them; this is the second line of defence for text that comes
from elsewhere (a driver's error message, a model provider's error, a third-party log line). The
implementation is shared with the CLI: :mod:`app.masking`.
"""

from __future__ import annotations

from app.masking import MASK, RedactingFilter, install_log_filter, scrub
from app.masking import remember_settings as register_settings

__all__ = ["MASK", "RedactingFilter", "install_log_filter", "register_settings", "scrub"]
