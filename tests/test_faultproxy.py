"""The fault-injection proxy itself: each mode against a small echo server, then once against the real
Firestore emulator to pin down which google.api_core exception each fault gives the client."""

from __future__ import annotations

import contextlib
import socket
import threading
import time

import pytest
from faultproxy import FaultProxy


class EchoServer:
    """A TCP echo server on 127.0.0.1 that records every byte it receives."""

    def __init__(self) -> None:
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.host = f"127.0.0.1:{self._listener.getsockname()[1]}"
        self._lock = threading.Lock()
        self._received = bytearray()
        self._conns: list[socket.socket] = []
        self._threads: list[threading.Thread] = []
        self._thread = threading.Thread(target=self._accept, name="echo-accept", daemon=True)
        self._thread.start()

    @property
    def received(self) -> bytes:
        with self._lock:
            return bytes(self._received)

    def wait_received(self, data: bytes, timeout: float = 5.0) -> bool:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if data in self.received:
                return True
            time.sleep(0.01)
        return False

    def _accept(self) -> None:
        while True:
            try:
                conn, _ = self._listener.accept()
            except OSError:
                return
            thread = threading.Thread(target=self._echo, args=(conn,), name="echo", daemon=True)
            with self._lock:
                self._conns.append(conn)
                self._threads.append(thread)
            thread.start()

    def _echo(self, conn: socket.socket) -> None:
        with conn:
            try:
                while data := conn.recv(65536):
                    with self._lock:
                        self._received += data
                    conn.sendall(data)
                conn.shutdown(socket.SHUT_WR)  # a half-close is answered after the echo
            except OSError:
                return

    def close(self) -> None:
        with contextlib.suppress(OSError):  # wakes the accept(), which close() alone does not
            self._listener.shutdown(socket.SHUT_RDWR)
        self._listener.close()
        with self._lock:
            for conn in self._conns:
                with contextlib.suppress(OSError):
                    conn.shutdown(socket.SHUT_RDWR)
        self._thread.join(5)
        for thread in self._threads:
            thread.join(5)


@pytest.fixture
def echo():
    server = EchoServer()
    yield server
    server.close()


@pytest.fixture
def proxy(echo):
    with FaultProxy(echo.host) as running:
        yield running
    assert running.errors == []
    assert not any(t.name == f"FaultProxy-{running.port}" for t in threading.enumerate())


def connect(proxy: FaultProxy, timeout: float = 2.0) -> socket.socket:
    host, port = proxy.host.rsplit(":", 1)
    return socket.create_connection((host, int(port)), timeout=timeout)


def recv_exactly(sock: socket.socket, n: int) -> bytes:
    data = b""
    while len(data) < n:
        chunk = sock.recv(n - len(data))
        if not chunk:
            break
        data += chunk
    return data


