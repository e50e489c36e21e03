"""The lease: one writer at a time on a source. Owns taking, renewing, checking and releasing it,
and the sentences that name its holder; must not read or write data, and must not print (every
message goes to the caller's ``notify``, or into an error).

Concurrent runs are safe without it (every write carries a precondition); the lease is what turns
a second operator's run into one clear sentence instead of hundreds of skipped writes. Every
command that writes wraps its reads and writes in it::

    from reconciler.lease import hold_lease

    with hold_lease(store, operation="restore", plan_digest=None, wait=options.lock_timeout,
                    ttl=options.lease_ttl, notify=options.notify) as lease:
        before = store.read(collections)          # read under the lease
        store.apply(groups, now, journal, before, checkpoint=lease.check)   # writes
        # lease.check() raises LeaseLost: call it before each commit of your own, too

``store`` is the ``FirestoreStore`` or ``SnapshotStore`` the command writes; ``operation`` names the
command ("apply", "restore", "rollback") and ``plan_digest`` what it writes (e.g. ``sha256:`` of the
plan file, or of the journal a rollback undoes; ``lease.describe(digest)`` sets it later). A second
run raises ``LeaseHeld`` naming the holder, after waiting up to ``wait`` seconds for it; the lease
is released on every way out of the block (success, an error, Ctrl-C; after ``ServerLost``, with a
short deadline: when the server still does not answer, the lease expires by itself after ``ttl``).

On Firestore the lease is one document, ``LOCK_COLLECTION/lease`` (``--lock-collection``), in the
``reconcile-lease`` format of docs/plan-format.md: lease ID (random), owner (user, host, process
ID), operation, plan digest, start, last renewal and expiry, and state (``held``/``released``). How
it behaves, and why:

- Every write of it carries a precondition: "must not exist" to create it, its ``update_time`` as
  just read to renew it, to take over a released or expired one, or to release it. Two runs that
  race for it cannot both win; a write whose reply was lost is recognised by its lease ID.
- Expiry is judged by the server's clock (the read time of the read that sees the document), never
  by a client's: machines with skewed clocks still agree on who holds it.
- Releasing marks the document ``released`` (with when and by whom); it is never deleted: the
  document is the last holder's record, and a deleted one would be a create race.
- A background thread renews it every ``ttl / 3`` seconds. Before each commit, ``check`` reads it
  again: a lease force-unlocked or taken over stops the run before its next commit, and so does
  one that could not be renewed for 4/5 of ``ttl`` (its expiry is then near, and another run may
  take it over).

On a snapshot file the lease is an operating-system lock (``filelock``) on ``FILE.lock`` next to
the file, held for the run; the OS releases it when the process ends, however it ends.
"""

from __future__ import annotations

import contextlib
import getpass
import os
import secrets
import socket
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from filelock import FileLock, Timeout

from reconciler.errors import LeaseError, LeaseHeld, LeaseLost, ReconcileError, ServerLost, SourceError
from reconciler.formats import LEASE
from reconciler.model import Document
from reconciler.snapshot import SnapshotStore
from reconciler.store import LOCK_COLLECTION, FirestoreStore

LEASE_DOCUMENT = "lease"  # the one document of the lock collection: one writer per database
DEFAULT_TTL = 60.0  # seconds a lease lasts without renewal
USABLE_SHARE = 0.8  # a run commits only within this share of its ttl since its last renewal
POLL = 1.0  # seconds between looks at a held lease, while waiting for it
QUICK_RELEASE = 2.0  # seconds to try releasing after the server was lost: the run's sentence waits
HELD, RELEASED = "held", "released"

Notify = Callable[[str], None]


def _silent(message: str) -> None:
    pass


@dataclass(frozen=True, slots=True, kw_only=True)
class Owner:
    user: str
    host: str
    pid: int

    def __str__(self) -> str:
        return f"{self.user}@{self.host} pid {self.pid}"

    @classmethod
    def this_process(cls) -> Owner:
        try:
            user = getpass.getuser()
        except (OSError, KeyError):  # a container's user with no name
            user = f"uid{os.getuid()}"
        return cls(user=user, host=socket.gethostname(), pid=os.getpid())


