"""Where the tasks of the solver-compatible APIs live between their creation and their last poll.

A task is created on one worker and polled on any other, of any instance behind nginx, so its result lives in a
store every worker reaches: a SQLite file on one machine (the default), or Redis for a fleet (the Redis the rate
limits use). Each task expires CAPTCHA_TASK_TTL_SECONDS after its creation, polled or not, so what the store holds
is bounded by the rate at which tasks are created; SQLite also refuses a task past CAPTCHA_TASK_MAX live ones.

The store holds results only (a reading is a few characters): the image was read when the task was created, and
its bytes stay with the feedback store's recent readings, if anywhere.

SQLite also keeps one key to a quarter of CAPTCHA_TASK_MAX, so one client cannot fill it for the others.

A store that fails (Redis away, the SQLite file unwritable or broken) fails the compatible endpoints' requests with
their "no slot" error; the native API never touches it. A SQLite file that is not a database (a stray file, a
half-copied one) is moved aside and a new one made: tasks are minutes of state, never worth refusing to start for."""

from __future__ import annotations

import dataclasses
import functools
import json
import logging
import os
import secrets
import sqlite3
import threading
import time
from dataclasses import dataclass
from pathlib import Path

log = logging.getLogger(__name__)

REDIS_PREFIX = "captcha-ocr:task:"
REDIS_TIMEOUT = 0.5  # seconds, as for the rate limits' storage (app.py)
SQLITE_TIMEOUT = 2.0  # seconds a write waits for another worker's
# Task ids: positive integers below 2**53, which JavaScript clients hold exactly, and at least ten digits, as the
# solving services' ids are; random, so that they say nothing about other clients' tasks.
ID_LOW, ID_HIGH = 10**9, 2**53 - 1


class StoreError(Exception):
    """The store could not be read or written (its message says why, for the log and the client)."""


class StoreFull(StoreError):
    """The store holds CAPTCHA_TASK_MAX live tasks already."""


@dataclass(frozen=True)
class Task:
    """A finished task: its reading (status "ready") or the error it failed with (status "failed")."""

    id: int
    owner: str  # a hash of the API key that created it: only that key may poll or report it
    status: str  # "ready" or "failed"
    text: str = ""
    confidence: float = 0.0
    error: str = ""  # the name of its error (errors.py), when failed
    message: str = ""  # and what went wrong
    model: str = ""
    version: str = ""
    request_id: str = ""  # the X-Request-ID of its creation: the feedback store's name for its image
    created: float = 0.0  # Unix time
    ended: float = 0.0
    client_ip: str = ""

    def to_json(self) -> str:
        return json.dumps(dataclasses.asdict(self), ensure_ascii=False)

    @classmethod
    def from_json(cls, text: str | bytes) -> Task:
        fields = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in json.loads(text).items() if k in fields})


def new_id() -> int:
    return ID_LOW + secrets.randbelow(ID_HIGH - ID_LOW)


class TaskStore:
    """The interface both stores share."""

    description = ""

    def add(self, make, holder: str) -> Task:
        """Store the task `make(task_id)` builds, under an id of no other live task, counted against `holder`'s
        share (check_room); returns it."""
        raise NotImplementedError

    def get(self, task_id: int) -> Task | None:
        raise NotImplementedError

    def mark_reported(self, task_id: int, kind: str) -> bool:
        """Record a report ("bad" or "good") of a task: False if it was reported already."""
        raise NotImplementedError

    def check_room(self, holder: str) -> None:
        """Raise StoreFull when a task of `holder`'s (whose share of the store it counts against: the client, as the
        rate limit counts it) would not be taken now; checked before its image is read."""


