"""The shape of the code: a pure core, and an engine that knows rule kinds, not one app."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from builders import ROOT

ENGINE = ["kernel.py", "model.py", "plan.py", "verify.py", "audit.py", "audit_page.py", "render.py",
          "values.py", "snapshot.py", "commands.py", "cli.py", "restore.py"]
APP_WORDS = ["check_in", "formResponses", "clientId", "formId", "recurringWeek", "isRecurring",
             "totalWeeks", "dueDate", "responseId", "assignmentId", "submittedAt", "completedAt"]


@pytest.mark.parametrize("module", ENGINE)
def test_the_engine_names_no_collection_or_field_of_the_checkin_data(module):
    code = (ROOT / "reconciler" / module).read_text()
    # Only code counts: docstrings and comments may explain with the shipped spec as the example.
    code = re.sub(r'""".*?"""', "", code, flags=re.S)
    code = "\n".join(line.split("#")[0] for line in code.splitlines())
    found = [word for word in APP_WORDS if word in code]
    assert not found, f"{module} names {found}: such names belong in the spec"


def test_import_contracts_hold():
    """The functional core imports no yaml, no Firestore, no file or clock module (pyproject.toml)."""
    linter = shutil.which("lint-imports", path=str(Path(sys.executable).parent))
    assert linter, "import-linter is part of the dev extra"
    run = subprocess.run([linter], cwd=ROOT, capture_output=True, text=True)
    assert run.returncode == 0, run.stdout + run.stderr
    assert "0 broken" in run.stdout
