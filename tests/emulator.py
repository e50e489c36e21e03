"""The real Firestore emulator for the test session: started once, in its own process group, and
cleared between tests with its REST reset endpoint."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
import urllib.request
from pathlib import Path

START_TIMEOUT = 120  # seconds; a cold JVM on a busy 2-core machine is slow


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class Emulator:
    def __init__(self) -> None:
        gcloud = shutil.which("gcloud")
        if gcloud is None:
            raise RuntimeError("gcloud is not on PATH: the live tests need `gcloud emulators firestore`")
        self.host = f"127.0.0.1:{free_port()}"
        self.log = Path(tempfile.mkdtemp(prefix="firestore-emulator-")) / "emulator.log"
        with open(self.log, "w") as log:
            # Its own session and process group: the Java child outlives gcloud otherwise.
            self.process = subprocess.Popen(
                [gcloud, "emulators", "firestore", "start", f"--host-port={self.host}", "--quiet"],
                stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=True)
        self._wait_ready()

    def _wait_ready(self) -> None:
        deadline = time.monotonic() + START_TIMEOUT
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"the Firestore emulator exited:\n{self.log.read_text()[-3000:]}")
            try:
                with urllib.request.urlopen(f"http://{self.host}/", timeout=2) as reply:
                    if reply.status == 200:
                        return
            except OSError:
                pass
            time.sleep(0.5)
        self.stop()
        raise RuntimeError(f"the Firestore emulator did not start in {START_TIMEOUT}s:\n"
                           f"{self.log.read_text()[-3000:]}")

    def reset(self, project: str) -> None:
        request = urllib.request.Request(
            f"http://{self.host}/emulator/v1/projects/{project}/databases/(default)/documents",
            method="DELETE")
        with urllib.request.urlopen(request, timeout=30):
            pass

    def stop(self) -> None:
        try:
            os.killpg(self.process.pid, signal.SIGTERM)
            self.process.wait(timeout=15)
        except ProcessLookupError:
            return
        except subprocess.TimeoutExpired:
            os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait(timeout=15)
