"""The console's search, measured: query time over 1,000,000 messages and WAL per turn with and
without the message-text index.

    python -m tests.console.search_probe                 # a private embedded PostgreSQL, 1,000,000 messages
    python -m tests.console.search_probe --messages 100000 --turns 500
    python -m tests.console.search_probe --database-url postgresql://...   # a server of yours (a scratch database)

It loads 10,000 sessions (``--messages`` / 10,000 messages each, alternating human and ai
messages of 6-30 English words, every 20th message a Chinese sentence), with known needles:
one English phrase and one Chinese phrase in 10 sessions each, a common word in about 5% of
messages. Queries go through the console's own code (``app.store.browse.search``), warm, each
timed ``--repeat`` times (median and max). WAL per turn: one engine-sized save (2 messages)
``--turns`` times through ``SessionManager.save_session`` on sessions with 10 and 1,000
messages (``pg_current_wal_lsn`` around each save: the median; and the whole run's WAL divided by
the turns, including the GIN index's pending list merged at the end), with the index and again
after ``DROP INDEX``.
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

import psycopg
from langchain_core.messages import AIMessage, HumanMessage

from app.core.postgres_session_manager import SessionManager
from app.store.embedded import EmbeddedPostgres
from app.store.postgres import browse
from tests.helpers import make_settings

SESSIONS = 10_000
_VOCABULARY = ("the a to and of in is it you that for on with as was be at this have from or one had by word but "
         "not what "
         "all were we when your can said there use an each which she do how their if will up other about out many "
         "then them these so some her would make like him into time has look two more write go see number no way "
         "could people my than first been call who its now find long down day did get come made may part garden "
         "kitchen window letter river mountain coffee report budget meeting schedule travel ticket invoice")
WORDS = _VOCABULARY.split()
CHINESE = ["今天天气很好", "我们明天开会讨论预算", "请把报告发给我", "这个问题需要再想一想",
           "晚饭吃什么", "周末去爬山吧"]
COMMON = "quarterly"  # planted in about 5% of the messages
RARE_EN = "water the plants"
RARE_ZH = "请给植物浇水"

LOAD_SESSIONS = """
INSERT INTO isotope_sessions (session_id, session_data, metadata, created_at, last_updated, version, is_active)
SELECT 'probe-' || i,
       jsonb_build_object('messages', jsonb_build_object('$iso', 'messages', 'count', %(per)s::int, 'bytes', 0),
                          'tasks', '[]'::jsonb, 'files', '{}'::jsonb),
       jsonb_build_object('name', 'Session ' || i, 'user_id', 'user' || (i %% 500)),
       now() - (%(n)s - i) * interval '1 minute', now() - (%(n)s - i) * interval '1 minute', 1, true
  FROM generate_series(1, %(n)s::int) AS i
"""

# Words drawn per message from the vocabulary; every 20th message Chinese; about 5% get COMMON.
LOAD_MESSAGES = """
INSERT INTO isotope_messages (session_id, seq, message)
SELECT 'probe-' || s, q,
       jsonb_build_object('$iso', 'msg', 'type', CASE WHEN q %% 2 = 0 THEN 'human' ELSE 'ai' END, 'content',
           CASE WHEN q %% 20 = 7 THEN (%(zh)s::text[])[1 + (s * 7 + q) %% array_length(%(zh)s::text[], 1)]
                ELSE array_to_string(ARRAY(
                    SELECT (%(words)s::text[])[1 + floor(random() * array_length(%(words)s::text[], 1))::int]
                      FROM generate_series(1, 6 + (s + q) %% 25) WHERE s > 0), ' ')
                     || CASE WHEN (s * 31 + q) %% 20 = 0 THEN ' ' || %(common)s ELSE '' END
           END)
  FROM generate_series(%(first)s::int, %(last)s::int) AS s, generate_series(0, %(per)s::int - 1) AS q
