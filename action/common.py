"""What both CI scripts need: marker words, markdown code spans, the tool's error sentence, and the
workflow's outputs and annotations. Standard library only; no network, no git.
"""

from __future__ import annotations

import hashlib
import os
import re
from urllib.parse import quote


def word(text: str) -> str:
    """Text as one word that cannot end an HTML comment; a long one (over 200 characters) as its hash."""
    quoted = quote(text, safe="/._:")
    return quoted if len(quoted) <= 200 else "sha256-" + hashlib.sha256(text.encode()).hexdigest()


def code(text: str) -> str:
    """Text as an inline code span no backtick inside can close, with control characters escaped."""
    text = "".join(char if char.isprintable() else ascii(char)[1:-1] for char in text)
    longest = max((len(run) for run in re.findall(r"`+", text)), default=0)
    pad = " " if longest else ""
    return f"{'`' * (longest + 1)}{pad}{text}{pad}{'`' * (longest + 1)}"


def error_sentence(stderr: str) -> str:
    lines = [line.strip() for line in stderr.splitlines() if line.strip()]
    errors = [line.removeprefix("error: ") for line in lines if line.startswith("error: ")]
    return (errors or lines or ["reconcile ended with no message"])[-1]


def set_outputs(**values: object) -> None:
    target = os.environ.get("GITHUB_OUTPUT")
    if target:
        with open(target, "a", encoding="utf-8") as out:
            out.writelines(f"{name.replace('_', '-')}={value}\n" for name, value in values.items())


def escape_data(text: str) -> str:
    """Data inside a workflow command (``::error::``) can neither end it nor start another."""
    return text.replace("%", "%25").replace("\r", "%0D").replace("\n", "%0A")


def escape_property(text: str) -> str:
    return escape_data(text).replace(":", "%3A").replace(",", "%2C")
