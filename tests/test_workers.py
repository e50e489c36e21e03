"""The kernel on several cores gives the plan of one core, byte for byte; a worker that dies is one
sentence, never a hang, a part of a plan or a worker left running."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from dataclasses import replace

import pytest
from builders import ROOT, checkins
from hypothesis import HealthCheck, given, settings
from test_properties import states

from bench.generate import Shape, generate
from reconciler import workers
from reconciler.errors import ReconcileError
from reconciler.kernel import reconcile
from reconciler.plan import build_plan, plan_bytes
from reconciler.selection import parse_selection
from reconciler.snapshot import snapshot_bytes

SPEC = checkins()
MESSY = {"base_missing": 0.2, "base_without_week": 0.2, "week_duplicate": 0.5, "due_mismatch": 0.1,
         "response_duplicate": 0.2, "response_conflict": 0.2}


def one_core(state, selection=None) -> bytes:
    return plan_bytes(build_plan(SPEC, state, selection))


def on_cores(state, cores: int, selection=None) -> bytes:
    outcome = workers.reconcile_on_cores(SPEC, state, selection, cores=cores)
    return plan_bytes(build_plan(SPEC, state, selection, outcome))


@pytest.mark.parametrize("seed", [1, 2, 3, 4, 5])
@pytest.mark.parametrize("cores", [2, 3])
def test_generated_data_gives_the_same_plan_file_on_several_cores(seed, cores):
    state = generate(Shape(clients=40, weeks=12, present=0.6, responses_per_series=4, seed=seed, **MESSY))
    single = one_core(state)
    assert b'"create_document"' in single and b'"fill_fields"' in single  # a plan with work in it
    assert on_cores(state, cores) == single
    # with a selection too: the series it matches and the findings about its documents
    selection = parse_selection("clientId=client-0000003", SPEC.series.key)
    assert on_cores(state, cores, selection) == one_core(state, selection)


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(states())
def test_any_messy_state_gives_the_same_plan_on_two_cores(state):
    assert on_cores(state, 2) == one_core(state)


def test_the_command_writes_the_same_plan_file_on_one_core_and_on_all(tmp_path):
    if workers.available_cores() < 2:
        pytest.skip("this machine lets the tests use one core only")
    source = tmp_path / "data.json"
    source.write_bytes(snapshot_bytes(generate(Shape(clients=60, seed=9, **MESSY))))

    def plan(out: str, cores: set[int] | None) -> subprocess.CompletedProcess:
        return subprocess.run(
            [sys.executable, "-m", "reconciler", "plan", "--spec", "specs/checkins.yaml", "--source",
             str(source), "--out", str(tmp_path / out), "--format", "markdown", "--quiet"],
            cwd=ROOT, capture_output=True, env={**os.environ, "PYTHONPATH": str(ROOT)},
            preexec_fn=(lambda: os.sched_setaffinity(0, cores)) if cores else None)

    single = plan("one.json", {min(os.sched_getaffinity(0))})
    every = plan("all.json", None)
    assert single.returncode == every.returncode == 0, single.stderr + every.stderr
    assert (tmp_path / "one.json").read_bytes() == (tmp_path / "all.json").read_bytes()
    assert single.stdout == every.stdout


# -- a worker that fails -------------------------------------------------------------------------


def _in_workers(monkeypatch, act) -> None:
    """Make ``act()`` happen in each forked worker, in place of its share of the kernel."""
    parent, real = os.getpid(), workers.reconcile_all

    def share(*args):
        if os.getpid() != parent:
            act()
        return real(*args)

    monkeypatch.setattr(workers, "reconcile_all", share)


@pytest.mark.parametrize("how, said", [
    (lambda: os.kill(os.getpid(), signal.SIGKILL), "was killed by signal 9"),
    (lambda: os._exit(0), "exited with code 0"),  # gone without a word: not a result
    (lambda: 1 / 0, "exited with code 1"),
])
def test_a_worker_that_dies_is_one_sentence(monkeypatch, how, said):
    state = generate(Shape(clients=20, weeks=8, seed=3))
    _in_workers(monkeypatch, how)
    with pytest.raises(ReconcileError) as raised:
        workers.reconcile_on_cores(SPEC, state, cores=2)
    message = str(raised.value)
    assert said in message and "no plan was made" in message and "\n" not in message


def test_a_failure_here_ends_the_workers_it_started(monkeypatch):
    state = generate(Shape(clients=20, weeks=8, seed=3))
    started: list[int] = []
    fork = os.fork

    def recording_fork() -> int:
        pid = fork()
        if pid:
            started.append(pid)
        return pid

    monkeypatch.setattr(os, "fork", recording_fork)
    _in_workers(monkeypatch, lambda: time.sleep(60))  # a worker that would outlive the run
    parent, real = os.getpid(), workers.reconcile_all

    def failing_here(*args):
        if os.getpid() == parent:
            raise KeyboardInterrupt  # Ctrl-C while this process plans its own share
        return real(*args)

    monkeypatch.setattr(workers, "reconcile_all", failing_here)
    with pytest.raises(KeyboardInterrupt):
        workers.reconcile_on_cores(SPEC, state, cores=3)
    assert len(started) == 2
    for pid in started:  # killed and reaped: not running, not a zombie
        with pytest.raises(ChildProcessError):
            os.waitpid(pid, os.WNOHANG)


def test_a_dead_worker_fails_the_command_with_one_sentence_and_no_plan_file(tmp_path):
    source = tmp_path / "data.json"
    source.write_bytes(snapshot_bytes(generate(Shape(clients=30, seed=4))))
    out = tmp_path / "plan.json"
    # The real command, whose workers are killed as they start their share.
    bootstrap = ("import os, signal, sys\n"
                 "from reconciler import workers\n"
                 "parent, real = os.getpid(), workers.reconcile_all\n"
                 "def share(*args):\n"
                 "    if os.getpid() != parent:\n"
                 "        os.kill(os.getpid(), signal.SIGKILL)\n"
                 "    return real(*args)\n"
                 "workers.reconcile_all = share\n"
                 "workers.available_cores = lambda: 2\n"
                 "from reconciler.cli import main\n"
                 "main()\n")
    run = subprocess.run([sys.executable, "-c", bootstrap, "plan", "--spec", "specs/checkins.yaml",
                          "--source", str(source), "--out", str(out), "--format", "markdown"],
                         cwd=ROOT, capture_output=True, text=True, timeout=120,
                         env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert run.returncode == 1
    assert run.stderr.startswith("error: a worker process planning ") and run.stderr.count("\n") == 1
    assert "killed by signal 9" in run.stderr and "Traceback" not in run.stderr
    assert run.stdout == "" and not out.exists() and list(tmp_path.iterdir()) == [source]


def test_one_core_plans_here_without_forking(monkeypatch):
    state = generate(Shape(clients=10, weeks=6, seed=2))
    monkeypatch.setattr(os, "fork", lambda: pytest.fail("forked for one core"))
    ops, findings = workers.reconcile_on_cores(SPEC, state, cores=1)
    assert (ops, findings) == reconcile(SPEC, state)
    assert replace(build_plan(SPEC, state), ops=tuple(ops), findings=tuple(findings)) == \
        build_plan(SPEC, state)
