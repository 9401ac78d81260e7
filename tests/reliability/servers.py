"""Real `hpo serve` processes (and a throwaway PostgreSQL cluster) for fault tests."""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import tempfile
from pathlib import Path

from hpo_service.db.base import utcnow
from hpo_service.db.database import Database
from hpo_service.db.migrate import upgrade_to_head
from hpo_service.domain import Role
from hpo_service.services import api_keys
from tests.local_server import free_port, launch, serve_argv, stop_process, wait_until_up

# Servers here get the key-hash secret by configuration, as production would (and as
# every process of a multi-process server must share it); the key is made with the same.
KEY_SECRET = "reliability-tests-key-hash-secret"


def prepare(database_url: str) -> str:
    """Migrate the database and return a fresh admin key for it."""
    db = Database(database_url, key_secret=KEY_SECRET)
    try:
        upgrade_to_head(db.engine)
        return api_keys.create_key(db, role=Role.ADMIN, tenant="t", now=utcnow()).key
    finally:
        db.dispose()


class Server:
    """`hpo serve` in its own process group, so kill -9 takes every worker process."""

    def __init__(
        self,
        database_url: str,
        *,
        workers: int = 1,
        port: int | None = None,
        env: dict[str, str] | None = None,
        cwd: Path | None = None,
    ) -> None:
        self.database_url = database_url
        self.workers = workers
        self.port = port or free_port()
        self.env = {k: v for k, v in os.environ.items() if not k.startswith("HPO_")}
        self.env["HPO_KEY_HASH_SECRET"] = KEY_SECRET
        self.env.update(env or {})
        self.cwd = cwd
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self, timeout: float = 180.0) -> Server:
        self.proc = launch(
            serve_argv(self.port, database_url=self.database_url, workers=self.workers),
            env=self.env,
            cwd=self.cwd,
            new_session=True,
        )
        wait_until_up(self.proc, f"{self.url}/healthz", timeout=timeout)
        return self

    def kill9(self) -> None:
        assert self.proc is not None
        os.killpg(self.proc.pid, signal.SIGKILL)
        self.proc.wait(timeout=10)

    def stop(self) -> None:
        if self.proc is not None:
            stop_process(self.proc, sig=signal.SIGTERM, group=True)


class ThrowawayPostgres:
    """A private PostgreSQL cluster on a spare port, owned by the `postgres` OS user."""

    def __init__(self) -> None:
        self.dir = Path(tempfile.mkdtemp(prefix="hpo-pg-"))
        self.port = free_port()
        shutil.chown(self.dir, "postgres", "postgres")
        self.data = self.dir / "data"

    def _as_postgres(self, *args: str) -> None:
        prefix = ["runuser", "-u", "postgres", "--"] if os.geteuid() == 0 else []
        subprocess.run([*prefix, *args], check=True, capture_output=True, timeout=120)

    def init(self) -> ThrowawayPostgres:
        self._as_postgres("initdb", "-D", str(self.data), "-A", "trust", "-U", "postgres")
        return self

    def start(self) -> None:
        self._as_postgres(
            "pg_ctl",
            "-D",
            str(self.data),
            "-l",
            str(self.dir / "log"),
            "-w",
            "-o",
            f"-p {self.port} -k {self.dir} -c listen_addresses=127.0.0.1",
            "start",
        )

    def stop(self) -> None:
        self._as_postgres("pg_ctl", "-D", str(self.data), "-m", "immediate", "-w", "stop")

    @property
    def url(self) -> str:
        return f"postgresql+psycopg://postgres@127.0.0.1:{self.port}/postgres"

    def destroy(self) -> None:
        with contextlib.suppress(subprocess.CalledProcessError):
            self.stop()
        shutil.rmtree(self.dir, ignore_errors=True)
