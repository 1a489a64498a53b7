"""The outage spool's record: one write acknowledged while PostgreSQL was unreachable.

A record is a JSON object in its own file (see :mod:`app.store.outage.spool`). Its format is
declared here and versioned (``format``); records written before the field existed are format 1,
which is what this code writes, so every record already on disk reads the same as before.

A :class:`SaveRecord` is a delta against the state the writer knew (``base_version`` /
``base_count``, or ``prev``: the write before it in the same chain), or the whole message list
(``full``) when it knew nothing. A :class:`DeleteRecord` soft- or hard-deletes a session.
"""

from __future__ import annotations

from typing import Any, Final, Literal

from pydantic import BaseModel, ConfigDict, ValidationError

FORMAT: Final = 1


class UnreadableRecord(ValueError):
    """A file in the spool directory that is not a readable record."""


class SpoolRecord(BaseModel):
    """What every record has: which write of which session, acknowledged when."""

    model_config = ConfigDict(frozen=True, strict=True, extra="ignore")

    format: Literal[1] = 1  # FORMAT
    kind: str
    write_id: str
    session_id: str
    acked_at: str

    def to_json(self) -> dict[str, Any]:
        return self.model_dump(mode="json")

    @staticmethod
    def parse(raw: Any, name: str = "record") -> SaveRecord | DeleteRecord:
        """The record in ``raw`` (a parsed JSON value); UnreadableRecord if it is not one."""
        if not isinstance(raw, dict) or "session_id" not in raw or "write_id" not in raw:
            raise UnreadableRecord(f"spooled record {name} is not an outage-spool record")
        cls = DeleteRecord if raw.get("kind") == "delete" else SaveRecord
        try:
            return cls.model_validate(raw)
        except ValidationError as exc:
            problems = "; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in exc.errors()[:3])
            raise UnreadableRecord(f"spooled record {name} is not an outage-spool record ({problems})") from None


class SaveRecord(SpoolRecord):
    """A spooled save: the encoded texts the PostgreSQL store writes, planned by the writer."""

    kind: Literal["save"] = "save"
    prev: str | None  # the write id this one follows in its chain, if any
    base_version: int | None  # the version the writer saw in PostgreSQL, if it knew one
    # How many messages the writer believed were stored before this write: replay applies the
    # delta in place only if PostgreSQL holds exactly that many (an earlier write of the chain
    # may have been merged after other instances' turns). None: not a delta (or not recorded).
    prev_count: int | None = None
    base_count: int
    rewrite: bool
    full: bool  # ``texts`` is the whole message list, not only the new messages
    texts: list[str]
    session_data: str
    members_upsert: dict[str, str]
    members_delete: list[str]
    members_full: bool
    metadata: str | None
    created_at: str
    expires_at: str | None
    uncertain: bool  # PostgreSQL may have committed this write before the connection died


class DeleteRecord(SpoolRecord):
    """A spooled delete."""

    kind: Literal["delete"] = "delete"
    soft: bool
