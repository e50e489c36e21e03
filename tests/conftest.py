from __future__ import annotations

import pytest
from builders import checkins


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption("--regen-golden", action="store_true",
                     help="Rewrite tests/golden/* from the current output (on purpose only).")


@pytest.fixture(scope="session")
def spec():
    return checkins()


@pytest.fixture(scope="session")
def emulator():
    from emulator import Emulator

    running = Emulator()
    yield running
    running.stop()


@pytest.fixture
def live(emulator, monkeypatch, request):
    """A fresh project on the emulator, reached as ``firestore://PROJECT``; cleared afterwards."""
    from live import Live

    monkeypatch.setenv("FIRESTORE_EMULATOR_HOST", emulator.host)
    name = "".join(c if c.isalnum() else "-" for c in request.node.name.lower())
    project = ("test-" + name)[:44].rstrip("-")  # a project ID never ends with a hyphen
    emulator.reset(project)
    yield Live(project)
    emulator.reset(project)
