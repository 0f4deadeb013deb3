"""A small connector and simulator used to test the runtime on its own.

The "echo" platform takes one record per ``POST /records`` with an
``x-api-key`` header and an ``Idempotency-Key`` header that it honours.
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from typing import Any

import httpx
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from impactin_core import (
    AuthContext,
    Credentials,
    ImpactRecord,
    PlatformInfo,
    PlatformRequest,
    PlatformSettings,
    RateLimit,
    RecordKind,
    SendContext,
    SendOutcome,
    hookimpl,
    raise_for_response,
    request_with_mapping,
)
from impactin_core.sandbox import FaultPlan, Journal, Simulator, build_sandbox_app

API_KEY = "echo-sandbox-key"

INFO = PlatformInfo(
    id="echo",
    name="Echo",
    kinds={RecordKind.VOLUNTEER_TIME, RecordKind.DONATION},
    auth_kinds=("api_key",),
    rate_limit=RateLimit(10_000, 1.0),
    personal_fields={"employee_email"},
    honours_idempotency_key=True,
    simulator="echo_connector:create_simulator",
)


class EchoPlugin:
    @hookimpl
    def impactin_register_platforms(self, register: Any) -> None:
        register(INFO)

    @hookimpl
    def impactin_map(
        self,
        platform: PlatformInfo,
        records: Sequence[ImpactRecord],
        settings: PlatformSettings,
        idempotency_keys: Sequence[str],
    ) -> list[PlatformRequest] | None:
        if platform.id != "echo":
            return None
        requests = []
        for record, key in zip(records, idempotency_keys, strict=True):
            payload = {
                "source": record.source_id,
                "kind": record.kind.value,
                "date": record.activity_date.isoformat(),
                "email": record.employee_email,
                "employee": record.employee_id,
                "hours": record.hours,
                "amount": record.amount_minor,
                "description": record.description,
                "metadata": dict(record.metadata),
            }
            requests.append(
                PlatformRequest(
                    platform="echo",
                    tenant=record.tenant,
                    operation="create_record",
                    idempotency_key=key,
                    source_ids=(record.source_id,),
                    payload=payload,
                    personal_paths={"email"},
                )
            )
        return requests

    @hookimpl
    def impactin_authenticate(
        self, platform: PlatformInfo, settings: PlatformSettings, context: AuthContext
    ) -> Any:
        if platform.id != "echo":
            return None

        async def credentials() -> Credentials:
            return Credentials(
                kind="api_key", headers={"x-api-key": settings.secret("api_key")}
            )

        return credentials()

    @hookimpl
    def impactin_send(
        self,
        platform: PlatformInfo,
        request: PlatformRequest,
        credentials: Credentials,
        context: SendContext,
    ) -> Any:
        if platform.id != "echo":
            return None

        async def send() -> SendOutcome:
            headers = {
                **credentials.headers,
                "Idempotency-Key": request.idempotency_key,
            }
            url = f"{context.settings.base_url}/records"
            response = await request_with_mapping(
                lambda: context.client.post(url, json=request.payload, headers=headers),
                platform="echo",
                tenant=request.tenant,
            )
            if response.status_code in (200, 201):
                return SendOutcome(
                    status_code=response.status_code, response_id=response.json()["id"]
                )
            raise_for_response(
                response, platform="echo", tenant=request.tenant, now=time.time()
            )

        return send()


def create_simulator(
    *, plan: FaultPlan | None = None, credentials: Mapping[str, str] | None = None
) -> Simulator:
    accepted = {"api_key": API_KEY, **(credentials or {})}
    journal = Journal()
    counter = iter(range(1, 10**9))

    async def records(request: Request) -> JSONResponse:
        if request.headers.get("x-api-key") != accepted["api_key"]:
            return JSONResponse({"error": "unauthenticated"}, status_code=401)
        body = await request.json()
        if not isinstance(body.get("source"), str):
            return JSONResponse({"error": "source is required"}, status_code=400)
        raw = await request.body()
        entry = {
            "body": body,
            "raw": raw.decode("utf-8"),
            "headers": dict(request.headers),
        }
        answer, repeat = journal.accept(
            request.headers.get("idempotency-key"),
            entry,
            lambda: {"id": f"echo-{next(counter)}"},
        )
        return JSONResponse(answer, status_code=200 if repeat else 201)

    app = Starlette(routes=[Route("/records", records, methods=["POST"])])
    return Simulator(
        app=build_sandbox_app(app, journal, plan), journal=journal, credentials=accepted
    )


def status_of(client: httpx.Client) -> int:
    return client.get("/_sandbox/journal").status_code
