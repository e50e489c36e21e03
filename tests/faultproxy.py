"""A fault-injection TCP proxy for tests: put it between a client and the Firestore emulator and
make the network misbehave on purpose, from any thread, at any moment.

    with FaultProxy(emulator.host) as proxy:
        monkeypatch.setenv("FIRESTORE_EMULATOR_HOST", proxy.host)
        ...
        proxy.cut_after_request()   # the next reply is lost, the connection reset
        proxy.wait_mode("forward")

It listens on 127.0.0.1 only (a free port) and forwards every accepted connection to ``upstream``
("host:port"). One thread runs an event loop (``selectors``) over every connection: no thread per
connection, no busy loop, and ``close()`` stops and joins it. Modes, switched by a method each:

``forward()``
    Bytes pass both ways (the default). Half-closes are passed on: a FIN from one side becomes a
    ``shutdown(SHUT_WR)`` towards the other once its pending bytes are sent.
``delay(seconds)``
    Every chunk read from either side is held ``seconds`` before it is sent on (order is kept; a
    chunk read later never overtakes an earlier one, even after switching back to ``forward()``).
``blackhole()``
    A frozen server: every connection stays open, nothing is read or written either way, new
    connections are accepted (and connected upstream) but get nothing. Bytes are not lost: they
    wait in the kernel buffers and flow again, intact, after ``forward()``.
``refuse()``
    A dead server: every open connection is reset at once (SO_LINGER 0, both sides), and every new
    one is reset as soon as it is accepted.
``cut_after_request(settle=0.5)``
    The lost response: client->server bytes are forwarded, server->client bytes (and a FIN) are
    swallowed; ``settle`` seconds later every open connection is reset and the proxy goes back to
    ``forward()`` by itself. The server applied the write, the client never saw the reply.

A mode method returns once the event loop has applied it (``refuse()`` has then reset every
connection); ``mode`` is the current one and ``wait_mode("forward")`` waits for the end of a cut.
``stats()`` copies the counters: accepted, refused, upstream_failures, bytes_up (sent to the
server), bytes_down (sent to the client), bytes_swallowed (by a cut), resets (connections reset,
by any cause), closed, cuts, open (now). A byte is counted just after it is sent, so a client can
have it a moment before the counter does. ``events`` lists ``(time.monotonic(), kind, detail)``
with kind among mode, accept, connected, eof, close, reset, upstream_failed, accept_error, error,
closed (never one per chunk); ``kinds(kind)`` filters it. ``errors`` holds any unexpected exception
the loop caught: it never prints, so tests can assert ``proxy.errors == []``.

What the Firestore client raises under each fault, measured against the emulator with
google-cloud-firestore 2.34.1, google-api-core 2.44.0, grpcio 1.85.1. The emulator test in
tests/test_faultproxy.py asserts the cut of a create with and without retry and the blackholed
get; the rest was measured by hand once. All classes are in ``google.api_core.exceptions``.

``cut_after_request(settle)`` while a commit is in flight on an ESTABLISHED connection
    ``create(..., retry=None, timeout=10)``: ``ServiceUnavailable`` (503 "Stream removed
    (recvmsg:Connection reset by peer (104))"), raised when the reset comes (``settle`` s after
    the call), and the emulator HAS written the document.
    ``create(..., timeout=10)`` with the default retry (Commit retries UNAVAILABLE and
    RESOURCE_EXHAUSTED): the commit is sent again once the proxy forwards, and fails with
    ``AlreadyExists`` (409 "entity already exists"): it met its own first write.
    ``set({"n": Increment(1)}, merge=True)`` with the default retry: no exception, applied twice
    (n == 2). A call ``timeout`` shorter than ``settle``: ``DeadlineExceeded``, write applied too.
    A get (BatchGetDocuments) under a cut: ``ServiceUnavailable`` with ``retry=None``, success
    with the default retry.
    On a NEW connection the cut loses the request instead: gRPC sends no RPC before the
    server's HTTP/2 SETTINGS arrive, and those are swallowed, so ``retry=None`` gives
    ``ServiceUnavailable`` ("failed to connect to all addresses; ... Connection reset by peer")
    and nothing is written. Make one call in ``forward()`` first (the channel then stays up).
``blackhole()``
    ``get(timeout=2, retry=None)``: ``DeadlineExceeded`` (504 "Deadline Exceeded") at 2.0 s.
    ``create(..., timeout=2)``: ``DeadlineExceeded`` at 2.0 s, with ``retry=None`` AND with the
    default retry (Commit does not retry DEADLINE_EXCEEDED); nothing is written.
    ``get(timeout=2)`` with the default retry: BatchGetDocuments retries DEADLINE_EXCEEDED, each
    attempt waiting 2 s, until the Retry's own deadline (300 s in the GAPIC config; ``timeout``
    bounds one attempt only) or until the proxy forwards again (then it succeeds): measured still
    retrying after 9 s, then OK after ``forward()``.
``refuse()``
    Any RPC with ``retry=None``: ``ServiceUnavailable`` at once: "Stream removed (recvmsg:
    Connection reset by peer (104))" for a call in flight when it is switched on, "failed to
    connect to all addresses; ... getsockopt(SO_ERROR): Connection reset by peer" for later calls.
    ``create(..., timeout=5)`` with the default retry: retried with backoff for the Commit
    Retry's 60 s deadline, then ``RetryError`` ("Timeout of 60.0s exceeded, last exception: 503
    ..."; measured 57 s): note ``RetryError`` is a ``GoogleAPIError`` but NOT a
    ``GoogleAPICallError``, and not a ``ServiceUnavailable``. A get with the default retry keeps
    retrying (300 s deadline) and succeeds after ``forward()``, after gRPC's reconnect backoff
    (measured 4 s more).
``delay(seconds)`` with a call ``timeout`` below ``seconds``
    ``DeadlineExceeded`` at the call's timeout, like ``blackhole()``; whether the held request is
    still applied is a race (gRPC's RST_STREAM follows it closely): do not rely on either.
"""