@dataclass(frozen=True, slots=True, kw_only=True)
class Holder:
    """What a lease document says."""

    lease_id: str
    state: str
    owner: Owner
    operation: str
    plan_digest: str | None
    started_at: datetime
    expires_at: datetime
    released_at: datetime | None
    released_by: str | None

    def expired(self, now: datetime) -> bool:
        return self.state == HELD and now >= self.expires_at

    def free(self, now: datetime) -> bool:
        return self.state == RELEASED or self.expired(now)

    def who(self, now: datetime) -> str:
        """``lease 3f9c2a7be1d04a65 of alice@laptop pid 4242 (apply, plan sha256:0123456789ab) since
        T (3m12s ago)``, times by the server's clock."""
        what = self.operation + (f", plan {self.plan_digest[:19]}" if self.plan_digest else "")
        return (f"lease {self.lease_id} of {self.owner} ({what}) since {_when(self.started_at)} "
                f"({_span(now - self.started_at)} ago)")

    def describe(self, now: datetime) -> str:
        """``who``, then ``expires T (in 48s)``, ``expired T (12s ago)`` or ``released T by …``."""
        if self.state == RELEASED:
            end = f"released {_when(self.released_at)} by {self.released_by}"
        elif self.expired(now):
            end = f"expired {_when(self.expires_at)} ({_span(now - self.expires_at)} ago)"
        else:
            end = f"expires {_when(self.expires_at)} (in {_span(self.expires_at - now)})"
        return f"{self.who(now)}, {end}"


def _when(moment: datetime | None) -> str:
    return moment.strftime("%Y-%m-%dT%H:%M:%SZ") if moment else "?"


def _span(delta: timedelta) -> str:
    seconds = max(int(delta.total_seconds()), 0)
    hours, rest = divmod(seconds, 3600)
    minutes, seconds = divmod(rest, 60)
    if hours:
        return f"{hours}h{minutes:02d}m"
    return f"{minutes}m{seconds:02d}s" if minutes else f"{seconds}s"


def read_holder(doc: Document, where: str) -> Holder:
    """A lease document → Holder; LeaseError naming ``where`` when this build cannot read it (then
    it cannot tell whether the lease is free, so no run takes it)."""
    fields = doc.fields
    if fields.get("format") != LEASE.name:
        raise LeaseError(f"{where}: not a lease document this tool wrote (it has no \"format\": "
                         f"\"{LEASE.name}\"), so no run can tell whether the database is free; look at "
                         "it, and remove it by hand if nothing needs it, or choose another --lock-collection")
    version = fields.get("format_version")
    if not isinstance(version, str) or version.split(".")[0] != LEASE.major:
        raise LeaseError(f"{where}: the lease document has format_version {version!r}, which this build "
                         f"does not read (it reads {LEASE.major}.x); a newer checkin-reconciler wrote it: "
                         "upgrade to take the lease")
    owner = fields.get("owner")
    try:
        if type(owner) is not dict:
            raise _Malformed("owner is not a map")
        holder = Holder(
            lease_id=_typed(fields, "lease_id", str), state=_typed(fields, "state", str),
            owner=Owner(user=_typed(owner, "user", str), host=_typed(owner, "host", str),
                        pid=_typed(owner, "pid", int)),
            operation=_typed(fields, "operation", str),
            plan_digest=_typed(fields, "plan_digest", str, optional=True),
            started_at=_typed(fields, "started_at", datetime),
            expires_at=_typed(fields, "expires_at", datetime),
            released_at=_typed(fields, "released_at", datetime, optional=True),
            released_by=_typed(fields, "released_by", str, optional=True))
        if holder.state not in (HELD, RELEASED):
            raise _Malformed(f"state is neither {HELD!r} nor {RELEASED!r}")
    except _Malformed as error:
        raise LeaseError(f"{where}: the lease document is malformed ({error}); look at it, and remove it "
                         "by hand if nothing needs it") from None
    return holder


class _Malformed(Exception):
    """A field of a lease document is missing or of the wrong type."""


