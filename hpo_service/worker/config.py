"""What a worker is told to do: the settings the CLI collects from its flags."""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["WorkerConfig"]


@dataclass(frozen=True)
class WorkerConfig:
    """Everything a worker needs; the CLI fills it from its flags.

    Attributes:
        server: base URL of the service.
        key: API key (role worker or above).
        study_id: the study to work on.
        worker_id: lease holder id (``.<slot>`` is appended when ``parallel`` > 1).
        command: the command line to run per trial (command mode).
        proxy: a built-in proxy name (proxy mode), instead of ``command``.
        parallel: number of slots.
        devices: per slot, the GPUs its trials see (``CUDA_VISIBLE_DEVICES``, e.g.
            ``"0,1"``); one entry per slot, or empty for unpinned slots (``devices.py``
            derives both this and ``parallel`` from ``--gpus``).
        heartbeat_seconds: the longest interval between heartbeats; shortened to a third of
            the lease the service actually granted.
        timeout: seconds a trial may run before it is killed and failed.
        kill_grace: seconds between SIGTERM and SIGKILL when stopping a command.
        poll_min: first sleep when there is no work.
        poll_max: longest sleep when there is no work.
        retry_deadline: how long to retry a call while the service is unreachable.
        retry_failures: a failed run asks the service to requeue the trial (``retry``);
            the service counts attempts and gives up after the study's ``max_attempts``.
        finish_on_signal: the first SIGTERM/SIGINT lets running trials finish.
        proxy_max_steps: cap on a proxy's training steps.
        echo: pass the command's stdout/stderr through.
        http_timeout: seconds per HTTP request.
    """

    server: str
    key: str
    study_id: str
    worker_id: str
    command: tuple[str, ...] = ()
    proxy: str | None = None
    parallel: int = 1
    devices: tuple[str, ...] = ()
    heartbeat_seconds: float = 30.0
    timeout: float | None = None
    kill_grace: float = 10.0
    poll_min: float = 0.5
    poll_max: float = 15.0
    retry_deadline: float = 3600.0
    retry_failures: bool = True
    finish_on_signal: bool = False
    proxy_max_steps: int | None = None
    echo: bool = False
    http_timeout: float = 30.0