from __future__ import annotations

import contextlib
import errno
import selectors
import socket
import struct
import threading
import time
from collections import deque
from typing import Any

FORWARD, DELAY, BLACKHOLE, REFUSE, CUT = "forward", "delay", "blackhole", "refuse", "cut_after_request"

CHUNK = 65536
BUFFER_LIMIT = 1 << 20  # bytes held per direction before the proxy stops reading that side
APPLY_TIMEOUT = 5.0  # seconds a mode method waits for the loop to apply it
_LINGER_RESET = struct.pack("ii", 1, 0)


def _parse_upstream(upstream: str) -> tuple[str, int]:
    host, sep, port = upstream.rpartition(":")
    if not sep or not port.isdigit():
        raise ValueError(f"upstream must be host:port, not {upstream!r}")
    return host.strip("[]") or "127.0.0.1", int(port)


def _abort(sock: socket.socket | None) -> None:
    """Close with a TCP reset (SO_LINGER 0), never raising."""
    if sock is None:
        return
    with contextlib.suppress(OSError):
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, _LINGER_RESET)
    with contextlib.suppress(OSError):
        sock.close()


class _Pipe:
    """One direction of a connection: chunks read from ``src`` waiting to be written to ``dst``."""

    def __init__(self, name: str) -> None:
        self.name = name  # "up" (client->server) or "down" (server->client)
        self.chunks: deque[tuple[float, bytes]] = deque()  # (release time, bytes)
        self.size = 0
        self.eof = False  # src sent its FIN
        self.shut = False  # FIN passed on to dst

    def push(self, release: float, data: bytes) -> None:
        self.chunks.append((release, data))
        self.size += len(data)

    def drop(self) -> int:
        dropped = self.size
        self.chunks.clear()
        self.size = 0
        return dropped


class _Conn:
    def __init__(self, number: int, client: socket.socket, upstream: socket.socket) -> None:
        self.number = number
        self.client = client
        self.upstream = upstream
        self.connecting = True
        self.up = _Pipe("up")
        self.down = _Pipe("down")
        self.closed = False


