"""Building blocks for platform simulators served on 127.0.0.1.

A connector's simulator is a Starlette app. ``build_sandbox_app`` wraps it
with fault injection and a journal of accepted writes, and adds admin routes
under ``/_sandbox/`` so tests and other processes can read the journal and
change the faults:

- ``GET /_sandbox/journal``: every accepted write, and duplicate counts;
- ``DELETE /_sandbox/journal``: clear it;
- ``GET`` / ``PUT /_sandbox/faults``: read or replace the ``FaultPlan``.

``SandboxServer`` serves such an app with uvicorn in a background thread.
"""

from __future__ import annotations

import asyncio
import json
import random
import socket
import threading
import time
from collections.abc import Awaitable, Callable
from typing import Any

import attrs
import cattrs

__all__ = [
    "FaultPlan",
    "Journal",
    "SandboxServer",
    "Simulator",
    "build_sandbox_app",
]

ASGIApp = Callable[..., Awaitable[None]]
ADMIN_PREFIX = "/_sandbox/"


_SCRIPT_WORDS = frozenset({"ok", "drop", "drop_after", "slow", "error"})


@attrs.define(kw_only=True)
class FaultPlan:
    """Faults a simulator injects, each drawn per request with its rate.

    ``script`` forces the outcomes of the next requests in order, before the
    rates apply: an HTTP status such as ``"503"`` or ``"400"`` (``"429"``
    carries ``retry_after``), ``"drop"`` (connection
    closed before the request is handled), ``"drop_after"`` (handled, then
    the connection is closed before the response), ``"slow"`` and ``"ok"``.
    """

    error_rate: float = 0.0
    error_status: int = 503
    throttle_rate: float = 0.0
    retry_after: str | None = "1"
    slow_rate: float = 0.0
    slow_seconds: float = 5.0
    drop_rate: float = 0.0
    drop_after_rate: float = 0.0
    latency_seconds: float = 0.0
    seed: int | None = None
    script: list[str] = attrs.field(factory=list)

    def __attrs_post_init__(self) -> None:
        for name in (
            "error_rate",
            "throttle_rate",
            "slow_rate",
            "drop_rate",
            "drop_after_rate",
        ):
            value = getattr(self, name)
            if not 0.0 <= value <= 1.0:
                message = f"FaultPlan.{name} is {value!r}; use a rate from 0 to 1."
                raise ValueError(message)
        for outcome in self.script:
            status_code = outcome.isdigit() and 100 <= int(outcome) <= 599
            if not status_code and outcome not in _SCRIPT_WORDS:
                message = (
                    f"FaultPlan.script holds {outcome!r}; use an HTTP status such as "
                    f"'503' or one of {', '.join(sorted(_SCRIPT_WORDS))}."
                )
                raise ValueError(message)


