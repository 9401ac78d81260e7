"""Fault tests with real server processes: concurrency, crashes, a database outage.

Bounded in time (each well under a minute). The PostgreSQL ones use the machine's server
(a fresh database) or a private cluster the test starts itself.
"""

from __future__ import annotations

import threading
import time
from collections import Counter

import httpx
import pytest
from sqlalchemy import text

from hpo_service.db.database import Database
from tests.builders import study
from tests.reliability.servers import Server, ThrowawayPostgres, prepare

pytestmark = pytest.mark.slow


def _create(url: str, key: str, **overrides) -> str:
    r = httpx.post(
        f"{url}/v1/studies",
        json=study(**overrides),
        headers={"Authorization": f"Bearer {key}"},
        timeout=30,
    )
    assert r.status_code == 201, r.text
    return str(r.json()["id"])


class Fleet:
    """N worker threads running lease → complete loops; records what the service said."""

    def __init__(self, url: str, key: str, sid: str, n: int, *, pause: float = 0.0) -> None:
        self.url, self.sid, self.n, self.pause = url, sid, n, pause
        self.headers = {"Authorization": f"Bearer {key}"}
        self.leases: list[tuple[str, str]] = []  # (worker, trial id)
        self.completed: dict[str, float] = {}  # trial id → value, for 2xx completions
        self.errors: list[str] = []
        self.retries: Counter[str | int] = Counter()
        self.stop = threading.Event()
        self.lock = threading.Lock()

    def worker(self, i: int) -> None:
        wid = f"w{i}"
        with httpx.Client(base_url=self.url, headers=self.headers, timeout=60) as http:
            while not self.stop.is_set():
                try:
                    r = http.post(
                        f"/v1/studies/{self.sid}/suggestions", json={"worker_id": wid, "count": 1}
                    )
                except httpx.HTTPError as exc:
                    self.retries[type(exc).__name__] += 1
                    time.sleep(0.1)
                    continue
                if r.status_code >= 500:
                    self.retries[r.status_code] += 1
                    time.sleep(0.1)
                    continue
                if r.status_code != 200:
                    self.errors.append(f"lease {r.status_code} {r.text}")
                    return
                trials = r.json()["trials"]
                if not trials:
                    # Like `hpo worker`: keep polling while work may still come back
                    # (e.g. a lease granted to us by a request we gave up waiting for).
                    if self._work_left(http):
                        time.sleep(0.2)
                        continue
                    return
                t = trials[0]
                with self.lock:
                    self.leases.append((wid, t["id"]))
                time.sleep(self.pause)
                value = float(t["number"]) + i / 1000
                try:
                    c = http.post(
                        f"/v1/trials/{t['id']}/complete",
                        json={"worker_id": wid, "metrics": {"val_loss": value}},
                    )
                except httpx.HTTPError:
                    continue
                if c.status_code == 200:
                    with self.lock:
                        assert t["id"] not in self.completed, "completed twice"
                        self.completed[t["id"]] = value
                elif c.status_code < 500 and c.status_code != 409:
                    self.errors.append(f"complete {c.status_code} {c.text}")

    def _work_left(self, http: httpx.Client) -> bool:
        try:
            r = http.get(f"/v1/studies/{self.sid}")
        except httpx.HTTPError:
            return True
        if r.status_code != 200:
            return True
        counts = r.json()["trial_counts"]
        return bool(counts["requested"] + counts["active"] + counts["stopping"])

    def run(self) -> list[threading.Thread]:
        threads = [threading.Thread(target=self.worker, args=(i,)) for i in range(self.n)]
        for th in threads:
            th.start()
        return threads


def _stored(database_url: str, sid: str) -> dict[str, tuple[str, float | None, int]]:
    db = Database(database_url)
    try:
        with db.read() as s:
            rows = s.execute(
                text("SELECT id, state, value, number FROM trials WHERE study_id = :s"), {"s": sid}
            ).all()
        return {r[0]: (r[1], r[2], r[3]) for r in rows}
    finally:
        db.dispose()


@pytest.mark.postgres
def test_four_processes_32_workers_never_double_lease(pg_url: str) -> None:
    key = prepare(pg_url)
    server = Server(pg_url, workers=4).start()
    try:
        sid = _create(server.url, key, max_trials=160)
        fleet = Fleet(server.url, key, sid, 32)
        for th in fleet.run():
            th.join(timeout=120)
        assert fleet.errors == []
        holders: dict[str, set[str]] = {}
        for wid, tid in fleet.leases:
            holders.setdefault(tid, set()).add(wid)
        assert len(holders) == 160
        assert all(len(w) == 1 for w in holders.values())  # never leased to two workers
        stored = _stored(pg_url, sid)
        assert sorted(n for _, _, n in stored.values()) == list(range(160))
        assert all(state == "completed" for state, _, _ in stored.values())
        assert {tid: v for tid, (_, v, _) in stored.items()} == fleet.completed
    finally:
        server.stop()