class FaultProxy:
    """A TCP proxy on 127.0.0.1 to ``upstream`` ("host:port") whose faults tests switch at will."""

    def __init__(self, upstream: str) -> None:
        self.upstream = upstream
        self._upstream_addr = socket.getaddrinfo(*_parse_upstream(upstream), type=socket.SOCK_STREAM)[0]
        self._lock = threading.Condition()
        self._mode = FORWARD
        self._delay = 0.0
        self._settle = 0.0
        self._generation = 0  # bumped by every mode method
        self._applied = 0  # the generation the loop has applied
        self._stopping = False
        self._counters = {"accepted": 0, "refused": 0, "upstream_failures": 0, "bytes_up": 0,
                          "bytes_down": 0, "bytes_swallowed": 0, "resets": 0, "closed": 0, "cuts": 0}
        self.events: list[tuple[float, str, str]] = []
        self.errors: list[BaseException] = []

        self._listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        try:
            self._listener.bind(("127.0.0.1", 0))
            self._listener.listen(128)
            self._listener.setblocking(False)
            self._wake_r, self._wake_w = socket.socketpair()
        except BaseException:
            self._listener.close()
            raise
        self._wake_r.setblocking(False)
        self._wake_w.setblocking(False)
        self.port: int = self._listener.getsockname()[1]
        self.host = f"127.0.0.1:{self.port}"

        self._selector = selectors.DefaultSelector()
        self._selector.register(self._listener, selectors.EVENT_READ, None)
        self._selector.register(self._wake_r, selectors.EVENT_READ, None)
        self._interest: dict[socket.socket, int] = {}
        self._conns: list[_Conn] = []
        self._number = 0
        self._cut_deadline: float | None = None
        self._closed = False
        self._wake_closed = False
        self._thread = threading.Thread(target=self._run, name=f"FaultProxy-{self.port}", daemon=True)
        self._thread.start()

    # ---- the API, for any thread -------------------------------------------------------------

    def __enter__(self) -> FaultProxy:
        return self

    def __exit__(self, *exc_info: Any) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"<FaultProxy {self.host} -> {self.upstream} {self.mode}>"

    @property
    def mode(self) -> str:
        with self._lock:
            return self._mode

    def forward(self) -> None:
        self._switch(FORWARD)

    def delay(self, seconds: float) -> None:
        if seconds < 0:
            raise ValueError("delay must be >= 0")
        self._switch(DELAY, delay=float(seconds))

    def blackhole(self) -> None:
        self._switch(BLACKHOLE)

    def refuse(self) -> None:
        self._switch(REFUSE)

    def cut_after_request(self, settle: float = 0.5) -> None:
        if settle < 0:
            raise ValueError("settle must be >= 0")
        self._switch(CUT, settle=float(settle))

    def wait_mode(self, mode: str, timeout: float = 10.0) -> bool:
        """Wait until the proxy is in ``mode`` (e.g. back to "forward" after a cut); False on timeout."""
        with self._lock:
            return self._lock.wait_for(lambda: self._mode == mode or self._closed, timeout) and \
                self._mode == mode

    def stats(self) -> dict[str, int]:
        """A copy of the counters, plus ``open``: connections open now."""
        with self._lock:
            counters = dict(self._counters)
            counters["open"] = len(self._conns)
            return counters

    def kinds(self, kind: str) -> list[tuple[float, str, str]]:
        with self._lock:
            return [event for event in self.events if event[1] == kind]

    def close(self) -> None:
        """Reset every connection, stop the loop and join its thread. Idempotent."""
        with self._lock:
            self._stopping = True
        self._wake()
        if self._thread is not threading.current_thread():
            self._thread.join(timeout=10)
        if self._thread.is_alive():
            raise RuntimeError(f"{self!r}: the proxy thread did not stop")
        with self._lock:  # closed here, not by the loop, so that no _wake() writes to a reused fd
            if not self._wake_closed:
                self._wake_closed = True
                self._wake_w.close()

    # ---- internals -------------------------------------------------------------------------

    def _switch(self, mode: str, *, delay: float = 0.0, settle: float = 0.0) -> None:
        with self._lock:
            if self._stopping or self._closed:
                raise RuntimeError(f"{self!r} is closed")
            self._mode, self._delay, self._settle = mode, delay, settle
            self._generation += 1
            generation = self._generation
        self._wake()
        with self._lock:
            if not self._lock.wait_for(lambda: self._applied >= generation or self._closed, APPLY_TIMEOUT):
                raise RuntimeError(f"{self!r}: the proxy loop did not apply {mode} in {APPLY_TIMEOUT}s")

    def _wake(self) -> None:
        with self._lock:
            if self._wake_closed:
                return
            with contextlib.suppress(OSError):  # full: a wake-up is pending anyway
                self._wake_w.send(b"\0")

    def _event(self, kind: str, detail: str = "") -> None:
        with self._lock:  # an RLock under the Condition: fine when the caller holds it already
            self.events.append((time.monotonic(), kind, detail))

    def _count(self, key: str, n: int = 1) -> None:
        with self._lock:
            self._counters[key] += n

    def _run(self) -> None:
        try:
            while True:
                with self._lock:
                    if self._stopping:
                        break
                    mode, delay = self._mode, self._delay
                    pending = self._generation if self._applied < self._generation else None
                    settle = self._settle
                now = time.monotonic()
                if pending is not None:
                    self._apply(mode, settle, now)
                    with self._lock:
                        self._applied = max(self._applied, pending)
                        self._lock.notify_all()
                if mode == CUT and self._cut_deadline is not None and now >= self._cut_deadline:
                    self._end_cut()
                    continue
                self._tick(mode, delay)
        except BaseException as error:  # never printed: kept for the tests to see
            with self._lock:
                self.errors.append(error)
                self._event("error", repr(error))
        finally:
            self._shutdown()

    def _apply(self, mode: str, settle: float, now: float) -> None:
        self._event("mode", mode)
        self._cut_deadline = None
        if mode == REFUSE:
            self._reset_all("refuse")
        elif mode == CUT:
            self._count("cuts")
            self._cut_deadline = now + settle
            for conn in self._conns:
                self._count("bytes_swallowed", conn.down.drop())

    def _end_cut(self) -> None:
        self._reset_all("cut")
        with self._lock:
            self._cut_deadline = None
            if self._mode == CUT and self._applied >= self._generation:
                self._mode = FORWARD
                self._event("mode", FORWARD + " (after cut)")
            self._lock.notify_all()

    def _reset_all(self, why: str) -> None:
        for conn in list(self._conns):
            self._close_conn(conn, reset=True, why=why)

    def _tick(self, mode: str, delay: float) -> None:
        now = time.monotonic()
        timeout = self._register_interest(mode, now)
        if self._cut_deadline is not None:
            remaining = max(0.0, self._cut_deadline - now)
            timeout = remaining if timeout is None else min(timeout, remaining)
        for key, events in self._selector.select(timeout):
            sock = key.fileobj
            if sock is self._wake_r:
                self._drain_wake()
            elif sock is self._listener:
                self._accept(mode)
            else:
                conn = key.data
                # epoll reports a hang-up as both readable and writable: keep to what was asked
                events &= self._interest.get(sock, 0)
                if conn.closed or not events:
                    continue
                try:
                    self._service(conn, sock, events, mode, delay)
                except OSError as error:
                    self._close_conn(conn, reset=True, why=f"{type(error).__name__}: {error}")
        # pass on writes whose delay just ran out, and FINs, without waiting for another event
        for conn in list(self._conns):
            if not conn.closed:
                try:
                    self._finish_halves(conn, mode)
                except OSError as error:
                    self._close_conn(conn, reset=True, why=f"{type(error).__name__}: {error}")

    def _register_interest(self, mode: str, now: float) -> float | None:
        """Set what each socket waits for; return how long until the next delayed chunk is due."""
        timeout: float | None = None
        for conn in self._conns:
            for pipe in (conn.up, conn.down):
                if mode != BLACKHOLE and pipe.chunks and not (pipe is conn.down and mode == CUT):
                    due = pipe.chunks[0][0] - now
                    if due > 0:
                        timeout = due if timeout is None else min(timeout, due)
            client = 0
            upstream = 0
            if mode != BLACKHOLE:
                if not conn.up.eof and conn.up.size < BUFFER_LIMIT:
                    client |= selectors.EVENT_READ
                if self._writable(conn.down, mode, now, down=True):
                    client |= selectors.EVENT_WRITE
                if conn.connecting:
                    upstream |= selectors.EVENT_WRITE
                else:
                    if not conn.down.eof and (conn.down.size < BUFFER_LIMIT or mode == CUT):
                        upstream |= selectors.EVENT_READ
                    if self._writable(conn.up, mode, now, down=False):
                        upstream |= selectors.EVENT_WRITE
            elif conn.connecting:
                upstream |= selectors.EVENT_WRITE  # a frozen server still completes handshakes
            self._set_interest(conn.client, client, conn)
            self._set_interest(conn.upstream, upstream, conn)
        return timeout

    @staticmethod
    def _writable(pipe: _Pipe, mode: str, now: float, *, down: bool) -> bool:
        if mode == BLACKHOLE or (down and mode == CUT):
            return False
        return bool(pipe.chunks) and pipe.chunks[0][0] <= now

    def _set_interest(self, sock: socket.socket, events: int, conn: _Conn) -> None:
        current = self._interest.get(sock, 0)
        if events == current:
            return
        if current == 0:
            self._selector.register(sock, events, conn)
        elif events == 0:
            self._selector.unregister(sock)
        else:
            self._selector.modify(sock, events, conn)
        self._interest[sock] = events

    def _drain_wake(self) -> None:
        try:
            while self._wake_r.recv(4096):
                pass
        except OSError:
            pass

    def _accept(self, mode: str) -> None:
        for _ in range(64):
            try:
                client, peer = self._listener.accept()
            except (BlockingIOError, InterruptedError):
                return
            except OSError as error:  # e.g. EMFILE: the backlog keeps the connection for later
                self._event("accept_error", str(error))
                return
            self._count("accepted")
            with self._lock:
                self._number += 1
                number = self._number
                self._event("accept", f"#{number} from {peer[0]}:{peer[1]}")
            if mode == REFUSE:
                _abort(client)
                self._count("refused")
                self._count("resets")
                self._event("reset", f"#{number} refused")
                continue
            client.setblocking(False)
            client.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            family, type_, proto, _, address = self._upstream_addr
            upstream = socket.socket(family, type_, proto)
            upstream.setblocking(False)
            upstream.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            result = upstream.connect_ex(address)
            if result not in (0, errno.EINPROGRESS, errno.EAGAIN, errno.EWOULDBLOCK):
                self._upstream_failed(client, upstream, number, errno.errorcode.get(result, str(result)))
                continue
            conn = _Conn(number, client, upstream)
            with self._lock:
                self._conns.append(conn)

    def _upstream_failed(self, client: socket.socket, upstream: socket.socket, number: int,
                         reason: str) -> None:
        _abort(client)
        _abort(upstream)
        self._count("upstream_failures")
        self._count("resets")
        self._event("upstream_failed", f"#{number} {reason}")

    def _service(self, conn: _Conn, sock: socket.socket, events: int, mode: str, delay: float) -> None:
        if sock is conn.upstream and conn.connecting:
            if events & selectors.EVENT_WRITE:
                error = conn.upstream.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
                if error:
                    self._close_conn(conn, reset=True, why=f"upstream: {errno.errorcode.get(error, error)}",
                                     counter="upstream_failures")
                else:
                    conn.connecting = False
                    self._event("connected", f"#{conn.number}")
            return
        incoming, outgoing = (conn.up, conn.down) if sock is conn.client else (conn.down, conn.up)
        now = time.monotonic()
        if events & selectors.EVENT_READ:
            data = sock.recv(CHUNK)
            if not data:
                incoming.eof = True
                self._event("eof", f"#{conn.number} {'client' if sock is conn.client else 'upstream'}")
            elif incoming is conn.down and mode == CUT:
                self._count("bytes_swallowed", len(data))
            else:
                incoming.push(now + (delay if mode == DELAY else 0.0), data)
        if events & selectors.EVENT_WRITE:
            self._send(conn, outgoing, sock, now)

    def _send(self, conn: _Conn, pipe: _Pipe, dst: socket.socket, now: float) -> None:
        while pipe.chunks and pipe.chunks[0][0] <= now:
            release, data = pipe.chunks[0]
            try:
                sent = dst.send(data)
            except (BlockingIOError, InterruptedError):
                return
            pipe.size -= sent
            self._count("bytes_up" if pipe is conn.up else "bytes_down", sent)
            if sent < len(data):
                pipe.chunks[0] = (release, data[sent:])
                return
            pipe.chunks.popleft()

    def _finish_halves(self, conn: _Conn, mode: str) -> None:
        now = time.monotonic()
        for pipe, dst in ((conn.up, conn.upstream), (conn.down, conn.client)):
            if conn.connecting and pipe is conn.up:
                continue
            if self._writable(pipe, mode, now, down=pipe is conn.down):
                self._send(conn, pipe, dst, now)
            if pipe.eof and not pipe.shut and not pipe.chunks and mode != BLACKHOLE and \
                    not (pipe is conn.down and mode == CUT):
                try:
                    dst.shutdown(socket.SHUT_WR)
                except OSError as error:
                    if error.errno != errno.ENOTCONN:
                        raise
                pipe.shut = True
        if conn.up.shut and conn.down.shut:
            self._close_conn(conn, reset=False, why="both halves closed")

    def _close_conn(self, conn: _Conn, *, reset: bool, why: str, counter: str | None = None) -> None:
        if conn.closed:
            return
        conn.closed = True
        for sock in (conn.client, conn.upstream):
            if self._interest.pop(sock, 0):
                with contextlib.suppress(KeyError, ValueError, OSError):
                    self._selector.unregister(sock)
            if reset:
                _abort(sock)
            else:
                with contextlib.suppress(OSError):
                    sock.close()
        with self._lock:
            if conn in self._conns:
                self._conns.remove(conn)
            self._counters["closed"] += 1
            if reset:
                self._counters["resets"] += 1
            if counter:
                self._counters[counter] += 1
            self._event("reset" if reset else "close", f"#{conn.number} {why}")

    def _shutdown(self) -> None:
        for conn in list(self._conns):
            try:
                self._close_conn(conn, reset=True, why="proxy closed")
            except Exception as error:  # pragma: no cover - keep going, remember it
                self.errors.append(error)
        for sock in (self._listener, self._wake_r):
            with contextlib.suppress(OSError):
                sock.close()
        with contextlib.suppress(OSError):
            self._selector.close()
        with self._lock:
            self._closed = True
            self._event("closed")
            self._lock.notify_all()