def _typed(fields: dict[str, Any], name: str, kind: type, optional: bool = False) -> Any:
    value = fields.get(name)
    if (value is None and optional) or (type(value) is kind):
        return value
    raise _Malformed(f"{name} is not {_KINDS[kind]}")


_KINDS = {str: "a string", int: "an integer", datetime: "a timestamp"}


class Lease:
    """This run's lease on a Firestore database (see the module docstring)."""

    def __init__(self, store: FirestoreStore, *, operation: str, plan_digest: str | None, ttl: float,
                 notify: Notify) -> None:
        self.store = store
        self.source = store.source
        self.operation, self.plan_digest, self.ttl = operation, plan_digest, float(ttl)
        self.notify = notify
        self.lease_id = secrets.token_hex(8)
        self.owner = Owner.this_process()
        self.where = f"{store.source} ({store.lock_collection}/{LEASE_DOCUMENT})"
        self.started_at: datetime | None = None
        self.expires_at: datetime | None = None
        self.taken_over_from: str | None = None
        self._usable_until = 0.0
        self._lost: LeaseLost | None = None
        self._trouble = ""
        self._lock = threading.Lock()  # one write of the document at a time: renewal, release
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    # -- taking --------------------------------------------------------------------------------------

    def take(self, wait: float = 0.0) -> None:
        """Take the lease: create its document, or take over a released or expired one; while
        another run holds it, wait up to ``wait`` seconds, then raise LeaseHeld."""
        deadline = time.monotonic() + wait
        announced = False
        attempt = time.monotonic()
        while True:
            doc, now = self.store.read_lease(LEASE_DOCUMENT)
            holder = read_holder(doc, self.where) if doc is not None else None
            if doc is not None and holder is not None and holder.lease_id == self.lease_id:
                self._taken(attempt)  # this run's own write, whose reply was lost
                return
            if holder is None or holder.free(now):
                attempt = time.monotonic()
                self.started_at = now
                self.taken_over_from = holder.lease_id if holder and holder.state == HELD else None
                fields = self._fields(now)
                written = (self.store.create_lease(LEASE_DOCUMENT, fields) if doc is None else
                           self.store.update_lease(LEASE_DOCUMENT, fields, doc.update_time))
                if written is not None:
                    if holder is not None and holder.state == HELD:
                        self.notify(f"{self.source}: took over an expired lease ({holder.describe(now)}): "
                                    "its run ended without releasing it, or stopped renewing it")
                    self._taken(attempt)
                    return
                continue  # another run wrote it first, or this run's write landed: read again
            assert holder is not None
            if time.monotonic() >= deadline:
                waited = f" (waited {wait:g}s)" if wait > 0 else ""
                raise LeaseHeld(f"{self.source} is locked by another run: {holder.describe(now)}{waited}; "
                                f"nothing was written. {self._what_next(holder)}")
            if not announced:
                self.notify(f"{self.source} is locked by another run: {holder.describe(now)}; waiting up "
                            f"to {wait:g}s for it (--lock-timeout)")
                announced = True
            time.sleep(max(min(POLL, deadline - time.monotonic()), 0.05))

    def _what_next(self, holder: Holder) -> str:
        unlock = f"reconcile force-unlock {holder.lease_id} --source {self.source}"
        if self.store.lock_collection != LOCK_COLLECTION:
            unlock += f" --lock-collection {self.store.lock_collection}"
        return ("Wait for that run to end, or pass --lock-timeout SECONDS to wait for it; if it is gone "
                f"(killed, its machine lost), its lease expires by itself, or release it now with `{unlock}`")

    def _taken(self, attempt: float) -> None:
        self._usable_until = attempt + self.ttl * USABLE_SHARE

    def _fields(self, now: datetime) -> dict[str, Any]:
        self.expires_at = now + timedelta(seconds=self.ttl)
        return {**LEASE.header(), "lease_id": self.lease_id, "state": HELD, "operation": self.operation,
                "plan_digest": self.plan_digest,
                "owner": {"user": self.owner.user, "host": self.owner.host, "pid": self.owner.pid},
                "started_at": self.started_at, "renewed_at": now, "expires_at": self.expires_at,
                "ttl_seconds": self.ttl, "released_at": None, "released_by": None,
                "taken_over_from": self.taken_over_from}

    # -- keeping ---------------------------------------------------------------------------------------

    def start_renewing(self) -> None:
        self._thread = threading.Thread(target=self._renew_loop, name="reconcile-lease", daemon=True)
        self._thread.start()

    def _renew_loop(self) -> None:
        while not self._stop.wait(self.ttl / 3):
            try:
                self.renew()
            except LeaseLost:
                return  # check() raises it before the next commit
            except ReconcileError as error:
                # The server is slow or away: the next tick tries again; meanwhile check() stops
                # the run once the lease may have expired.
                self._trouble = str(error)
            except Exception as error:  # a bug must not end renewal silently: check() says it
                self._trouble = f"{type(error).__name__}: {error}"

    def renew(self) -> None:
        """Extend the lease by ``ttl`` from the server's now; LeaseLost when it is no longer ours."""
        with self._lock:
            if self._stop.is_set():
                return
            if self._lost is not None:
                raise self._lost
            attempt = time.monotonic()
            doc, now = self.store.read_lease(LEASE_DOCUMENT)
            self._confirm(doc, now)
            assert doc is not None and doc.update_time is not None
            if self.store.update_lease(LEASE_DOCUMENT, self._fields(now), doc.update_time) is None:
                doc, now = self.store.read_lease(LEASE_DOCUMENT)
                self._confirm(doc, now)  # still ours: the write whose reply was lost landed
            self._usable_until = attempt + self.ttl * USABLE_SHARE
            self._trouble = ""

    def describe(self, plan_digest: str | None) -> None:
        """Record what this run writes, once it is known (a plan made under the lease)."""
        self.plan_digest = plan_digest
        self.renew()

    def check(self) -> None:
        """Before each commit: LeaseLost unless the lease is still this run's and fresh enough that
        no other run can have taken it over."""
        if self._lost is not None:
            raise self._lost
        if time.monotonic() >= self._usable_until:
            trouble = f" ({self._trouble})" if self._trouble else ""
            self._lost = LeaseLost(
                f"{self.source}: this run's lease {self.lease_id} could not be renewed for "
                f"{self.ttl * USABLE_SHARE:g}s{trouble}, so another run may take it over once it expires; "
                "stopped before the next commit")
            raise self._lost
        doc, now = self.store.read_lease(LEASE_DOCUMENT)
        self._confirm(doc, now)

    def _confirm(self, doc: Document | None, now: datetime) -> None:
        if doc is None:
            reason = f"its document {self.store.lock_collection}/{LEASE_DOCUMENT} was removed"
        else:
            holder = read_holder(doc, self.where)
            if holder.lease_id != self.lease_id:
                reason = f"another run took it over after it expired ({holder.describe(now)})"
            elif holder.state == RELEASED:
                reason = f"it was released at {_when(holder.released_at)} by {holder.released_by}"
            else:
                return
        self._lost = LeaseLost(f"{self.source}: this run lost its lease {self.lease_id}: {reason}; stopped "
                               "before the next commit")
        raise self._lost

    # -- releasing -------------------------------------------------------------------------------------

    def release(self, quick: bool = False) -> None:
        """Mark the lease released, if it is still this run's. ``quick`` (the server was just lost):
        try for a few seconds only, so the run ends with its sentence soon; the lease then expires by
        itself. A failure to release is said through ``notify``, never raised: the run's own outcome
        stands."""
        self._stop.set()
        store = self.store.with_timeout(QUICK_RELEASE) if quick else self.store
        with self._lock:
            if self._lost is not None:
                return
            try:
                doc, now = store.read_lease(LEASE_DOCUMENT)
                if doc is None or read_holder(doc, self.where).lease_id != self.lease_id:
                    return
                if read_holder(doc, self.where).state == RELEASED:
                    return
                assert doc.update_time is not None
                fields = {**self._fields(now), "expires_at": now, "state": RELEASED, "released_at": now,
                          "released_by": f"{self.owner} (its holder, at the end of its {self.operation})"}
                store.update_lease(LEASE_DOCUMENT, fields, doc.update_time)  # None: lost meanwhile
            except ReconcileError as problem:
                why = "the database did not answer" if isinstance(problem, ServerLost) else str(problem)
                self.notify(f"{self.source}: could not release the lease {self.lease_id} ({why}); it "
                            f"expires by itself at {_when(self.expires_at)}, or release it with "
                            f"`reconcile force-unlock {self.lease_id} --source {self.source}`")