@pytest.mark.postgres
def test_kill9_of_every_server_process_loses_no_completion(pg_url: str) -> None:
    key = prepare(pg_url)
    env = {"HPO_LEASE_SECONDS": "2", "HPO_RECLAIM_INTERVAL_SECONDS": "0.5"}
    server = Server(pg_url, workers=4, env=env).start()
    sid = _create(server.url, key, max_trials=400)
    fleet = Fleet(server.url, key, sid, 16, pause=0.02)
    threads = fleet.run()
    time.sleep(3)
    server.kill9()
    time.sleep(1)
    restarted = Server(pg_url, workers=4, port=server.port, env=env).start()
    try:
        time.sleep(2)
        fleet.stop.set()
        for th in threads:
            th.join(timeout=60)
        assert fleet.errors == []
        assert len(fleet.completed) > 0
        # Every acknowledged completion is stored, once, with its value.
        stored = _stored(pg_url, sid)
        for tid, value in fleet.completed.items():
            assert stored[tid][0] == "completed"
            assert stored[tid][1] == value
        numbers = [n for _, _, n in stored.values()]
        assert len(numbers) == len(set(numbers))
        # Every lease left in flight by the crash comes back to the queue.
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            states = Counter(state for state, _, _ in _stored(pg_url, sid).values())
            if states["active"] == 0:
                break
            time.sleep(0.5)
        assert states["active"] == 0, states
    finally:
        restarted.stop()


@pytest.mark.postgres
def test_database_outage_gives_503_and_recovers() -> None:
    from tests.conftest import require_postgres

    require_postgres()
    pg = ThrowawayPostgres().init()
    pg.start()
    server = None
    try:
        key = prepare(pg.url)
        server = Server(pg.url).start()
        headers = {"Authorization": f"Bearer {key}"}
        sid = _create(server.url, key, max_trials=50)
        ok = httpx.post(
            f"{server.url}/v1/studies/{sid}/suggestions",
            json={"worker_id": "w", "count": 2},
            headers=headers,
            timeout=10,
        )
        assert ok.status_code == 200
        pg.stop()
        down = httpx.post(
            f"{server.url}/v1/studies/{sid}/suggestions",
            json={"worker_id": "w", "count": 2},
            headers=headers,
            timeout=30,
        )
        assert down.status_code == 503, down.text
        assert down.headers["content-type"] == "application/problem+json"
        assert down.json()["type"].endswith("/service-unavailable")
        assert "retry-after" in down.headers
        assert httpx.get(f"{server.url}/readyz", timeout=30).status_code == 503
        time.sleep(2)
        pg.start()
        deadline = time.monotonic() + 30
        status = 0
        while time.monotonic() < deadline and status != 200:
            status = httpx.get(f"{server.url}/readyz", timeout=30).status_code
            time.sleep(0.3)
        assert status == 200
        again = httpx.post(
            f"{server.url}/v1/studies/{sid}/suggestions",
            json={"worker_id": "w", "count": 3},
            headers=headers,
            timeout=10,
        )
        assert again.status_code == 200
        trials = again.json()["trials"]
        # the two leased before the outage come back first; nothing half-written
        assert [t["id"] for t in trials[:2]] == [t["id"] for t in ok.json()["trials"]]
        assert [t["number"] for t in trials] == [0, 1, 2]
    finally:
        if server is not None:
            server.stop()
        pg.destroy()


def test_sqlite_eight_writers_never_see_database_locked(tmp_path) -> None:
    url = f"sqlite:///{tmp_path / 'busy.db'}"
    key = prepare(url)
    servers = [Server(url).start(), Server(url).start()]  # two processes, one file
    try:
        sid = _create(servers[0].url, key, max_trials=200, algorithm="random")
        fleets = [Fleet(s.url, key, sid, 4) for s in servers]
        threads = [th for f in fleets for th in f.run()]
        for th in threads:
            th.join(timeout=120)
        assert [e for f in fleets for e in f.errors] == []
        completed = {k: v for f in fleets for k, v in f.completed.items()}
        assert len(completed) == 200
        stored = _stored(url, sid)
        assert all(state == "completed" for state, _, _ in stored.values())
    finally:
        for s in servers:
            s.stop()
