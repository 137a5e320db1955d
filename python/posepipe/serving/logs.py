"""Structured logs: one JSON object per line (or readable text), with the
fields a request's lines carry (`logId`, `method`, `path`, `status`,
`duration_ms`, `error`) as top-level keys, so a log search for a logId from a
response finds the request.

Our own loggers are `posepipe.serving` (events) and `posepipe.access` (one
line per request); uvicorn's, Python's warnings (`py.warnings`) and any other
library's records go through the same handler, so every line is one record in
the chosen format. In text format, control characters inside a record (a
`%0a` in a path, a newline in a client's logId) are escaped and traceback
lines indented, so no input can start a line that looks like a record.

When the app runs under another server (`create_app`), logging is that
program's to configure; `JsonFormatter` is here to use."""
from __future__ import annotations

import datetime
import json
import logging
import logging.config
import re
import sys
from typing import Any, Dict

_STANDARD = set(vars(logging.LogRecord("x", logging.INFO, "x", 0, "x", None, None))) | {
    "message",
    "asctime",
    "taskName",
    "color_message",  # uvicorn's coloured duplicate of the message
}


def _extras(record: logging.LogRecord) -> Dict[str, Any]:
    return {k: v for k, v in record.__dict__.items() if k not in _STANDARD and not k.startswith("_")}


def _timestamp(record: logging.LogRecord) -> str:
    moment = datetime.datetime.fromtimestamp(record.created, tz=datetime.timezone.utc)
    return moment.isoformat(timespec="milliseconds").replace("+00:00", "Z")


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        out: Dict[str, Any] = {
            "ts": _timestamp(record),
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": record.getMessage(),
        }
        out.update(_extras(record))
        if record.exc_info:
            out["exc"] = self.formatException(record.exc_info)
        # Characters json leaves raw that some readers (Python's splitlines among them) take for line breaks.
        return json.dumps(out, default=str, ensure_ascii=False).translate(_JSON_LINE_BREAKS)


_JSON_LINE_BREAKS = {c: f"\\u{c:04x}" for c in (0x85, 0x2028, 0x2029)}
_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f\u2028\u2029]")
_ESCAPES = {"\n": "\\n", "\r": "\\r", "\t": "\\t"}


def escape_controls(text: str) -> str:
    """`text` on one line: CR, LF, tab and other control characters written as escapes."""
    return _CONTROL.sub(lambda m: _ESCAPES.get(m.group(), f"\\u{ord(m.group()):04x}"), text)


class TextFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        line = f"{_timestamp(record)} {record.levelname:<7} {record.name}: {escape_controls(record.getMessage())}"
        extras = _extras(record)
        if extras:
            line += " " + " ".join(f"{k}={escape_controls(str(v))}" for k, v in extras.items())
        if record.exc_info:
            # Indented: a traceback line cannot pass for a record of its own.
            trace = self.formatException(record.exc_info)
            line += "\n" + "\n".join("    " + escape_controls(t) for t in trace.splitlines())
        return line


def configure(level: str = "info", fmt: str = "json") -> Dict[str, Any]:
    """Route posepipe's, uvicorn's, Python warnings' and every other logger to
    stderr in `fmt`; returns the dictConfig (also usable as uvicorn's log_config)."""
    formatter = JsonFormatter if fmt == "json" else TextFormatter
    config: Dict[str, Any] = {
        "version": 1,
        "disable_existing_loggers": False,
        "formatters": {"posepipe": {"()": f"{__name__}.{formatter.__name__}"}},
        "handlers": {"stderr": {"class": "logging.StreamHandler", "formatter": "posepipe", "stream": sys.stderr}},
        "loggers": {
            name: {"handlers": ["stderr"], "level": level.upper(), "propagate": False}
            for name in ("posepipe", "uvicorn", "uvicorn.error")
        },
        # Other libraries' records (and warnings.warn, below) in the same format, not Python's bare lastResort lines.
        "root": {"handlers": ["stderr"], "level": "WARNING"},
    }
    # uvicorn's access log is replaced by posepipe.access (which has the logId).
    config["loggers"]["uvicorn.access"] = {"handlers": [], "level": "CRITICAL", "propagate": False}
    logging.config.dictConfig(config)
    logging.captureWarnings(True)
    return config