class SqliteStore(TaskStore):
    """Tasks in one SQLite file (WAL mode: readers never wait for a writer), shared by the workers of one machine.

    Each process keeps one connection (never one opened before gunicorn forked), used by one request at a time:
    under gevent a greenlet never yields inside sqlite3's calls, and a lock keeps threads apart. Before each use
    the file at the path is checked to be the one the connection has open: a file deleted or replaced (an operator
    cleaning up, a broken one moved aside by another worker) is followed, so every worker keeps using the same one.
    A database at the path that is not exactly this store's (other tables' columns, triggers, views) is moved
    aside, as a file that is no database is: tasks are minutes of state."""

    SCHEMA = (
        "CREATE TABLE IF NOT EXISTS tasks (id INTEGER PRIMARY KEY, holder TEXT NOT NULL, expires REAL NOT NULL, "
        "body TEXT NOT NULL, reported TEXT NOT NULL DEFAULT '')",
        "CREATE INDEX IF NOT EXISTS tasks_expires ON tasks (expires)",
        "CREATE INDEX IF NOT EXISTS tasks_holder ON tasks (holder, expires)",
    )
    ID_ATTEMPTS = 5  # random ids tried before giving up (a collision is a one in 2**52 event)

    def __init__(self, path: Path, ttl: float, max_tasks: int):
        self.path, self.ttl, self.max_tasks = Path(path), ttl, max_tasks
        self.max_per_holder = max(1, max_tasks // 4)  # one client may hold a quarter of the store at most
        self.description = f"SQLite {self.path}"
        self._lock = threading.Lock()
        self._open_as: tuple[int, tuple[int, int], sqlite3.Connection] | None = None  # pid, (device, inode), it

    def _connection(self) -> sqlite3.Connection:
        if self._open_as is not None:
            pid, identity, connection = self._open_as
            if pid == os.getpid() and identity == _identity(self.path):
                return connection
            if pid == os.getpid():
                connection.close()
            self._open_as = None
        try:
            connection = self._open_waiting()
        except sqlite3.DatabaseError as error:
            if isinstance(error, sqlite3.OperationalError):
                raise  # locked, unwritable folder, disk full: nothing a new file would mend
            aside = f"{self.path.name}.broken-{int(time.time())}-{os.getpid()}"
            log.error("the task store %s is not a usable database (%s): moved to %s", self.path, error, aside)
            for suffix in ("", "-wal", "-shm"):
                try:
                    os.replace(f"{self.path}{suffix}", self.path.with_name(aside + suffix))
                except FileNotFoundError:
                    pass  # another worker moved it first, or there was none
            connection = self._open_waiting()
        self._open_as = (os.getpid(), _identity(self.path), connection)
        return connection

    def _open_waiting(self) -> sqlite3.Connection:
        """_open, waiting up to SQLITE_TIMEOUT while another worker holds the file (setting WAL mode on a new file
        does not wait by itself: workers starting together were refused)."""
        deadline = time.monotonic() + SQLITE_TIMEOUT
        while True:
            try:
                return self._open()
            except sqlite3.OperationalError as error:
                if "locked" not in str(error) or time.monotonic() > deadline:
                    raise
                time.sleep(0.02)

    def _open(self) -> sqlite3.Connection:
        if self.path.is_symlink() or (self.path.exists() and not self.path.is_file()):
            raise sqlite3.OperationalError(f"{self.path} is not a regular file")
        self.path.parent.mkdir(parents=True, exist_ok=True)
        connection = sqlite3.connect(self.path, timeout=SQLITE_TIMEOUT, isolation_level=None, check_same_thread=False)
        try:
            connection.execute("PRAGMA journal_mode=WAL")
            connection.execute("PRAGMA synchronous=NORMAL")  # a task lost to a power cut is acceptable
            connection.execute("BEGIN IMMEDIATE")  # one worker at a time makes the schema of a new file
            try:
                found = sorted(connection.execute("SELECT type, name, sql FROM sqlite_master").fetchall())
                if not found:
                    for statement in self.SCHEMA:
                        connection.execute(statement)
                elif found != _expected_schema():
                    raise sqlite3.DatabaseError("it holds another database (its tables, indexes or triggers differ)")
                connection.execute("COMMIT")
            except BaseException:
                connection.execute("ROLLBACK")
                raise
        except BaseException:
            connection.close()
            raise
        return connection

    def _run(self, action):
        try:
            with self._lock:
                return action(self._connection())
        except sqlite3.Error as error:
            raise StoreError(f"the task store ({self.description}) failed: {error}") from None
        except (OSError, OverflowError) as error:
            raise StoreError(f"the task store ({self.description}) failed: {error}") from None

    def _check_room(self, db: sqlite3.Connection, holder: str, now: float) -> None:
        (mine,) = db.execute("SELECT count(*) FROM tasks WHERE holder = ? AND expires >= ?", (holder, now)).fetchone()
        if mine >= self.max_per_holder:
            raise StoreFull(f"this key holds {mine} live tasks, a quarter of CAPTCHA_TASK_MAX; wait for them to expire")
        (live,) = db.execute("SELECT count(*) FROM tasks WHERE expires >= ?", (now,)).fetchone()
        if live >= self.max_tasks:
            raise StoreFull(f"the task store holds {live} live tasks (CAPTCHA_TASK_MAX)")

    def check_room(self, holder: str) -> None:
        self._run(lambda db: self._check_room(db, holder, time.time()))

    def add(self, make, holder: str) -> Task:
        def insert(db: sqlite3.Connection) -> Task:
            now = time.time()
            db.execute("BEGIN IMMEDIATE")
            try:
                db.execute("DELETE FROM tasks WHERE expires < ?", (now,))
                for _attempt in range(self.ID_ATTEMPTS):
                    task = make(new_id())
                    self._check_room(db, holder, now)
                    try:
                        db.execute(
                            "INSERT INTO tasks (id, holder, expires, body) VALUES (?, ?, ?, ?)",
                            (task.id, holder, now + self.ttl, task.to_json()),
                        )
                        break
                    except sqlite3.IntegrityError:
                        continue  # the id is taken: another
                else:
                    raise StoreError(f"no free task id after {self.ID_ATTEMPTS} attempts")
                db.execute("COMMIT")
            except BaseException:
                db.execute("ROLLBACK")
                raise
            return task

        return self._run(insert)

    def get(self, task_id: int) -> Task | None:
        row = self._run(
            lambda db: db.execute(
                "SELECT body FROM tasks WHERE id = ? AND expires >= ?", (task_id, time.time())
            ).fetchone()
        )
        return _task(row[0]) if row else None

    def mark_reported(self, task_id: int, kind: str) -> bool:
        cursor = self._run(
            lambda db: db.execute(
                "UPDATE tasks SET reported = ? WHERE id = ? AND reported = '' AND expires >= ?",
                (kind, task_id, time.time()),
            )
        )
        return cursor.rowcount == 1


def _identity(path: Path) -> tuple[int, int] | None:
    try:
        info = os.stat(path)
    except OSError:
        return None
    return info.st_dev, info.st_ino


@functools.cache
def _expected_schema() -> list[tuple]:
    """What sqlite_master holds for this store's schema (SQLite keeps each statement's text its own way)."""
    memory = sqlite3.connect(":memory:")
    for statement in SqliteStore.SCHEMA:
        memory.execute(statement)
    found = sorted(memory.execute("SELECT type, name, sql FROM sqlite_master").fetchall())
    memory.close()
    return found


def _task(body) -> Task | None:
    """A stored task, or None for a row that is not one (logged: nothing a client did)."""
    try:
        return Task.from_json(body)
    except (ValueError, TypeError) as error:
        log.error("a task in the store is not readable: %s", error)
        return None


class RedisStore(TaskStore):
    """Tasks in Redis, each a key that expires by itself: shared by every instance that reaches that Redis."""

    def __init__(self, uri: str, ttl: float):
        import redis

        self.ttl = max(1, int(ttl))
        self.description = "Redis " + uri.split("@")[-1]  # never the password
        self.redis = redis.Redis.from_url(uri, socket_timeout=REDIS_TIMEOUT, socket_connect_timeout=REDIS_TIMEOUT)
        self._errors = (redis.RedisError, OSError)

    def _run(self, action):
        try:
            return action(self.redis)
        except self._errors as error:
            raise StoreError(f"the task store ({self.description}) failed: {error}") from None

    def add(self, make, holder: str) -> Task:
        def insert(db) -> Task:
            while True:
                task = make(new_id())
                if db.set(REDIS_PREFIX + str(task.id), task.to_json(), ex=self.ttl, nx=True):
                    return task

        return self._run(insert)

    def get(self, task_id: int) -> Task | None:
        body = self._run(lambda db: db.get(REDIS_PREFIX + str(task_id)))
        return _task(body) if body else None

    def mark_reported(self, task_id: int, kind: str) -> bool:
        key = REDIS_PREFIX + str(task_id)

        def mark(db) -> bool:
            left = db.ttl(key)
            if left is None or left <= 0:
                return False
            return bool(db.set(key + ":reported", kind, ex=left, nx=True))

        return self._run(mark)


def open_store(uri: str, ttl: float, max_tasks: int) -> TaskStore:
    """The store a CAPTCHA_TASK_STORE value names: redis://... (or rediss://, unix://), else a SQLite file's path."""
    if uri.startswith(("redis://", "rediss://", "unix://")):
        return RedisStore(uri, ttl)
    return SqliteStore(Path(uri.removeprefix("sqlite://")), ttl, max_tasks)
