"""Two pure-ASGI middlewares (no per-request task or body copy):

RequestContext (outermost): gives each request its logId (in
`scope["state"]["log_id"]`, which handlers may replace with the client's own),
counts it in the metrics, writes the access log line, and turns an exception
that escaped everything else into the 500 envelope, logged once with the logId.
A request whose client left before its reply is logged and counted as 499.

BodyPolicy: refuses, before a byte of the body is read, a compressed body (415
naming its Content-Encoding; a gzip bomb would otherwise unpack past every
limit) and a declared Content-Length over the limit (413). A chunked body (no
Content-Length) is counted as the app reads it, which stops at the limit with
BodyTooLarge. Either refusal closes the connection (the rest of the body is
never read)."""
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
            # 499: the client went away before its reply (nginx's code for it).
            code = 499 if state.get("client_gone") or status[0] is None else status[0]
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
                if "detail" in state:  # what the operator may see and the client may not
                    fields["detail"] = state["detail"]
                access_log.info("%s %s %d", method, path, code, extra=fields)


async def send_wrapper_500(send: Callable, log_id: str) -> None:
    await send_envelope(send, log_id, 500, "Internal server error")


class BodyTooLarge(Exception):
    """A chunked request body went over the limit while being read."""


class BodyPolicy:
    def __init__(self, app, max_bytes: int):
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope: Scope, receive: Callable, send: Callable) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        length: Optional[bytes] = None
        chunked = False
        encoding: Optional[bytes] = None
        for name, value in scope.get("headers", ()):
            if name == b"content-length":
                length = value
            elif name == b"transfer-encoding":
                chunked = True
            elif name == b"content-encoding":
                encoding = value.strip().lower()
        declared = -1
        if length is not None:
            try:
                declared = int(length)
            except ValueError:
                declared = -1  # the HTTP parser has refused such requests already
        has_body = chunked or declared > 0
        if has_body and encoding not in (None, b"", b"identity"):
            name = encoding.decode("latin-1") if encoding else ""
            await self._reject(
                scope, send, 415, f"request bodies with Content-Encoding: {name} are not accepted; send the JSON uncompressed"
            )
            return
        if declared > self.max_bytes:
            await self._reject(
                scope, send, 413, f"request body is too large ({declared} bytes); the limit is {self.max_bytes} bytes"
            )
            return
        if length is not None or not chunked:
            await self.app(scope, receive, send)
            return
        total = 0

        async def counting_receive() -> Dict[str, Any]:
            nonlocal total
            message = await receive()
            if message["type"] == "http.request":
                total += len(message.get("body", b""))
                if total > self.max_bytes:
                    raise BodyTooLarge(f"request body is too large (over {self.max_bytes} bytes); the limit is {self.max_bytes} bytes")
            return message

        await self.app(scope, counting_receive, send)

    async def _reject(self, scope: Scope, send: Callable, status: int, message: str) -> None:
        state = request_state(scope)
        state["error"] = message
        await send_envelope(send, state.get("log_id") or new_log_id(), status, message, [(b"connection", b"close")])
