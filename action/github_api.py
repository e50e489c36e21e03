"""The one place the CI scripts talk to GitHub: ``gh api``, authenticated by GH_TOKEN.

``RECONCILE_GH`` names another program to run in place of ``gh`` (the tests point it at a recorder
that answers with canned JSON); nothing else in ``action/`` reaches the network. Standard library only:
it runs before, and apart from, the reconciler's own dependencies.
"""

from __future__ import annotations

import json
import os
import subprocess
from typing import Any


class GitHubError(Exception):
    """A call to the GitHub API failed; the message is one sentence."""


def api(method: str, endpoint: str, body: dict[str, Any] | None = None, paginate: bool = False) -> Any:
    """Call ``gh api`` and return its JSON answer; every page of a paginated list, as one list."""
    command = [os.environ.get("RECONCILE_GH") or "gh", "api", "--method", method, endpoint]
    if paginate:
        command.append("--paginate")
    if body is not None:
        command += ["--input", "-"]
    try:
        run = subprocess.run(command, input=None if body is None else json.dumps(body),
                             capture_output=True, text=True, encoding="utf-8", timeout=120)
    except (OSError, subprocess.TimeoutExpired) as error:
        raise GitHubError(f"could not run gh api {method} {endpoint}: {error}") from error
    if run.returncode != 0:
        reason = run.stderr.strip().splitlines()[-1:] or [f"exit code {run.returncode}"]
        raise GitHubError(f"gh api {method} {endpoint} failed: {reason[0]}")
    return _pages(run.stdout)


def _pages(text: str) -> Any:
    """``gh api --paginate`` prints one JSON array per page, back to back: join them."""
    decoder, pages, at = json.JSONDecoder(), [], 0
    while text[at:].strip():
        at += len(text[at:]) - len(text[at:].lstrip())
        page, at = decoder.raw_decode(text, at)
        pages.append(page)
    if len(pages) > 1:
        return [item for page in pages for item in page]
    return pages[0] if pages else None
