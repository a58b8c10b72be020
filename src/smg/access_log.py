"""The record of a request, and structured access logs (``access_log`` in the config; ``smg serve
--access-log``): one JSON line per
request on the ``smg.access`` logger, when its answer ends (a stream: its last event, or its client
going away), with the request's id, method, path, status, API key name, model, prompt and
completion tokens, time to first token and duration. Never the key, never the content.

The server opens a record for each request (:func:`open_record`); the stages that learn something
add it to the record of the request they run for, found through a context variable (the stream
of a request runs in its server task's context), so no stage takes a logging argument. A key's
token rate limit is charged through the same record.
"""
from __future__ import annotations

import contextvars
import json
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

log = logging.getLogger("smg.access")


@dataclass
class AccessRecord:
    request_id: str
    method: str
    path: str
    started: float = field(default_factory=time.monotonic)
    status: int = 0
    key: str | None = None  # the API key's (or token's) name
    model: str | None = None
    prompt_tokens: int = 0
    completion_tokens: int = 0
    ttft_ms: float | None = None
    outcome: str = "ok"  # "ok", "error" (a stream that ended with an error event), "client_gone"
    charge: Callable[[int], None] | None = None  # the caller's token rate limit (smg.rate_limit)
    # tracing (smg.tracing): the request's span, its stages as (name, start, end) on the monotonic
    # clock (None: not traced), and the trace context its engine requests carry
    span: Any = None
    stages: list[tuple[str, float, float]] | None = None
    engine_metadata: tuple[tuple[str, str], ...] = ()

    def line(self) -> str:
        return json.dumps({
            "request_id": self.request_id, "method": self.method, "path": self.path, "status": self.status,
            "outcome": self.outcome, "key": self.key, "model": self.model, "prompt_tokens": self.prompt_tokens,
            "completion_tokens": self.completion_tokens, "ttft_ms": self.ttft_ms,
            "duration_ms": round((time.monotonic() - self.started) * 1e3, 2)}, separators=(",", ":"))

    def stage(self, name: str, started: float, ended: float) -> None:
        """A stage the request went through (kept when it is traced)."""
        if self.stages is not None:
            self.stages.append((name, started, ended))

    def engine_stream(self, prompt_tokens: int, completion_tokens: int, ttft: float | None) -> None:
        """One engine stream of the request ended (a request may run several: n, tool loops)."""
        self.prompt_tokens += prompt_tokens
        self.completion_tokens += completion_tokens
        if self.charge is not None:
            self.charge(prompt_tokens + completion_tokens)
        if ttft is not None and self.ttft_ms is None:
            self.ttft_ms = round(ttft * 1e3, 2)


CURRENT: contextvars.ContextVar[AccessRecord | None] = contextvars.ContextVar("smg_access_record", default=None)


def open_record(request_id: str, method: str, path: str) -> AccessRecord:
    """The request's record, current in this context from now on (each request of a server task
    sets its own; streams run in their server task's context, or a copy of it)."""
    record = AccessRecord(request_id, method, path)
    CURRENT.set(record)
    return record


def close_record(record: AccessRecord) -> None:
    log.info(record.line())
