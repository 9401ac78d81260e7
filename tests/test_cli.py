from __future__ import annotations

import os
import re
import subprocess
import sys
import time
from pathlib import Path

import httpx

from hpo_service.cli.main import main
from tests.builders import study
from tests.local_server import free_port, serve_argv, stop_process


def test_keys_create_prints_key_on_last_line(tmp_path: Path, capsys) -> None:
    url = f"sqlite:///{tmp_path / 'k.db'}"
    assert (
        main(
            [
                "keys",
                "create",
                "--role",
                "worker",
                "--tenant",
                "acme",
                "--name",
                "gpu-1",
                "--database-url",
                url,
            ]
        )
        == 0
    )
    lines = capsys.readouterr().out.strip().splitlines()
    assert re.fullmatch(r"hpo_key_[0-9a-f]{24}_[0-9a-f]{64}", lines[-1])


def test_migrate_uses_environment_url(tmp_path: Path, monkeypatch, capsys) -> None:
    monkeypatch.setenv("HPO_DATABASE_URL", f"sqlite:///{tmp_path / 'env.db'}")
    assert main(["migrate"]) == 0
    assert (tmp_path / "env.db").exists()


def test_serve_first_start_prints_admin_key_and_serves(tmp_path: Path) -> None:
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("HPO_")}
    proc = subprocess.Popen(
        serve_argv(port),
        cwd=tmp_path,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        assert proc.stdout is not None
        key = None
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            line = proc.stdout.readline()
            if not line:
                break
            if line.strip().startswith("hpo_key_"):
                key = line.strip()
            if "Uvicorn running" in line:
                break
        assert key is not None, "no admin key printed"
        assert (tmp_path / "hpo.db").exists()  # default SQLite in the working directory
        base = f"http://127.0.0.1:{port}"
        headers = {"Authorization": f"Bearer {key}"}
        assert httpx.get(f"{base}/readyz").json()["status"] == "ready"
        created = httpx.post(f"{base}/v1/studies", json=study(), headers=headers)
        assert created.status_code == 201
        sid = created.json()["id"]
        lease = httpx.post(
            f"{base}/v1/studies/{sid}/suggestions",
            json={"worker_id": "w", "count": 1},
            headers=headers,
        ).json()
        tid = lease["trials"][0]["id"]
        done = httpx.post(
            f"{base}/v1/trials/{tid}/complete",
            json={"worker_id": "w", "metrics": {"val_loss": 0.25}},
            headers=headers,
        )
        assert done.status_code == 200
        best = httpx.get(f"{base}/v1/studies/{sid}/best", headers=headers).json()
        assert best["trials"][0]["id"] == tid
    finally:
        stop_process(proc)
    # a second start finds the key and prints none
    proc2 = subprocess.run(
        [
            sys.executable,
            "-c",
            "from hpo_service.cli.main import main; import sys; sys.exit(main(['migrate']))",
        ],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc2.returncode == 0