class Journal:
    """Accepted writes, keyed by the platform's natural or idempotency key.

    ``accept`` returns the stored response when the key was seen before, so a
    simulator honours idempotency and the journal counts the repeat.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.entries: list[dict[str, Any]] = []
        self._answers: dict[str, Any] = {}
        self.repeats: dict[str, int] = {}
        self.request_count = 0

    def accept(
        self, key: str | None, entry: dict[str, Any], answer: Callable[[], Any]
    ) -> tuple[Any, bool]:
        """Store ``entry`` under ``key`` and return (response, was_repeat)."""
        with self._lock:
            if key is not None and key in self._answers:
                self.repeats[key] = self.repeats.get(key, 0) + 1
                return self._answers[key], True
            result = answer()
            if key is not None:
                self._answers[key] = result
            self.entries.append({"key": key, **entry})
            return result, False

    def count_request(self) -> None:
        with self._lock:
            self.request_count += 1

    def snapshot(self) -> dict[str, Any]:
        with self._lock:
            return {
                "entries": list(self.entries),
                "repeats": dict(self.repeats),
                "request_count": self.request_count,
            }

    def clear(self) -> None:
        with self._lock:
            self.entries.clear()
            self._answers.clear()
            self.repeats.clear()
            self.request_count = 0


class _FaultMiddleware:
    def __init__(self, app: ASGIApp, state: _SandboxState) -> None:
        self.app = app
        self.state = state

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http" or scope["path"].startswith(ADMIN_PREFIX):
            await self.app(scope, receive, send)
            return
        self.state.journal.count_request()
        outcome = self.state.draw()
        plan = self.state.plan
        if plan.latency_seconds:
            await asyncio.sleep(plan.latency_seconds)
        if outcome == "429":
            headers = []
            if plan.retry_after is not None:
                headers.append((b"retry-after", plan.retry_after.encode()))
            await _send_json(send, 429, {"message": "Too Many Requests"}, headers)
        elif outcome == "error" or outcome.isdigit():
            status = plan.error_status if outcome == "error" else int(outcome)
            await _send_json(send, status, {"message": f"Injected HTTP {status}"})
        elif outcome == "drop":
            await _drop(send)
        elif outcome == "drop_after":
            await self.app(scope, receive, _Swallow())
            await _drop(send)
        elif outcome == "slow":
            await asyncio.sleep(plan.slow_seconds)
            await self.app(scope, receive, send)
        else:
            await self.app(scope, receive, send)


class _Swallow:
    async def __call__(self, message: dict[str, Any]) -> None:
        return None


async def _send_json(
    send: Any,
    status: int,
    body: Any,
    headers: list[tuple[bytes, bytes]] | None = None,
) -> None:
    data = json.dumps(body).encode()
    all_headers = [
        (b"content-type", b"application/json"),
        (b"content-length", str(len(data)).encode()),
        *(headers or []),
    ]
    await send(
        {"type": "http.response.start", "status": status, "headers": all_headers}
    )
    await send({"type": "http.response.body", "body": data})


async def _drop(send: Any) -> None:
    # Promise a body and close early: the client sees the connection end
    # before a complete answer, as with a peer that resets the connection.
    headers = [(b"content-length", b"1000"), (b"content-type", b"application/json")]
    await send({"type": "http.response.start", "status": 200, "headers": headers})
    await send({"type": "http.response.body", "body": b"{", "more_body": False})


class _SandboxState:
    def __init__(self, plan: FaultPlan, journal: Journal) -> None:
        self.plan = plan
        self.journal = journal
        self._random = random.Random(plan.seed)
        self._lock = threading.Lock()

    def replace_plan(self, plan: FaultPlan) -> None:
        with self._lock:
            self.plan = plan
            self._random = random.Random(plan.seed)

    def draw(self) -> str:
        with self._lock:
            plan = self.plan
            if plan.script:
                return plan.script.pop(0)
            roll = self._random.random()
            for outcome, rate in (
                ("error", plan.error_rate),
                ("429", plan.throttle_rate),
                ("slow", plan.slow_rate),
                ("drop", plan.drop_rate),
                ("drop_after", plan.drop_after_rate),
            ):
                if roll < rate:
                    return outcome
                roll -= rate
            return "ok"


def _describe(error: BaseException) -> str:
    """Return the innermost messages of a cattrs error, which name the field."""
    inner = getattr(error, "exceptions", None)
    if not inner:
        return str(error)
    return "; ".join(_describe(item) for item in inner)


def build_sandbox_app(
    app: ASGIApp, journal: Journal, plan: FaultPlan | None = None
) -> ASGIApp:
    """Wrap a simulator app with fault injection and the admin routes."""
    from starlette.requests import Request
    from starlette.responses import JSONResponse
    from starlette.routing import Route, Router

    state = _SandboxState(plan or FaultPlan(), journal)
    converter = cattrs.Converter(forbid_extra_keys=True)

    async def journal_route(request: Request) -> JSONResponse:
        if request.method == "DELETE":
            journal.clear()
        return JSONResponse(journal.snapshot())

    async def faults_route(request: Request) -> JSONResponse:
        if request.method == "PUT":
            try:
                new_plan = converter.structure(await request.json(), FaultPlan)
            except cattrs.BaseValidationError as exc:
                return JSONResponse({"error": _describe(exc)}, status_code=400)
            except (ValueError, TypeError) as exc:
                return JSONResponse({"error": str(exc)}, status_code=400)
            state.replace_plan(new_plan)
        return JSONResponse(converter.unstructure(state.plan))

    admin = Router(
        routes=[
            Route("/_sandbox/journal", journal_route, methods=["GET", "DELETE"]),
            Route("/_sandbox/faults", faults_route, methods=["GET", "PUT"]),
        ]
    )
    faulty = _FaultMiddleware(app, state)

    async def sandbox(scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] == "http" and scope["path"].startswith(ADMIN_PREFIX):
            await admin(scope, receive, send)
        else:
            await faulty(scope, receive, send)

    sandbox.state = state  # type: ignore[attr-defined]
    return sandbox


class SandboxServer:
    """Serve an ASGI app on 127.0.0.1 from a background thread.

    Use as a context manager; ``url`` is set once the server listens. Port 0
    picks a free port.
    """

    def __init__(self, app: ASGIApp, *, port: int = 0) -> None:
        self.app = app
        self.port = port
        self._thread: threading.Thread | None = None
        self._server: Any = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self, timeout: float = 10.0) -> SandboxServer:
        import uvicorn

        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(("127.0.0.1", self.port))
        self.port = sock.getsockname()[1]
        config = uvicorn.Config(
            self.app,
            log_level="warning",
            access_log=False,
            lifespan="off",
            timeout_keep_alive=30,
            backlog=2048,
        )
        self._server = uvicorn.Server(config)
        self._thread = threading.Thread(
            target=self._server.run,
            kwargs={"sockets": [sock]},
            name=f"impactin-sandbox-{self.port}",
            daemon=True,
        )
        self._thread.start()
        deadline = time.monotonic() + timeout
        while not self._server.started:
            if time.monotonic() > deadline or not self._thread.is_alive():
                message = (
                    f"The sandbox on port {self.port} did not start in {timeout} s."
                )
                raise RuntimeError(message)
            time.sleep(0.01)
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.should_exit = True
        if self._thread is not None:
            self._thread.join(timeout=10)

    def __enter__(self) -> SandboxServer:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()


@attrs.frozen
class Simulator:
    """A simulator app (already wrapped by ``build_sandbox_app``) and its journal."""

    app: ASGIApp
    journal: Journal
    #: Credential names and the values the simulator accepts, for demos.
    credentials: dict[str, str] = attrs.field(factory=dict, repr=False)
    #: Connector options needed to talk to this simulator, for demos.
    options: dict[str, Any] = attrs.field(factory=dict)
