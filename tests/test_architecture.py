"""The shape of the code: a pure core, and an engine that knows rule kinds, not one app."""

from __future__ import annotations

import ast
import re
import shutil
import subprocess
import sys
import typing
from pathlib import Path

import pytest
from builders import ROOT

ENGINE = ["kernel.py", "model.py", "plan.py", "verify.py", "audit.py", "audit_page.py", "render.py",
          "values.py", "snapshot.py", "commands.py", "cli.py", "restore.py", "rollback.py", "journal.py"]
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


def test_the_plan_can_hold_only_additive_ops_and_only_rollback_deletes():
    """A plan's op types are a create and a fill, and a plan file knows no other op; the undo ops
    (delete, clear) live in the rollback module alone, and the only code that sends a delete or
    drops a document is the rollback's write primitive of each store."""
    from reconciler import model, plan, rollback

    assert typing.get_args(model.Op) == (model.CreateDocumentOp, model.FillFieldsOp)
    assert plan._OPS == ("create_document", "fill_fields")
    assert set(typing.get_args(rollback.UndoOp)) == {rollback.DeleteDocumentOp, rollback.ClearFieldsOp}
    deleting: dict[str, list[str]] = {}
    for module in (ROOT / "reconciler" / "store.py", ROOT / "reconciler" / "snapshot.py"):  # the writers
        tree = ast.parse(module.read_text())
        for function in ast.walk(tree):
            if not isinstance(function, ast.FunctionDef):
                continue
            for node in ast.walk(function):
                sends_delete = (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute)
                                and node.func.attr == "delete")
                drops_item = isinstance(node, ast.Delete) and any(
                    isinstance(target, ast.Subscript) for target in node.targets)
                if sends_delete or drops_item or (isinstance(node, ast.Name) and node.id == "DELETE_FIELD"):
                    deleting.setdefault(module.name, []).append(function.name)
    assert {name: sorted(set(functions)) for name, functions in deleting.items()} == {
        "store.py": ["_add_undo"], "snapshot.py": ["undo_groups"]}