"""

PLANT = """
UPDATE isotope_messages SET message = jsonb_set(message, '{content}', to_jsonb(%(text)s::text))
 WHERE session_id = ANY(%(ids)s) AND seq = 1
"""

INDEX_DDL = "CREATE INDEX idx_isotope_messages_text ON isotope_messages USING gin (isotope_message_tsvector(message))"


def _lsn(conn: psycopg.Connection[Any]) -> int:
    row = conn.execute("SELECT pg_current_wal_lsn() - '0/0'::pg_lsn").fetchone()
    assert row is not None
    return int(row[0])


def load(url: str, messages: int) -> dict[str, float]:
    per = max(2, messages // SESSIONS)
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("SET statement_timeout = 0")
        conn.execute("DROP INDEX IF EXISTS idx_isotope_messages_text")
        started = time.perf_counter()
        conn.execute(LOAD_SESSIONS, {"n": SESSIONS, "per": per})
        for first in range(1, SESSIONS + 1, 1000):
            conn.execute(LOAD_MESSAGES, {"first": first, "last": min(SESSIONS, first + 999), "per": per,
                                         "words": list(WORDS), "zh": CHINESE, "common": COMMON})
        conn.execute(PLANT, {"text": f"please {RARE_EN} before noon", "ids": [f"probe-{i}" for i in range(1, 11)]})
        conn.execute(PLANT, {"text": f"{RARE_ZH}，谢谢", "ids": [f"probe-{i}" for i in range(5001, 5011)]})
        loaded = time.perf_counter() - started
        started = time.perf_counter()
        conn.execute(INDEX_DDL)
        indexed = time.perf_counter() - started
        conn.execute("VACUUM ANALYZE isotope_messages")
        conn.execute("VACUUM ANALYZE isotope_sessions")
        row = conn.execute("SELECT count(*), pg_relation_size('isotope_messages'),"
                           " pg_relation_size('idx_isotope_messages_text') FROM isotope_messages").fetchone()
        assert row is not None
    return {"messages": int(row[0]), "load_s": round(loaded, 1), "index_build_s": round(indexed, 1),
            "table_mb": round(row[1] / 2**20, 1), "index_mb": round(row[2] / 2**20, 1)}


def time_queries(manager: SessionManager, repeat: int) -> dict[str, Any]:
    store = manager.pg
    assert store is not None
    cases = {"rare English phrase": RARE_EN, "rare Chinese phrase": RARE_ZH, "two Chinese characters": "浇水",
             "common word (5% of messages)": COMMON, "frequent word": "garden", "a user id": "user42",
             "no match": "zyxwvut"}
    out: dict[str, Any] = {}
    for label, query in cases.items():
        browse.search(store, query, 26, 0, False)  # warm
        samples, hits = [], 0
        for _ in range(repeat):
            started = time.perf_counter()
            hits = len(browse.search(store, query, 26, 0, False))
            samples.append((time.perf_counter() - started) * 1e3)
        out[label] = {"query": query, "first_page_hits": hits, "median_ms": round(statistics.median(samples), 1),
                      "max_ms": round(max(samples), 1)}
    samples = []
    for _ in range(repeat):
        started = time.perf_counter()
        manager.list_sessions(limit=26)
        samples.append((time.perf_counter() - started) * 1e3)
    out["listing without a query"] = {"median_ms": round(statistics.median(samples), 2)}
    samples = []
    for _ in range(repeat):
        started = time.perf_counter()
        manager.list_sessions(limit=25, offset=SESSIONS - 25)
        manager.count_sessions()
        samples.append((time.perf_counter() - started) * 1e3)
    out["last page of the listing, with the total"] = {"median_ms": round(statistics.median(samples), 2)}
    return out


def wal_per_turn(url: str, manager: SessionManager, turns: int, history: int, tag: str) -> dict[str, float]:
    """WAL and time of ``turns`` saves of 2 new messages each, on sessions starting at ``history``
    messages (after a warm-up of ``turns // 5`` saves and a VACUUM): the median save's WAL, and the whole run's
    WAL per turn including the index's pending list merged at the end (a GIN index with
    ``fastupdate`` queues new entries and merges them in bulk; autovacuum or a full 4 MB list does
    that in a running system)."""
    sessions = 20
    states: list[list[Any]] = []
    for i in range(sessions):
        msgs = [HumanMessage(f"old message {j} about the garden") if j % 2 == 0 else AIMessage(f"reply {j}")
                for j in range(history)]
        manager.save_session(f"wal-{tag}-{history}-{i}", {"messages": msgs, "tasks": [], "files": {}}, metadata={})
        states.append(msgs)

    def turn(t: int) -> float:
        i = t % sessions
        states[i] = states[i] + [HumanMessage(f"add task: water the plants number {t} 请给植物浇水"),
                                 AIMessage(f"Added task #{t}: water the plants number {t}")]
        started = time.perf_counter()
        manager.save_session(f"wal-{tag}-{history}-{i}", {"messages": states[i], "tasks": [], "files": {}},
                             metadata={})
        return (time.perf_counter() - started) * 1e3

    with psycopg.connect(url, autocommit=True) as conn:
        row = conn.execute("SELECT to_regclass('idx_isotope_messages_text') IS NOT NULL").fetchone()
        indexed = bool(row and row[0])
        for t in range(turns // 5):
            turn(t)
        # The setup's bulk inserts would otherwise bring autovacuum (and its WAL) into the run.
        conn.execute("VACUUM (ANALYZE) isotope_messages")
        conn.execute("VACUUM (ANALYZE) isotope_sessions")
        start = _lsn(conn)
        per_save, times = [], []
        for t in range(turns):
            before = _lsn(conn)
            times.append(turn(turns + t))
            per_save.append(_lsn(conn) - before)
        before_flush = _lsn(conn)
        if indexed:
            conn.execute("SELECT gin_clean_pending_list('idx_isotope_messages_text')")
        end = _lsn(conn)
    return {"median_save_wal_bytes": round(statistics.median(per_save)),
            "wal_bytes_per_turn_with_merge": round((end - start) / turns),
            "of_which_merge": round((end - before_flush) / turns),
            "save_ms_median": round(statistics.median(times), 2)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--database-url", help="a scratch database on your server (default: a private embedded one)")
    parser.add_argument("--messages", type=int, default=1_000_000)
    parser.add_argument("--turns", type=int, default=2000)
    parser.add_argument("--repeat", type=int, default=9)
    args = parser.parse_args()
    base = Path(tempfile.mkdtemp(prefix="isotope-search-probe-"))
    embedded = None
    url = args.database_url
    if url is None:
        embedded = EmbeddedPostgres(base / "pg", cleanup="delete", database="isotope_probe")
        url = embedded.start()
    try:
        settings = make_settings(url, base)
        report: dict[str, Any] = {}
        with SessionManager(settings, use_postgres=True) as manager:
            manager.pg.migrate()  # type: ignore[union-attr]
            report["load"] = load(url, args.messages)
            report["queries"] = time_queries(manager, args.repeat)
            report["wal"] = {}
            for history in (10, 1000):
                report["wal"][f"with index, history {history}"] = wal_per_turn(url, manager, args.turns, history, "i")
            with psycopg.connect(url, autocommit=True) as conn:
                conn.execute("DROP INDEX idx_isotope_messages_text")
            for history in (10, 1000):
                report["wal"][f"without index, history {history}"] = wal_per_turn(
                    url, manager, args.turns, history, "n")
            with psycopg.connect(url, autocommit=True) as conn:
                conn.execute("SET statement_timeout = 0")
                conn.execute(INDEX_DDL)
        print(json.dumps(report, indent=2, ensure_ascii=False))
    finally:
        if embedded is not None:
            embedded.stop()


if __name__ == "__main__":
    main()