class HeldElsewhere:
    """A check of a lease held by another process: a pipeline's workers commit under the lease
    their launcher holds and renews. Before each commit, ``check`` reads the lease document and
    raises LeaseLost unless it is still that lease, held, with at least the margin a local run
    keeps (``1 - USABLE_SHARE`` of its ttl) before it expires: a launcher that died or stopped
    renewing stops its workers' writes before another run can take the lease over."""

    def __init__(self, store: FirestoreStore, lease_id: str, ttl: float) -> None:
        self.store, self.lease_id, self.ttl = store, lease_id, float(ttl)
        self.where = f"{store.source} ({store.lock_collection}/{LEASE_DOCUMENT})"

    def check(self) -> None:
        doc, now = self.store.read_lease(LEASE_DOCUMENT)
        holder = read_holder(doc, self.where) if doc is not None else None
        if holder is None:
            reason = f"its document {self.store.lock_collection}/{LEASE_DOCUMENT} was removed"
        elif holder.lease_id != self.lease_id:
            reason = f"another run holds the database now ({holder.describe(now)})"
        elif holder.state == RELEASED:
            reason = f"it was released at {_when(holder.released_at)} by {holder.released_by}"
        elif holder.expires_at - now < timedelta(seconds=self.ttl * (1 - USABLE_SHARE)):
            reason = (f"its launcher stopped renewing it, so it expires {_when(holder.expires_at)} and "
                      "another run may take it over")
        else:
            return
        raise LeaseLost(f"{self.store.source}: the run's lease {self.lease_id} is no longer safe to write "
                        f"under: {reason}; the pipeline's workers stop before their next commit")


