"""Provider verification: replay the contracts against the simulators on 127.0.0.1.

Each simulator is served by ``SandboxServer`` on a free loopback port. A
second loopback server takes Pact's provider state requests and prepares
the simulator: it issues tokens, creates events or schedules a 429, and
returns values that the verifier injects into the replayed request.
"""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable, Mapping
from pathlib import Path
from typing import Any

import attrs
import httpx
from pact import Verifier
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from impactin_core.sandbox import SandboxServer, Simulator

from . import benevity, goodera, workday_rest, workday_soap
from ._common import basic_auth, disable_pact_tracking

__all__ = ["ProviderResult", "simulator_for", "verify_pact", "verify_soap"]

StateHandler = Callable[[str, Simulator, Mapping[str, Any]], Awaitable[dict[str, Any]]]


@attrs.frozen
class ProviderResult:
    """The outcome of verifying one contract: success and the verifier's report."""

    passed: bool
    output: str


def simulator_for(provider: str) -> Simulator:
    """Build the simulator of ``provider`` with its sandbox defaults."""
    if provider == benevity.PROVIDER:
        from impactin_benevity._simulator import create_simulator as benevity_sim

        return benevity_sim()
    if provider == goodera.PROVIDER:
        from impactin_goodera.simulator import create_simulator as goodera_sim

        return goodera_sim()
    if provider == workday_rest.PROVIDER:
        from impactin_workday.simulator import create_simulator as workday_sim

        return workday_sim()
    message = f"No simulator is known for provider {provider!r}."
    raise LookupError(message)


async def _benevity_state(
    state: str, simulator: Simulator, params: Mapping[str, Any], base_url: str
) -> dict[str, Any]:
    async with httpx.AsyncClient(base_url=base_url) as client:
        if state == benevity.TOKEN_STATE:
            credentials = simulator.credentials
            response = await client.post(
                "/oauth2/token",
                data={"grant_type": "client_credentials"},
                headers={
                    "Authorization": basic_auth(
                        credentials["client_id"], credentials["client_secret"]
                    )
                },
            )
            response.raise_for_status()
            return {"accessToken": response.json()["access_token"]}
        if state == benevity.THROTTLE_STATE:
            plan = {"script": ["429"], "retry_after": str(params["retryAfter"])}
            response = await client.put("/_sandbox/faults", json=plan)
            response.raise_for_status()
            return {}
    if state == benevity.EXPIRED_STATE:
        return {}
    raise LookupError(state)


async def _goodera_state(
    state: str, simulator: Simulator, params: Mapping[str, Any], base_url: str
) -> dict[str, Any]:
    if state == goodera.EVENT_STATE:
        event = {
            "opportunityId": "64b7f0c2a1d3e4f5a6b7c8d9",
            "name": "Contract verification event",
            "startTimeStamp": "2026-11-03T09:00:00+00:00",
            "endTimeStamp": "2026-11-03T17:00:00+00:00",
            "timezone": "UTC",
            "country": "US",
        }
        async with httpx.AsyncClient(base_url=base_url) as client:
            response = await client.post(
                "/events",
                json=event,
                headers={"x-api-key": simulator.credentials["api_key"]},
            )
        response.raise_for_status()
        return {"eventId": response.json()["id"]}
    if state == goodera.MISSING_EVENT_STATE:
        return {}
    raise LookupError(state)


async def _workday_state(
    state: str, simulator: Simulator, params: Mapping[str, Any], base_url: str
) -> dict[str, Any]:
    workday_state: Any = getattr(simulator, "state", None)
    if state == workday_rest.REFRESH_STATE:
        workday_state.refresh_tokens.add(str(params["refreshToken"]))
        return {}
    if state == workday_rest.ACCESS_STATE:
        workday_state.access_tokens.add(str(params["accessToken"]))
        return {}
    if state == workday_rest.REVOKED_STATE:
        workday_state.refresh_tokens.discard(str(params["refreshToken"]))
        return {}
    if state == workday_rest.EXPIRED_STATE:
        workday_state.expire_access_tokens()
        return {}
    raise LookupError(state)


