"""JSON-lines request/reply between the benchmark driver and its workers.

Standard library only: both the driver (posepipe's Python) and the PaddleX
worker (PaddleX's own venv) import it.

A worker reads one JSON object per line on stdin, {"cmd": NAME, ...arguments},
and answers one line on its original stdout: {"ok": true, "result": ...} or
{"ok": false, "error": TRACEBACK}. Everything the libraries print goes to
stderr, so it can never corrupt the replies."""
from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time
import traceback
from typing import Any, Callable, Dict, List, Optional


class WorkerError(RuntimeError):
    pass


def serve(handlers: Dict[str, Callable[..., Any]]) -> None:
    """The worker's main loop: dispatch each request line to handlers[cmd]."""
    replies = os.fdopen(os.dup(1), "w", buffering=1)
    os.dup2(2, 1)  # C++ libraries writing to fd 1 now land in stderr
    sys.stdout = sys.stderr
    for line in sys.stdin:
        if not line.strip():
            continue
        request = json.loads(line)
        cmd = request.pop("cmd")
        if cmd == "quit":
            break
        try:
            reply = {"ok": True, "result": handlers[cmd](**request)}
        except Exception:  # noqa: BLE001 - every failure goes back to the driver
            reply = {"ok": False, "error": traceback.format_exc()}
        replies.write(json.dumps(reply) + "\n")


class Worker:
    """The driver's handle on one worker process."""

    def __init__(self, name: str, argv: List[str], env: Optional[Dict[str, str]] = None):
        self.name = name
        self.log = tempfile.NamedTemporaryFile(prefix=f"bench-{name}-", suffix=".log", delete=False)
        self.proc = subprocess.Popen(
            argv,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=self.log,
            env={**os.environ, **(env or {})},
            text=True,
            bufsize=1,
        )

    def request(self, cmd: str, **args: Any) -> Any:
        try:
            self.proc.stdin.write(json.dumps({"cmd": cmd, **args}) + "\n")
            self.proc.stdin.flush()
        except BrokenPipeError:
            raise WorkerError(f"{self.name} worker exited early:\n{self.log_tail()}") from None
        line = self.proc.stdout.readline()
        if not line:
            self.proc.wait(timeout=10)
            raise WorkerError(
                f"{self.name} worker exited (code {self.proc.returncode}) during {cmd!r}:\n{self.log_tail()}"
            )
        reply = json.loads(line)
        if not reply["ok"]:
            raise WorkerError(f"{self.name} worker failed on {cmd!r}:\n{reply['error']}")
        return reply["result"]

    def log_tail(self, chars: int = 3000) -> str:
        with open(self.log.name, "r", errors="replace") as f:
            return f.read()[-chars:]

    def close(self) -> None:
        if self.proc.poll() is None:
            try:
                self.proc.stdin.write('{"cmd": "quit"}\n')
                self.proc.stdin.flush()
                self.proc.wait(timeout=30)
            except (BrokenPipeError, subprocess.TimeoutExpired):
                self.proc.kill()
                self.proc.wait()
        self.log.close()
        os.unlink(self.log.name)


def timed_calls(fn: Callable[[], Any], repeat: int) -> List[float]:
    """Seconds of `repeat` calls of fn, one per call."""
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return times