class FileLease:
    """This run's lock on a snapshot file: ``FILE.lock`` next to it, an OS lock (see the module)."""

    lease_id = None

    def __init__(self, store: SnapshotStore, notify: Notify) -> None:
        self.source = store.source
        self.path = store.path
        self.lock_path = store.path.with_name(store.path.name + ".lock")
        self.creating = store.create
        self.notify = notify
        self._lock = FileLock(str(self.lock_path))

    def take(self, wait: float = 0.0) -> None:
        # No lock file beside a mistyped path; a restore into a new file (a store that may create
        # its file) locks the name it is about to create.
        if not self.path.exists() and not self.creating:
            raise SourceError(f"{self.source}: snapshot file not found")
        try:
            try:
                self._lock.acquire(timeout=0)
                return
            except Timeout:
                if wait <= 0:
                    raise
            self.notify(f"{self.source} is locked by another run (its lock file {self.lock_path} is held); "
                        f"waiting up to {wait:g}s for it (--lock-timeout)")
            self._lock.acquire(timeout=wait, poll_interval=min(POLL, 0.2))
        except Timeout:
            waited = f" (waited {wait:g}s)" if wait > 0 else ""
            raise LeaseHeld(f"{self.source} is locked by another run: its lock file {self.lock_path} is "
                            f"held{waited}; nothing was written. Wait for that run to end, or pass "
                            "--lock-timeout SECONDS to wait for it") from None
        except OSError as error:
            raise SourceError(f"{self.lock_path}: cannot create the snapshot's lock file "
                              f"({error.strerror or error}); apply writes in the snapshot's directory, "
                              "which must be writable") from error

    def start_renewing(self) -> None:
        pass  # the OS holds the lock until it is released or the process ends

    def describe(self, plan_digest: str | None) -> None:
        pass

    def check(self) -> None:
        pass

    def release(self, quick: bool = False) -> None:
        self._lock.release()


