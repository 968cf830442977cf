"""A real OTLP collector stand-in for tests: the receiver (``otlp_receiver_main.py`` beside
this file) runs in its own process on loopback, listens for OTLP/gRPC and OTLP/HTTP, and
appends every span and metric data point it receives to a JSON-lines file. :class:`OtlpReceiver`
starts it, reads that file back, and can stop and restart it on the same ports to simulate a
collector outage.
"""

from __future__ import annotations

import json
import os
import selectors
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

__all__ = ["RECEIVER_SCRIPT", "OtlpReceiver", "Record"]

Record = dict[str, Any]

RECEIVER_SCRIPT = Path(__file__).with_name("otlp_receiver_main.py")

Record = dict[str, Any]


class OtlpReceiver:
    """Handle on one receiver process (and its successors after ``stop()``/``start()``).

    The output file is kept across restarts, so ``spans()`` and ``metrics()`` return
    everything received since the fixture was created, in arrival order.
    """

    def __init__(
        self, out_path: Path, log_path: Path, *, ready_timeout_s: float = 20.0, refuse_metrics: bool = False
    ) -> None:
        self.out_path = out_path
        self.log_path = log_path
        self.ready_timeout_s = ready_timeout_s
        self.refuse_metrics = refuse_metrics
        self.grpc_port = 0
        self.http_port = 0
        self._process: subprocess.Popen[bytes] | None = None
        self._offset = 0
        self._spans: list[Record] = []
        self._metrics: list[Record] = []
        self._refused: list[Record] = []

    # -- process control -------------------------------------------------------

    @property
    def pid(self) -> int | None:
        """Pid of the running receiver, None while stopped."""
        return self._process.pid if self._process is not None else None

    @property
    def grpc_endpoint(self) -> str:
        """``http://127.0.0.1:N`` for the gRPC exporters (pass ``insecure=True``)."""
        return f"http://127.0.0.1:{self.grpc_port}"

    @property
    def http_endpoint(self) -> str:
        """``http://127.0.0.1:M``; the HTTP exporters want ``+ "/v1/traces"`` or ``"/v1/metrics"``."""
        return f"http://127.0.0.1:{self.http_port}"

    @property
    def running(self) -> bool:
        return self._process is not None and self._process.poll() is None

    def start(self) -> None:
        """Start the receiver; after a ``stop()`` it binds the same ports again."""
        if self._process is not None:
            raise RuntimeError("the OTLP receiver is already running")
        with open(self.log_path, "ab") as log:
            process = subprocess.Popen(
                [
                    sys.executable,
                    str(RECEIVER_SCRIPT),
                    "--out",
                    str(self.out_path),
                    "--grpc-port",
                    str(self.grpc_port),
                    "--http-port",
                    str(self.http_port),
                    *(["--refuse-metrics"] if self.refuse_metrics else []),
                ],
                stdin=subprocess.DEVNULL,
                stdout=subprocess.PIPE,
                stderr=log,
            )
        try:
            ready = self._read_ready_line(process)
        except BaseException:
            process.kill()
            process.wait()
            raise
        self._process = process
        self.grpc_port = ready["grpc_port"]
        self.http_port = ready["http_port"]

    def _read_ready_line(self, process: subprocess.Popen[bytes]) -> Record:
        assert process.stdout is not None
        deadline = time.monotonic() + self.ready_timeout_s
        buffer = b""
        with selectors.DefaultSelector() as selector:
            selector.register(process.stdout, selectors.EVENT_READ)
            while b"\n" not in buffer:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise TimeoutError(
                        f"OTLP receiver not ready after {self.ready_timeout_s}s; log:\n{self._log_tail()}"
                    )
                if selector.select(remaining):
                    chunk = os.read(process.stdout.fileno(), 4096)
                    if not chunk:
                        process.wait()
                        raise RuntimeError(
                            f"OTLP receiver exited with status {process.returncode} before it was ready; "
                            f"log:\n{self._log_tail()}"
                        )
                    buffer += chunk
        # The receiver writes nothing else to stdout.
        process.stdout.close()
        ready: Record = json.loads(buffer.split(b"\n", 1)[0])
        if not ready.get("ready"):
            raise RuntimeError(f"unexpected first line from the OTLP receiver: {ready!r}")
        return ready

    def stop(self, timeout_s: float = 10.0) -> int:
        """SIGTERM the receiver and wait for it; returns its exit status (0 = clean)."""
        process = self._process
        if process is None:
            raise RuntimeError("the OTLP receiver is not running")
        self._process = None
        process.send_signal(signal.SIGTERM)
        process.send_signal(signal.SIGCONT)  # in case it is paused
        try:
            return process.wait(timeout_s)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
            raise RuntimeError(f"OTLP receiver ignored SIGTERM for {timeout_s}s; log:\n{self._log_tail()}") from None

    def pause(self) -> None:
        """SIGSTOP the receiver: a hung collector. The kernel still accepts connections."""
        self._signal(signal.SIGSTOP)

    def resume(self) -> None:
        """SIGCONT a paused receiver; requests sent meanwhile are then served."""
        self._signal(signal.SIGCONT)

    def _signal(self, signum: int) -> None:
        if self._process is None:
            raise RuntimeError("the OTLP receiver is not running")
        self._process.send_signal(signum)

    def kill(self) -> None:
        """SIGKILL the receiver if it runs (teardown)."""
        process, self._process = self._process, None
        if process is not None and process.poll() is None:
            process.kill()
        if process is not None:
            process.wait()

    def _log_tail(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")[-4000:]
        except OSError:
            return "<no log>"

    # -- received data ---------------------------------------------------------

    def _read_new(self) -> None:
        try:
            with open(self.out_path, "rb") as f:
                f.seek(self._offset)
                data = f.read()
        except FileNotFoundError:
            return
        # Only whole lines: a request being written may be visible in part.
        end = data.rfind(b"\n") + 1
        if end == 0:
            return
        self._offset += end
        for line in data[:end].splitlines():
            record = json.loads(line)
            kind = record.get("type")
            (self._metrics if kind == "metric" else self._refused if kind == "refused" else self._spans).append(record)

    def _poll(
        self,
        records: list[Record],
        min_count: int,
        timeout_s: float,
        predicate: Callable[[Record], bool] | None,
    ) -> list[Record]:
        deadline = time.monotonic() + timeout_s
        while True:
            self._read_new()
            found = [r for r in records if predicate is None or predicate(r)]
            if len(found) >= min_count or time.monotonic() >= deadline:
                return found
            time.sleep(0.02)

    def spans(
        self,
        min_count: int = 0,
        timeout_s: float = 10.0,
        predicate: Callable[[Record], bool] | None = None,
    ) -> list[Record]:
        """Received spans (matching ``predicate``), waiting until there are ``min_count``.

        Returns what is there when ``timeout_s`` runs out, so the caller's assertion
        shows how many arrived. With ``min_count=0`` it returns at once.
        """
        return self._poll(self._spans, min_count, timeout_s, predicate)

    def metrics(
        self,
        min_count: int = 0,
        timeout_s: float = 10.0,
        predicate: Callable[[Record], bool] | None = None,
    ) -> list[Record]:
        """Received metric data points; same polling contract as ``spans()``."""
        return self._poll(self._metrics, min_count, timeout_s, predicate)

    def refused(self, min_count: int = 0, timeout_s: float = 10.0) -> list[Record]:
        """Requests refused (with ``refuse_metrics=True``); same polling contract as ``spans()``."""
        return self._poll(self._refused, min_count, timeout_s, None)
