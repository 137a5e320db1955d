"""Two pure-ASGI middlewares (no per-request task or body copy):

RequestContext (outermost): gives each request its logId (in
`scope["state"]["log_id"]`, which handlers may replace with the client's own),
counts it in the metrics, writes the access log line, and turns an exception
that escaped everything else into the 500 envelope, logged once with the logId.

BodyLimit: 413 for a body over the limit, decided from Content-Length before a
byte of the body is read; a chunked body (no Content-Length) is read only up to
the limit. The 413 closes the connection (the rest of the body is never read)."""
from __future__ import annotations

import logging
import time
from typing import Any, Callable, Dict, List, Optional

from .errors import dumps, envelope, new_log_id
from .metrics import Metrics

access_log = logging.getLogger("posepipe.access")
log = logging.getLogger("posepipe.serving")

Scope = Dict[str, Any]


def request_state(scope: Scope) -> Dict[str, Any]:
    state = scope.get("state")
    if state is None:
        state = scope["state"] = {}
    return state


async def send_envelope(send: Callable, log_id: str, status: int, message: str, extra_headers: List = ()) -> None:
    body = dumps(envelope(log_id, status, message))
    headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
    headers.extend(extra_headers)
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body, "more_body": False})


class RequestContext:
    def __init__(self, app, metrics: Metrics, access_log_enabled: bool = True):
        self.app = app
        self.metrics = metrics
        self.access_log_enabled = access_log_enabled

    async def __call__(self, scope: Scope, receive: Callable, send: Callable) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        state = request_state(scope)
        state["log_id"] = new_log_id()
        started = time.perf_counter()
        status: List[Optional[int]] = [None]

        async def send_wrapper(message: Dict[str, Any]) -> None:
            if message["type"] == "http.response.start":
                status[0] = message["status"]
            await send(message)

        self.metrics.in_flight.inc()
        try:
            await self.app(scope, receive, send_wrapper)
        except Exception:  # noqa: BLE001 - the last line of defence
            log.exception("unhandled error", extra={"logId": state["log_id"], "path": scope.get("path")})
            if status[0] is None:
                state.setdefault("error", "Internal server error")
                try:
                    await send_wrapper_500(send_wrapper, state["log_id"])
                except Exception:  # noqa: BLE001 - client gone
                    pass
            status[0] = status[0] or 500
        finally:
            self.metrics.in_flight.dec()
            seconds = time.perf_counter() - started
            code = status[0] or 499  # no response: the client went away first
            method = scope.get("method", "")
            path = scope.get("path", "")
            self.metrics.observe_request(method, path, code, seconds)
            if self.access_log_enabled and path != "/health":
                fields = {
                    "logId": state.get("log_id"),
                    "method": method,
                    "path": path,
                    "status": code,
                    "duration_ms": round(seconds * 1000, 2),
                }
                client = scope.get("client")
                if client:
                    fields["client"] = f"{client[0]}:{client[1]}"
                if "error" in state:
                    fields["error"] = state["error"]
                access_log.info("%s %s %d", method, path, code, extra=fields)


async def send_wrapper_500(send: Callable, log_id: str) -> None:
    await send_envelope(send, log_id, 500, "Internal server error")


class BodyLimit:
    def __init__(self, app, max_bytes: int):
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope: Scope, receive: Callable, send: Callable) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        length: Optional[bytes] = None
        chunked = False
        for name, value in scope.get("headers", ()):
            if name == b"content-length":
                length = value
            elif name == b"transfer-encoding":
                chunked = True
        if length is not None:
            try:
                declared = int(length)
            except ValueError:
                declared = -1  # the HTTP parser has refused such requests already
            if declared > self.max_bytes:
                await self._reject(scope, send, f"{declared} bytes")
                return
            await self.app(scope, receive, send)
            return
        if not chunked:
            await self.app(scope, receive, send)
            return
        # Chunked: read up to the limit, then hand the body on in one piece.
        chunks: List[bytes] = []
        total = 0
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                return
            body = message.get("body", b"")
            total += len(body)
            if total > self.max_bytes:
                await self._reject(scope, send, f"over {self.max_bytes} bytes")
                return
            chunks.append(body)
            if not message.get("more_body", False):
                break
        replay = [{"type": "http.request", "body": b"".join(chunks), "more_body": False}]

        async def replay_receive() -> Dict[str, Any]:
            if replay:
                return replay.pop()
            return await receive()

        await self.app(scope, replay_receive, send)

    async def _reject(self, scope: Scope, send: Callable, size: str) -> None:
        state = request_state(scope)
        message = f"request body is too large ({size}); the limit is {self.max_bytes} bytes"
        state["error"] = message
        await send_envelope(send, state.get("log_id") or new_log_id(), 413, message, [(b"connection", b"close")])
