"""`hpo import --from-optuna`: an Optuna study's history becomes a service study.

The imported study keeps every finished trial with a value (completed user trials at
the same values) and serves as a transfer source for a later study of its family.
"""

from __future__ import annotations

import math
import subprocess
import sys
import uuid
from pathlib import Path

import optuna
import pytest
from optuna.trial import Trial, TrialState

from hpo_service.cli.main import main as hpo_main
from hpo_service.client import HPOClient
from hpo_service.integrations.optuna import STUDY_ATTR_PREFIX, HPOServiceSampler
from tests.integrations.conftest import Service
from tests.worker.conftest import ROOT, clean_env

pytestmark = pytest.mark.slow


def _objective(trial: Trial) -> float:
    lr = trial.suggest_float("lr", 1e-4, 1e-1, log=True)
    width = trial.suggest_int("width", 32, 512, step=32)
    act = trial.suggest_categorical("act", ["relu", "gelu"])
    if trial.number in (3, 11):
        raise RuntimeError("out of memory")
    if trial.number == 7:
        trial.report(5.0, step=1)
        raise optuna.TrialPruned
    return (math.log10(lr) + 2.5) ** 2 + (width - 256) ** 2 / 1e5 + (act == "gelu") * 0.1


def _optuna_storage(tmp: Path, *names: str) -> str:
    url = f"sqlite:///{tmp / 'optuna.db'}"
    for name in names:
        study = optuna.create_study(
            study_name=name, storage=url, sampler=optuna.samplers.RandomSampler(seed=0)
        )
        study.optimize(_objective, n_trials=25, catch=(RuntimeError,))
    return url


def test_history_becomes_a_service_study_and_a_transfer_source(
    service: Service, tmp_path: Path
) -> None:
    url = _optuna_storage(tmp_path, "history")
    family = f"imported-{uuid.uuid4().hex[:8]}"
    cli = [sys.executable, "-m", "hpo_service", "import", "--from-optuna", url]
    where = ["--server", service.url, "--key", service.key]
    done = subprocess.run(
        [*cli, "--study", "history", "--family", family, *where],
        capture_output=True,
        text=True,
        env=clean_env(),
        cwd=ROOT,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    study_id = done.stdout.strip().splitlines()[-1]
    assert "imported 23 trials" in done.stderr  # 25, less the two failed ones

    history = optuna.load_study(study_name="history", storage=url).trials
    with HPOClient(service.url, service.key) as client:
        imported = client.studies.get(study_id)
        assert imported.family == family
        kinds = {p.name: (p.type, p.scale) for p in imported.space.parameters}
        assert kinds == {
            "act": ("categorical", None),
            "lr": ("float", "log"),
            "width": ("ordinal", "linear"),
        }
        trials = {int(t.metadata["optuna_trial"]): t for t in client.trials.iter(study_id)}
        assert sorted(trials) == [t.number for t in history if t.state != TrialState.FAIL]
        for past in history:
            if past.state == TrialState.FAIL:
                continue
            t = trials[past.number]
            assert (t.state, t.source) == ("completed", "user")
            assert t.params == past.params
            assert t.result is not None
            assert t.result.metrics == {"value": past.value}
        assert trials[7].result is not None
        assert trials[7].result.metrics == {"value": 5.0}  # pruned: its last reported value

        space = imported.space.model_dump(exclude_none=True)
        follower = client.studies.create(
            {
                "name": "after-optuna",
                "family": family,
                "objective": {"metric": "value", "goal": "minimize"},
                "space": space,
                "transfer": {"method": "box", "top_k": 5, "sources": [study_id]},
                "algorithm": "random",
                "seed": 0,
            }
        )
        region = client.request("GET", f"/v1/studies/{follower.id}/region")
        assert region["sources"] == [study_id]
        assert 0 < region["volume_fraction"] < 1

        # The sampler's own study can start from it too.
        transfer = {"method": "box", "top_k": 5, "sources": [study_id]}
        sampler = HPOServiceSampler(
            service.url, service.key, seed=0, family=family, transfer=transfer
        )
        again = optuna.create_study(sampler=sampler)
        again.optimize(_objective, n_trials=3, catch=(RuntimeError,))
        sampler.close()
        attrs = again._storage.get_study_system_attrs(again._study_id)
        [served_by] = [v for k, v in attrs.items() if k.startswith(STUDY_ATTR_PREFIX)]
        region = client.request("GET", f"/v1/studies/{served_by}/region")
        assert region["sources"] == [study_id]
        # Transfer seeds the region with the sources' best: the first leased trial starts from it.
        best = min((t for t in history if t.value is not None), key=lambda t: t.value or 0)
        assert again.trials[1].params == best.params


def test_a_storage_of_several_studies_needs_study(
    service: Service, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    url = _optuna_storage(tmp_path, "first", "second")
    argv = ["import", "--from-optuna", url, "--server", service.url, "--key", service.key]
    assert hpo_main(argv) == 2
    err = capsys.readouterr().err
    assert "2 studies (first, second)" in err
    assert hpo_main([*argv, "--study", "third"]) == 2
    assert hpo_main(["import"]) == 2
    assert hpo_main(["import", "dump.jsonl", "--from-optuna", url]) == 2
