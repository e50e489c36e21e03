"""The files this build writes and reads, their versions, and the one check of a file's version.

Every file the tool writes is a JSON object (or, for a journal, JSON lines whose first line is
one) that starts with ``"format"`` and ``"format_version"``; so does the lease document it keeps in
a database. A reader accepts its own major version
from ``oldest`` on, minor versions newer than its own included (readers ignore keys they do not
know); anything else is refused in one sentence that says what to do, and says nothing of what
another kind of file holds (it may be anything, secrets included). docs/plan-format.md documents
each format; its table of versions is checked against this one by the test suite.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from reconciler.errors import FormatVersionError
from reconciler.values import printable


@dataclass(frozen=True, slots=True, kw_only=True)
class FileFormat:
    name: str  # the value of "format"
    version: str  # what this build writes
    oldest: str  # the oldest version of the same major this build reads
    what: str  # "a plan file", for messages
    how_to_make: str  # the command that writes one
    read: bool = True  # False: written for people and machines, never read back by this tool

    @property
    def major(self) -> str:
        return self.version.split(".")[0]

    def header(self) -> dict[str, str]:
        return {"format": self.name, "format_version": self.version}


PLAN = FileFormat(name="reconcile-plan", version="1.2", oldest="1.2", what="a plan file",
                  how_to_make="`reconcile plan --spec SPEC --source SRC --out FILE`")
PLAN_MANIFEST = FileFormat(name="reconcile-plan-manifest", version="1.0", oldest="1.0",
                           what="a sharded plan's manifest",
                           how_to_make="`reconcile plan --runner beam --out DIR`")
SNAPSHOT = FileFormat(name="reconcile-snapshot", version="1.0", oldest="1.0", what="a snapshot file",
                      how_to_make="`reconcile snapshot --source SRC --out FILE`")
JOURNAL = FileFormat(name="reconcile-journal", version="1.2", oldest="1.0", what="a journal",
                     how_to_make="`reconcile apply`")
COMPARISON = FileFormat(name="reconcile-comparison", version="1.0", oldest="1.0",
                        what="a spec comparison",
                        how_to_make="`reconcile plan --spec NEW --compare-spec OLD --format json`",
                        read=False)
DRIFT = FileFormat(name="reconcile-drift", version="1.1", oldest="1.0", what="a drift report",
                   how_to_make="`reconcile check --spec SPEC --source SRC --format json`")
SERIES = FileFormat(name="reconcile-series", version="1.0", oldest="1.0", what="a series report",
                    how_to_make="`reconcile series --spec SPEC --source SRC --select FIELD=VALUE "
                                "--format json`",
                    read=False)
RESTORE = FileFormat(name="reconcile-restore", version="1.0", oldest="1.0", what="a restore report",
                     how_to_make="`reconcile restore SNAPSHOT --to TARGET --format json`", read=False)
ROLLBACK = FileFormat(name="reconcile-rollback", version="1.0", oldest="1.0", what="a rollback report",
                      how_to_make="`reconcile rollback JOURNAL --format json`", read=False)
LEASE = FileFormat(name="reconcile-lease", version="1.0", oldest="1.0",
                   what="a lease document", how_to_make="`reconcile apply`")
ALL = (PLAN, PLAN_MANIFEST, SNAPSHOT, JOURNAL, COMPARISON, DRIFT, SERIES, RESTORE, ROLLBACK, LEASE)

_VERSION = re.compile(r"(\d{1,6})\.(\d{1,6})")


def check_version(data: Any, where: str, fmt: FileFormat, error: type[Exception] = FormatVersionError) -> str:
    """The version ``data`` (a parsed file's top object) declares, when this build reads it; else
    ``error`` with one sentence naming ``where``."""
    if type(data) is not dict or data.get("format") != fmt.name:
        raise error(f'{where}: not {fmt.what} (one is a JSON object with "format": "{fmt.name}", '
                    f"written by {fmt.how_to_make})")
    version = data.get("format_version")
    match = _VERSION.fullmatch(version) if isinstance(version, str) else None
    if match is None or match[1] != fmt.major:
        said = repr(version) if isinstance(version, (str, int)) and type(version) is not bool else ""
        said = (printable(said[:24]) + "… " if len(said) > 24 else said + " ") if said else ""
        raise error(f"{where}: format_version {said}is not supported (this build reads {fmt.what} of "
                    f"format {fmt.major}.x); upgrade checkin-reconciler, or make the file anew with "
                    f"{fmt.how_to_make}")
    if int(match[2]) < int(fmt.oldest.split(".")[1]):
        raise error(f"{where}: format_version {version!r} was written by an earlier version of "
                    f"checkin-reconciler (this build reads {fmt.oldest} and later); make the file "
                    f"anew with {fmt.how_to_make}")
    return version
