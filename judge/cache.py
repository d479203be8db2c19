"""The teacher-label cache: every paid answer, committed the moment it arrives (SQLite, WAL).

A row is keyed by `request_key`, a tagged hash of what decides the answer (teacher model, rubric
hash, rendered request, image bytes hash), so a rerun after any crash sends only what is missing.
Failed calls are not stored (a rerun retries them); refusals and unparseable replies are, since
they were paid for. The API key is never part of a row. Migrations follow simonw/llm: named
functions appended to `MIGRATIONS`, applied once each and recorded in `_migrations`.

One run sends at a time: a run with requests to send holds `Cache.claim`'s lock, so two runs on one
cache cannot both pay for the same missing rows (each read the cache before the other stored).
"""

from __future__ import annotations

import hashlib
import json
import sqlite3
import time
from collections.abc import Callable, Iterable
from pathlib import Path

from judge.errors import InputError

DEFAULT_CACHE = "data_cache/teacher.sqlite"  # relative to where a command runs: every command run there shares it
KEY_TAG = "t1"  # bump when the key recipe changes, so old rows are never mistaken for new ones
BUSY_TIMEOUT = 30.0  # seconds a write waits for another connection's lock before SQLite says "database is locked"


def request_key(payload: dict) -> str:
    """Tagged blake2b of canonical JSON (sorted keys, compact separators)."""
    text = json.dumps(payload, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return f"{KEY_TAG}:" + hashlib.blake2b(text.encode("utf-8"), digest_size=16).hexdigest()


def m001_labels(db: sqlite3.Connection) -> None:
    db.execute("""CREATE TABLE labels (
        key TEXT PRIMARY KEY, record_id TEXT, status TEXT NOT NULL, label TEXT, probs TEXT,
        explanation TEXT, raw TEXT, model TEXT, requested_model TEXT, rubric_sha256 TEXT,
        error TEXT, prompt_tokens INTEGER, completion_tokens INTEGER, cost REAL, via TEXT, created REAL)""")


def m002_batches(db: sqlite3.Connection) -> None:
    db.execute("""CREATE TABLE batches (
        batch_id TEXT PRIMARY KEY, input_file_id TEXT, requested_model TEXT, keys TEXT NOT NULL,
        status TEXT, merged INTEGER NOT NULL DEFAULT 0, created REAL)""")


MIGRATIONS: list[Callable[[sqlite3.Connection], None]] = [m001_labels, m002_batches]
LABEL_COLUMNS = ("record_id", "status", "label", "probs", "explanation", "raw", "model", "requested_model",
                 "rubric_sha256", "error", "prompt_tokens", "completion_tokens", "cost", "via")


def pending_migrations(db: sqlite3.Connection) -> list[Callable[[sqlite3.Connection], None]]:
    """The migrations `_migrations` does not record (every one, in a new file)."""
    if db.execute("SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = '_migrations'").fetchone() is None:
        return list(MIGRATIONS)
    done = {row[0] for row in db.execute("SELECT name FROM _migrations")}
    return [migration for migration in MIGRATIONS if migration.__name__ not in done]


def migrate(db: sqlite3.Connection) -> None:
    """Apply the pending migrations in one write transaction that looks for them again once it holds the lock:
    processes opening one new cache at once each applied them (one failed: "table labels already exists").
    A cache already up to date is only read."""
    if not pending_migrations(db):
        return
    with db:
        db.execute("BEGIN IMMEDIATE")  # waits out (busy timeout) another process migrating this file
        db.execute("CREATE TABLE IF NOT EXISTS _migrations (name TEXT PRIMARY KEY, applied REAL)")
        for migration in pending_migrations(db):
            migration(db)
            db.execute("INSERT INTO _migrations VALUES (?, ?)", (migration.__name__, time.time()))


def use_wal(db: sqlite3.Connection) -> None:
    """Switch the file to WAL. Of processes switching one new file at once, SQLite answers the others "database
    is locked" at once, without the busy timeout's wait: so the switch is retried until that timeout."""
    deadline = time.monotonic() + BUSY_TIMEOUT
    while True:
        try:
            db.execute("PRAGMA journal_mode=WAL")
            return
        except sqlite3.OperationalError as exc:
            if exc.sqlite_errorcode != sqlite3.SQLITE_BUSY or time.monotonic() > deadline:
                raise
            time.sleep(0.01)


class Cache:
    """Open (creating and migrating) the cache database at ``path``."""

    def __init__(self, path: str | Path):
        self.path = Path(path)
        if self.path.is_dir():
            raise InputError("is a folder, not a teacher cache file (SQLite)", path=self.path)
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self.db = sqlite3.connect(self.path, timeout=BUSY_TIMEOUT, check_same_thread=False)
        except (OSError, sqlite3.Error) as exc:
            raise InputError(f"cannot open the teacher cache: {exc}", path=self.path) from None
        try:
            self.db.row_factory = sqlite3.Row
            use_wal(self.db)
            self.db.execute("PRAGMA synchronous=NORMAL")  # WAL + NORMAL survives a killed process
            migrate(self.db)
        except sqlite3.Error as exc:  # not an SQLite file, another program's database, a place it cannot write
            self.db.close()
            raise InputError(f"not a usable teacher cache (SQLite): {exc}", path=self.path) from None
        self.lock = None

    def claim(self) -> None:
        """Become the one run that sends through this cache until `close` (a lock on PATH.lock beside it).

        Reading needs no claim; sending does, or two runs each pay for every row neither has stored yet.
        """
        try:
            import fcntl
        except ImportError:  # Windows has no flock: runs there are not kept apart
            return
        try:
            lock = open(self.path.with_name(self.path.name + ".lock"), "a")
        except OSError as exc:
            raise InputError(f"cannot open the cache's lock file: {exc}", path=self.path) from None
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            lock.close()
            raise InputError("another judge run is sending teacher requests through this cache; "
                             "wait for it to finish, or give this run its own --cache", path=self.path) from None
        self.lock = lock

    def get_many(self, keys: Iterable[str]) -> dict[str, dict]:
        keys = list(dict.fromkeys(keys))
        found: dict[str, dict] = {}
        for start in range(0, len(keys), 500):
            chunk = keys[start:start + 500]
            query = f"SELECT * FROM labels WHERE key IN ({','.join('?' * len(chunk))})"
            for row in self.db.execute(query, chunk):
                item = dict(row)
                item["probs"] = json.loads(item["probs"]) if item["probs"] else None
                found[item["key"]] = item
        return found

    def put(self, key: str, **values) -> None:
        """Store one answer and commit at once."""
        values["probs"] = json.dumps(values["probs"]) if values.get("probs") else None
        row = [values.get(column) for column in LABEL_COLUMNS]
        with self.db:
            self.db.execute(f"INSERT OR REPLACE INTO labels (key, {', '.join(LABEL_COLUMNS)}, created) "
                            f"VALUES ({', '.join('?' * (len(LABEL_COLUMNS) + 2))})", [key, *row, time.time()])

    def add_batch(self, batch_id: str, input_file_id: str, requested_model: str, keys: list[str], status: str) -> None:
        with self.db:
            self.db.execute("INSERT INTO batches (batch_id, input_file_id, requested_model, keys, status, created) "
                            "VALUES (?, ?, ?, ?, ?, ?)",
                            (batch_id, input_file_id, requested_model, json.dumps(keys), status, time.time()))

    def open_batches(self, requested_model: str) -> list[dict]:
        """Batches created but not yet merged: a rerun polls these instead of paying twice."""
        rows = self.db.execute("SELECT * FROM batches WHERE merged = 0 AND requested_model = ? ORDER BY created",
                               (requested_model,))
        return [{**dict(row), "keys": json.loads(row["keys"])} for row in rows]

    def set_batch(self, batch_id: str, status: str, merged: bool = False) -> None:
        with self.db:
            self.db.execute("UPDATE batches SET status = ?, merged = ? WHERE batch_id = ?", (status, int(merged), batch_id))

    def close(self) -> None:
        self.db.close()
        if self.lock is not None:
            self.lock.close()  # releases the claim
            self.lock = None
