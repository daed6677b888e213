"""A real PostgreSQL server for the store tests: ``initdb`` + ``pg_ctl`` in a temporary directory, on a free port of
127.0.0.1, started once per session and stopped at its end.  PostgreSQL refuses to run as root, so as root it runs as
the ``postgres`` system user (created when missing) through ``runuser``.
"""

from __future__ import annotations

import itertools
import os
import pwd
import shutil
import subprocess
import tempfile
from pathlib import Path

import psycopg
import pytest

from rtdash.store.duckdb import DuckDBStore
from rtdash.store.postgres import PostgresStore
from tests.helpers import free_port

PG_BIN = Path(os.environ.get("RTDASH_PG_BIN", "/usr/lib/postgresql/15/bin"))
# runuser lives in /usr/sbin (/sbin on older systems), which a user's PATH may leave out
RUNUSER = shutil.which("runuser", path=os.pathsep.join([os.environ.get("PATH", ""), "/usr/sbin", "/sbin"])) or "runuser"
PG_USER = "postgres"


class PostgresServer:
    """One PostgreSQL cluster; ``stop()`` and ``start()`` make outages, ``url(db)`` names a database."""

    def __init__(self) -> None:
        if not (PG_BIN / "initdb").exists():
            raise RuntimeError(f"PostgreSQL binaries not found in {PG_BIN}: apt-get install postgresql")
        self.as_root = os.geteuid() == 0
        if self.as_root:
            _ensure_user(PG_USER)
        self.root = Path(tempfile.mkdtemp(prefix="rtdash-pg-"))
        self.data = self.root / "data"
        self.log = self.root / "server.log"
        self.port = free_port()
        if self.as_root:
            shutil.chown(self.root, PG_USER)
        self._run("initdb", "-D", self.data, "-U", PG_USER, "-A", "trust", "-E", "UTF8", "--locale=C", "--no-sync")
        self._names = itertools.count()

    def _run(self, tool: str, *args) -> subprocess.CompletedProcess:
        command = [str(PG_BIN / tool), *map(str, args)]
        if self.as_root:
            command = [RUNUSER, "-u", PG_USER, "--", *command]
        done = subprocess.run(command, capture_output=True, text=True, timeout=120)
        if done.returncode:
            log = self.log.read_text(errors="replace") if self.log.exists() else ""
            raise RuntimeError(f"{' '.join(command)} failed:\n{done.stdout}\n{done.stderr}\n{log}")
        return done

    def start(self, durable: bool = False) -> None:
        """Start (again); ``durable=False`` turns fsync off, as tests need no crash safety (benchmarks do)."""
        options = f"-h 127.0.0.1 -p {self.port} -k {self.root}"
        if not durable:
            options += " -c fsync=off -c full_page_writes=off"
        self._run("pg_ctl", "-D", self.data, "-l", self.log, "-w", "-t", "60", "-o", options, "start")

    def stop(self) -> None:
        """A fast shutdown: open connections are cut, as in a real outage or restart."""
        self._run("pg_ctl", "-D", self.data, "-w", "-t", "60", "-m", "fast", "stop")

    def running(self) -> bool:
        command = [str(PG_BIN / "pg_ctl"), "-D", str(self.data), "status"]
        if self.as_root:
            command = [RUNUSER, "-u", PG_USER, "--", *command]
        return subprocess.run(command, capture_output=True).returncode == 0

    def url(self, database: str = "postgres") -> str:
        return f"postgresql://{PG_USER}@127.0.0.1:{self.port}/{database}"

    def new_database(self) -> str:
        """A fresh, empty database; its URL."""
        name = f"rtdash_test_{next(self._names)}"
        with psycopg.connect(self.url(), autocommit=True) as conn:
            conn.execute(f"DROP DATABASE IF EXISTS {name}")
            conn.execute(f"CREATE DATABASE {name}")
        return self.url(name)

    def destroy(self) -> None:
        if self.running():
            self._run("pg_ctl", "-D", self.data, "-w", "-m", "immediate", "stop")
        shutil.rmtree(self.root, ignore_errors=True)


def _ensure_user(name: str) -> None:
    try:
        pwd.getpwnam(name)
    except KeyError:
        subprocess.run(["useradd", "--system", "--no-create-home", "--shell", "/usr/sbin/nologin", name], check=True)


@pytest.fixture(scope="session")
def postgres_server():
    """The session's PostgreSQL server, running.  Tests that stop it must start it again (see ``outage``)."""
    server = PostgresServer()
    try:
        server.start()
        yield server
    finally:
        server.destroy()


@pytest.fixture
def pg_url(postgres_server) -> str:
    """The URL of a new, empty database on the session's server."""
    if not postgres_server.running():  # a failed outage test must not take the others down with it
        postgres_server.start()
    return postgres_server.new_database()


@pytest.fixture(params=["duckdb", "postgresql"])
def store_url(request, tmp_path) -> str:
    """``RTDASH_STORE`` of each backend: a DuckDB file in ``tmp_path``, a fresh PostgreSQL database."""
    if request.param == "duckdb":
        return str(tmp_path / "history.duckdb")
    return request.getfixturevalue("pg_url")


@pytest.fixture
def store(store_url):
    """An open store of each backend, closed after the test."""
    store = PostgresStore(store_url) if store_url.startswith("postgresql://") else DuckDBStore(store_url)
    yield store
    store.close()