def eventually(condition, timeout: float = 2.0) -> bool:
    """The proxy counts a chunk just after sending it: the client may have it a moment before."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.01)
    return True


def expect_reset_or_eof(sock: socket.socket, within: float = 1.0) -> None:
    """The peer is gone: recv raises a reset or returns EOF, and does so in time (no data first)."""
    sock.settimeout(within)
    start = time.monotonic()
    try:
        data = sock.recv(1024)
    except (ConnectionResetError, ConnectionAbortedError, BrokenPipeError):
        data = b""
    except TimeoutError:
        pytest.fail(f"no reset or EOF within {within}s")
    assert data == b""
    assert time.monotonic() - start < within


def test_forward_echoes(proxy, echo):
    with connect(proxy) as sock:
        sock.sendall(b"hello")
        assert recv_exactly(sock, 5) == b"hello"
    assert proxy.mode == "forward"
    assert eventually(lambda: proxy.stats()["open"] == 0)
    stats = proxy.stats()
    assert stats["accepted"] == 1 and stats["bytes_up"] == 5 and stats["bytes_down"] == 5


def test_forward_passes_half_closes(proxy, echo):
    with connect(proxy) as sock:
        sock.sendall(b"last words")
        sock.shutdown(socket.SHUT_WR)
        assert recv_exactly(sock, 10) == b"last words"
        assert sock.recv(10) == b""  # the server's FIN, after its echo
    assert eventually(lambda: proxy.stats()["open"] == 0)
    assert proxy.stats()["resets"] == 0


def test_forward_many_connections_and_a_large_transfer(proxy, echo):
    socks = [connect(proxy) for _ in range(40)]
    try:
        for i, sock in enumerate(socks):
            sock.sendall(b"conn %03d" % i)
        for i, sock in enumerate(socks):
            assert recv_exactly(sock, 8) == b"conn %03d" % i
    finally:
        for sock in socks:
            sock.close()

    payload = bytes(range(256)) * 16384  # 4 MiB: more than the kernel and proxy buffers hold
    with connect(proxy, timeout=10) as sock:
        sender = threading.Thread(target=sock.sendall, args=(payload,))
        sender.start()
        assert recv_exactly(sock, len(payload)) == payload
        sender.join(5)
    assert proxy.stats()["accepted"] == 41


def test_delay_holds_each_chunk(proxy, echo):
    with connect(proxy) as sock:
        sock.sendall(b"warm")
        assert recv_exactly(sock, 4) == b"warm"
        proxy.delay(0.3)
        start = time.monotonic()
        sock.sendall(b"slow")
        assert recv_exactly(sock, 4) == b"slow"
        assert time.monotonic() - start >= 0.6  # held 0.3 s on the way there and again back
        proxy.forward()
        start = time.monotonic()
        sock.sendall(b"fast")
        assert recv_exactly(sock, 4) == b"fast"
        assert time.monotonic() - start < 0.2


def test_blackhole_freezes_then_forward_resumes_intact(proxy, echo):
    with connect(proxy) as old:
        old.sendall(b"a")
        assert recv_exactly(old, 1) == b"a"
        proxy.blackhole()
        old.settimeout(0.5)
        old.sendall(b"frozen")
        with pytest.raises(TimeoutError):
            old.recv(10)
        with connect(proxy) as new:  # accepted, but gets nothing either
            new.settimeout(0.5)
            new.sendall(b"new")
            with pytest.raises(TimeoutError):
                new.recv(10)
            assert b"frozen" not in echo.received and b"new" not in echo.received
            proxy.forward()  # nothing was lost: the bytes were only held
            new.settimeout(2)
            assert recv_exactly(new, 3) == b"new"
        old.settimeout(2)
        assert recv_exactly(old, 6) == b"frozen"
    assert proxy.stats()["resets"] == 0


def test_refuse_resets_open_and_new_connections(proxy, echo):
    with connect(proxy) as sock:
        sock.sendall(b"x")
        assert recv_exactly(sock, 1) == b"x"
        proxy.refuse()
        expect_reset_or_eof(sock, within=0.5)
    try:
        sock = connect(proxy)
    except ConnectionResetError:
        pass  # the reset can come before connect() has looked at the socket's state
    else:
        with sock:
            expect_reset_or_eof(sock, within=0.5)
    assert eventually(lambda: proxy.stats()["refused"] == 1)
    stats = proxy.stats()
    assert stats["refused"] == 1 and stats["resets"] == 2
    proxy.forward()
    with connect(proxy) as sock:
        sock.sendall(b"back")
        assert recv_exactly(sock, 4) == b"back"


def test_cut_after_request_delivers_the_request_loses_the_reply_and_resets(proxy, echo):
    with connect(proxy) as sock:
        sock.sendall(b"hi")
        assert recv_exactly(sock, 2) == b"hi"
        proxy.cut_after_request(settle=0.4)
        start = time.monotonic()
        sock.sendall(b"COMMIT")
        assert echo.wait_received(b"COMMIT", timeout=0.4)  # the server got (and answered) it
        sock.settimeout(2)
        with pytest.raises((ConnectionResetError, ConnectionAbortedError)):
            sock.recv(100)  # nothing arrives first: the first thing the client sees is the reset
        assert 0.3 <= time.monotonic() - start < 1.5
    assert proxy.wait_mode("forward", timeout=1)
    stats = proxy.stats()
    assert stats["cuts"] == 1 and stats["resets"] == 1 and stats["bytes_swallowed"] == 6
    with connect(proxy) as sock:  # forwarding again, by itself
        sock.sendall(b"again")
        assert recv_exactly(sock, 5) == b"again"


def test_mode_switches_from_another_thread_during_traffic(proxy, echo):
    stop = threading.Event()

    def flip() -> None:
        modes = [lambda: proxy.delay(0.01), proxy.blackhole, proxy.forward]
        i = 0
        while not stop.is_set():
            modes[i % 3]()
            i += 1
            time.sleep(0.005)
        proxy.forward()

    flipper = threading.Thread(target=flip)
    flipper.start()
    try:
        with connect(proxy, timeout=5) as sock:
            for i in range(50):
                sock.sendall(b"%04d" % i)
                assert recv_exactly(sock, 4) == b"%04d" % i
    finally:
        stop.set()
        flipper.join(5)


def test_a_closed_upstream_resets_the_client(echo):
    port_nobody_listens = socket.create_server(("127.0.0.1", 0))
    address = f"127.0.0.1:{port_nobody_listens.getsockname()[1]}"
    port_nobody_listens.close()
    with FaultProxy(address) as proxy:
        try:
            sock = connect(proxy)
        except ConnectionResetError:
            pass
        else:
            with sock:
                expect_reset_or_eof(sock, within=1)
        assert eventually(lambda: proxy.stats()["upstream_failures"] == 1)
    assert proxy.errors == []


def test_close_resets_connections_and_joins(echo):
    proxy = FaultProxy(echo.host)
    sock = connect(proxy)
    sock.sendall(b"x")
    assert recv_exactly(sock, 1) == b"x"
    proxy.close()
    proxy.close()  # idempotent
    expect_reset_or_eof(sock, within=0.5)
    sock.close()
    assert not any(t.name.startswith(f"FaultProxy-{proxy.port}") for t in threading.enumerate())
    with pytest.raises(RuntimeError):
        proxy.forward()
    assert proxy.errors == []


def test_faults_on_the_real_emulator(emulator, monkeypatch):
    """What the Firestore client raises under each fault (the module docstring of faultproxy lists
    them): a lost reply is UNAVAILABLE although the write was applied; a frozen server is
    DEADLINE_EXCEEDED at the caller's deadline."""
    from google.api_core import exceptions as gexc
    from google.cloud import firestore

    project = "proxy-test"
    emulator.reset(project)
    monkeypatch.setenv("FIRESTORE_EMULATOR_HOST", emulator.host)
    direct = firestore.Client(project=project)  # reads the env var now: straight to the emulator
    try:
        with FaultProxy(emulator.host) as proxy:
            monkeypatch.setenv("FIRESTORE_EMULATOR_HOST", proxy.host)
            client = firestore.Client(project=project)
            checkins = client.collection("checkins")
            # forward; this also opens the HTTP/2 connection, which a cut needs to hit a request
            # (gRPC sends nothing on a new connection before the server's SETTINGS have arrived)
            checkins.document("first").create({"n": 1}, timeout=30)
            assert direct.collection("checkins").document("first").get().to_dict() == {"n": 1}

            proxy.cut_after_request(settle=0.5)
            start = time.monotonic()
            with pytest.raises(gexc.ServiceUnavailable):
                checkins.document("lost-reply").create({"n": 2}, retry=None, timeout=10)
            assert time.monotonic() - start < 5
            assert direct.collection("checkins").document("lost-reply").get().to_dict() == {"n": 2}
            assert proxy.wait_mode("forward", timeout=2)
            assert proxy.stats()["cuts"] == 1 and proxy.stats()["resets"] >= 1

            # with the client's default retry the create is sent again, and meets its own write
            checkins.document("first").get(timeout=30)  # reconnect first, as above
            proxy.cut_after_request(settle=0.5)
            with pytest.raises(gexc.AlreadyExists):
                checkins.document("retried").create({"n": 3}, timeout=10)
            assert direct.collection("checkins").document("retried").get().to_dict() == {"n": 3}
            assert proxy.wait_mode("forward", timeout=2)

            proxy.blackhole()
            start = time.monotonic()
            with pytest.raises(gexc.DeadlineExceeded):
                checkins.document("first").get(timeout=2, retry=None)
            assert 1.9 <= time.monotonic() - start < 4
            assert proxy.errors == []
            client.close()
    finally:
        direct.close()
        emulator.reset(project)