_STATE_HANDLERS = {
    benevity.PROVIDER: _benevity_state,
    goodera.PROVIDER: _goodera_state,
    workday_rest.PROVIDER: _workday_state,
}


def _state_app(provider: str, simulator: Simulator, base_url: str) -> Starlette:
    handler = _STATE_HANDLERS[provider]

    async def change_state(request: Request) -> JSONResponse:
        body = await request.json()
        if body.get("action") != "setup":
            return JSONResponse({})
        state = body.get("state") or ""
        if not state:
            # Pact sends a state change with no name for an interaction
            # that has no provider state.
            return JSONResponse({})
        try:
            values = await handler(state, simulator, body.get("params") or {}, base_url)
        except LookupError:
            message = f"No provider state handler for {state!r} of {provider}."
            return JSONResponse({"error": message}, status_code=400)
        return JSONResponse(values)

    return Starlette(routes=[Route("/state", change_state, methods=["POST"])])


def verify_pact(provider: str, pact_file: Path) -> ProviderResult:
    """Replay every interaction of ``pact_file`` against a fresh simulator."""
    disable_pact_tracking()
    simulator = simulator_for(provider)
    with SandboxServer(simulator.app) as server:
        states = _state_app(provider, simulator, server.url)
        with SandboxServer(states) as state_server:
            verifier = (
                Verifier(provider, host="127.0.0.1")
                .add_transport(url=server.url)
                .add_source(pact_file)
                .state_handler(f"{state_server.url}/state", body=True)
                .set_error_on_empty_pact(enabled=True)
            )
            try:
                verifier.verify()
            except RuntimeError:
                passed = False
            else:
                passed = True
            results = verifier.results
    output = verifier.output(strip_ansi=True)
    if passed and results.get("result") is False:
        passed = False
    return ProviderResult(passed=passed, output=output)


def verify_soap(folder: Path = workday_soap.CONTRACT_DIR) -> list[str]:
    """Post each SOAP contract request to the Workday simulator; list mismatches."""
    contract = workday_soap.load_contract(folder)
    markers = contract["markers"]
    request = contract["request"]
    template = (folder / request["body"]).read_text(encoding="utf-8")
    simulator = simulator_for(workday_rest.PROVIDER)
    problems: list[str] = []
    with SandboxServer(simulator.app) as server, httpx.Client() as client:
        for interaction in contract["interactions"]:
            values = {
                **contract["examples"],
                "username": simulator.credentials["username"],
                "password": simulator.credentials["password"],
                **interaction["values"],
            }
            path = workday_soap.fill(request["path"], values)
            body = workday_soap.fill(template, values).encode("utf-8")
            response = client.post(
                server.url + path, content=body, headers=request["headers"]
            )
            expected = interaction["response"]
            label = interaction["description"]
            if response.status_code != expected["status"]:
                problems.append(
                    f"{label}: expected HTTP {expected['status']}, "
                    f"found {response.status_code}"
                )
            shape = (folder / expected["body"]).read_text(encoding="utf-8")
            found = workday_soap.mismatches(
                shape, response.content, markers, allow_extra=True
            )
            problems.extend(f"{label}: {problem}" for problem in found)
    return problems


def main() -> int:
    """Verify every contract and print the reports; exit 1 on any failure."""
    from .generate import CONTRACTS_DIR, PAIRS, pact_file_name

    failed = False
    for consumer, provider, _ in PAIRS:
        result = verify_pact(
            provider, CONTRACTS_DIR / pact_file_name(consumer, provider)
        )
        print(result.output)
        failed = failed or not result.passed
    problems = verify_soap()
    for problem in problems:
        print(problem)
    print(json.dumps({"soap_mismatches": len(problems)}))
    return 1 if failed or problems else 0


if __name__ == "__main__":
    raise SystemExit(main())
