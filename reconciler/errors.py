"""The exceptions a user can see. Owns the error tree; must not format output or pick exit codes.

    ReconcileError                 every failure the CLI reports as one sentence, exit 1
    ├── SpecError                  a spec file is unreadable, malformed or breaks a rule
    ├── SourceError                a snapshot file or database cannot be read or written
    │   ├── FormatVersionError     a file declares a format major version this build does not read
    │   └── ServerLost             the database stopped answering within the deadline (mid-apply too)
    ├── PlanFileError              a saved plan file is unreadable or malformed
    ├── JournalError               a journal is unreadable, malformed, or not one a rollback undoes
    ├── SelectionError             a --select names no series key field, or matches no series; a
    │                              --collection names no collection of the snapshot
    ├── ApplyInterrupted           a run stopped after some writes: what was written, and what next
    ├── LeaseError                 the lease (one writer at a time) cannot be taken or released as asked
    │   ├── LeaseHeld              another run holds it: this one starts no write
    │   └── LeaseLost              this run's lease was released or taken over: stop before the next commit
    └── ApplyRefused               a run that writes will not start (no terminal to ask, wrong source)
        └── UnsafePlan             the plan holds a write its spec could never make (nothing written)

Every message names what went wrong, where (file:line:column or document path), and what to do.
"""

from __future__ import annotations


class ReconcileError(Exception):
    """Root of every error the tool reports to a user."""


class SpecError(ReconcileError):
    """A spec is unreadable, does not match the schema, or breaks a semantic rule."""

    SHOWN = 25  # a generated or hostile spec can have thousands of problems; the first ones suffice

    def __init__(self, problems: list[str]) -> None:
        self.problems = list(problems)
        shown = self.problems[:self.SHOWN]
        more = len(self.problems) - len(shown)
        super().__init__(shown[0] if len(self.problems) == 1 else
                         f"{len(self.problems)} problems in the spec:\n  " + "\n  ".join(shown)
                         + (f"\n  … and {more} more; fix these first" if more else ""))


class SourceError(ReconcileError):
    """A snapshot file or database could not be read or written."""


class FormatVersionError(SourceError):
    """A file declares a major format version this build cannot read."""


class PlanFileError(ReconcileError):
    """A saved plan file is missing, malformed, or of an unknown format version."""


class JournalError(ReconcileError):
    """A journal is missing, malformed, cut off, of an unknown version, or a rollback's own."""


class SelectionError(ReconcileError):
    """A --select is malformed, names a field that is not a series key field, or matches nothing;
    or a --collection names a collection the snapshot to restore does not hold."""


class ApplyRefused(ReconcileError):
    """Apply, restore or rollback refuses to start: no terminal to confirm on, or made for another
    source."""


class UnsafePlan(ApplyRefused):
    """A plan proposes a write its own spec could never produce: the whole plan is refused."""


class ServerLost(SourceError):
    """The database did not answer within the deadline, or kept failing, after every retry."""


class LeaseError(ReconcileError):
    """The lease cannot be taken, released or force-unlocked as asked (a wrong lease ID, a lease
    document this build cannot read)."""


class LeaseHeld(LeaseError):
    """Another run holds the lease (or the snapshot file's lock): nothing was written."""


class LeaseLost(LeaseError):
    """This run's lease was force-unlocked, taken over after it expired, or could not be renewed in
    time: the run stops before its next commit."""


class ApplyInterrupted(ReconcileError):
    """An apply, a restore or a rollback ended before its last commit (lost server, refused call, interrupt);
    says how far."""