AnyLease = Lease | FileLease


def take_lease(store: FirestoreStore | SnapshotStore, *, operation: str, plan_digest: str | None = None,
               wait: float = 0.0, ttl: float = DEFAULT_TTL, notify: Notify | None = None,
               renew: bool = True) -> AnyLease:
    """Take the lease on ``store``'s source (see ``hold_lease``, which also releases it). ``renew``
    False: no renewal thread (a holder that stops renewing, as a killed one would)."""
    notify = notify or _silent
    lease: AnyLease = (FileLease(store, notify) if isinstance(store, SnapshotStore) else
                       Lease(store, operation=operation, plan_digest=plan_digest, ttl=ttl, notify=notify))
    lease.take(wait)
    if renew:
        lease.start_renewing()
    return lease


@contextlib.contextmanager
def hold_lease(store: FirestoreStore | SnapshotStore, *, operation: str, plan_digest: str | None = None,
               wait: float = 0.0, ttl: float = DEFAULT_TTL,
               notify: Notify | None = None) -> Iterator[AnyLease]:
    """Hold the lease on ``store``'s source for the block: taken (or LeaseHeld after ``wait``
    seconds), renewed, released on every way out. See the module docstring for use."""
    lease = take_lease(store, operation=operation, plan_digest=plan_digest, wait=wait, ttl=ttl, notify=notify)
    lost_server = False
    try:
        yield lease
    except BaseException as error:
        lost_server = _lost_server(error)
        raise
    finally:
        lease.release(quick=lost_server)


def _lost_server(error: BaseException | None) -> bool:
    """Whether ``error`` is, or was caused by, ServerLost (apply wraps it in ApplyInterrupted)."""
    seen = 0
    while error is not None and seen < 10:
        if isinstance(error, ServerLost):
            return True
        error, seen = error.__cause__ or error.__context__, seen + 1
    return False


@dataclass(frozen=True, slots=True, kw_only=True)
class Unlocked:
    holder: Holder  # as it was before the force-unlock
    already_released: bool
    at: datetime


def force_unlock(store: FirestoreStore | SnapshotStore, lease_id: str,
                 confirm: Callable[[Holder, datetime], None]) -> Unlocked:
    """Release the lease ``lease_id`` someone else holds, only if the database's lease has that ID.
    ``confirm(holder, now)`` is called first and raises to cancel. The holder, if it still runs,
    stops before its next commit."""
    if isinstance(store, SnapshotStore):
        raise LeaseError(f"{store.source}: a snapshot file's lock is an operating-system lock, released "
                         "when the process holding it ends; there is no lease to force-unlock (end that "
                         "process instead)")
    where = f"{store.source} ({store.lock_collection}/{LEASE_DOCUMENT})"
    released_by = f"{Owner.this_process()} (force-unlock)"
    confirmed = False
    for _ in range(10):  # the holder renews meanwhile: read again and retry
        doc, now = store.read_lease(LEASE_DOCUMENT)
        if doc is None:
            raise LeaseError(f"{where}: there is no lease on this database; nothing to unlock")
        holder = read_holder(doc, where)
        if holder.lease_id != lease_id:
            raise LeaseError(f"{store.source}: the lease on this database is not {lease_id} but "
                             f"{holder.describe(now)}; nothing was changed. Check the ID in the message "
                             "of the run that was refused")
        if holder.state == RELEASED:
            # Released by this command's own write whose reply was lost, or before it ran.
            ours = confirmed and holder.released_by == released_by
            return Unlocked(holder=holder, already_released=not ours, at=now)
        if not confirmed:
            confirm(holder, now)
            confirmed = True
            continue  # the confirmation may have taken long: read again
        assert doc.update_time is not None
        fields = {**doc.fields, "state": RELEASED, "expires_at": now, "released_at": now,
                  "released_by": released_by}
        if store.update_lease(LEASE_DOCUMENT, fields, doc.update_time) is not None:
            return Unlocked(holder=holder, already_released=False, at=now)
    raise LeaseError(f"{where}: the lease kept changing while it was being released; try again")
