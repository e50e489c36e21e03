from __future__ import annotations

import pytest
from builders import checkins


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption("--regen-golden", action="store_true",
                     help="Rewrite tests/golden/* from the current output (on purpose only).")


@pytest.fixture(scope="session")
def spec():
    return checkins()
