"""Consumer scenarios of the Workday connector over REST: token refresh and the write.

The connector exchanges its refresh token for an access token at
``/ccx/oauth2/{tenant}/token`` (HTTP Basic client authentication), then
posts one custom object row to ``/ccx/api/v1/{tenant}/{rest_path}``.

Provider states used here, which the provider verification sets up:

- ``the refresh token is valid``: the provider accepts ``refreshToken``;
- ``the access token is valid``: the provider accepts ``accessToken``;
- ``the refresh token was revoked`` and ``the access token has expired``:
  nothing to set up, because the provider never issued the example tokens.
"""

from __future__ import annotations

import datetime as dt

from pact import Pact, match

from impactin_core import (
    AuthenticationError,
    ImpactRecord,
    SendOutcome,
)
from impactin_workday import _plugin
from impactin_workday._plugin import PLATFORM
from impactin_workday.simulator import SANDBOX_TENANT

from ._common import Scenario, basic_auth, deliver, settings_for

__all__ = ["CONSUMER", "PROVIDER", "SCENARIOS", "SECRETS"]

CONSUMER = "impactin-workday"
PROVIDER = "workday"

REFRESH_STATE = "the refresh token is valid"
REVOKED_STATE = "the refresh token was revoked"
ACCESS_STATE = "the access token is valid"
EXPIRED_STATE = "the access token has expired"

#: The sandbox credentials of the Workday simulator, used as examples.
SECRETS = {
    "client_id": "sandbox-client",
    "client_secret": "sandbox-client-secret",
    "refresh_token": "sandbox-refresh-token",
}
_REVOKED_REFRESH_TOKEN = "revoked-refresh-token"
_ACCESS_TOKEN = "example-access-token-0001"

_JSON = "application/json"
_FORM = "application/x-www-form-urlencoded"
_TOKEN_PATH = f"/ccx/oauth2/{SANDBOX_TENANT}/token"
_WRITE_PATH = f"/ccx/api/v1/{SANDBOX_TENANT}/volunteerActivities"
_OPTIONS = {"tenant_name": SANDBOX_TENANT, "rest_path": "volunteerActivities"}
_IDEMPOTENCY_KEY = "idem-workday-0001"


def _record() -> ImpactRecord:
    return ImpactRecord(
        source_id="shift-3001",
        tenant="acme",
        kind="volunteer_time",
        activity_date=dt.date(2026, 11, 3),
        employee_id="E-20417",
        employee_email="dana.reyes@example.org",
        hours=3.5,
        organization_name="Riverside Food Bank",
        cause="Food security",
    )


def _token_request(
    pact: Pact, description: str, state: str, refresh_token: str
) -> object:
    client = basic_auth(SECRETS["client_id"], SECRETS["client_secret"])
    return (
        pact.upon_receiving(description)
        .given(state, refreshToken=refresh_token)
        .with_request("POST", _TOKEN_PATH)
        .with_header("Authorization", match.regex(client, regex=r"^Basic \S+$"))
        .with_header("Accept", _JSON)
        .with_body(
            {"grant_type": "refresh_token", "refresh_token": match.str(refresh_token)},
            content_type=_FORM,
        )
    )


def _token_refreshed(pact: Pact) -> None:
    interaction = _token_request(
        pact,
        "a refresh token grant with a valid refresh token",
        REFRESH_STATE,
        SECRETS["refresh_token"],
    )
    interaction.will_respond_with(200).with_body(  # type: ignore[attr-defined]
        {
            "access_token": match.str(_ACCESS_TOKEN),
            "token_type": "Bearer",
            "expires_in": match.int(3600),
            "refresh_token": match.str("rotated-refresh-token"),
        },
        content_type=_JSON,
    )


def _grant_rejected(pact: Pact) -> None:
    interaction = _token_request(
        pact,
        "a refresh token grant with a revoked refresh token",
        REVOKED_STATE,
        _REVOKED_REFRESH_TOKEN,
    )
    interaction.will_respond_with(400).with_body(  # type: ignore[attr-defined]
        {
            "error": "invalid_grant",
            "error_description": match.str("The refresh token is invalid or revoked."),
        },
        content_type=_JSON,
    )


def _write_request(
    pact: Pact, description: str, state: str, access_token: str
) -> object:
    return (
        pact.upon_receiving(description)
        .given(state, accessToken=access_token)
        .with_request("POST", _WRITE_PATH)
        .with_header(
            "Authorization",
            match.regex(f"Bearer {access_token}", regex=r"^Bearer \S+$"),
        )
        .with_header("Accept", _JSON)
        .with_body(
            {
                "worker": {
                    "id": match.regex("E-20417", regex=r"^[A-Za-z0-9_\-]{1,64}$")
                },
                "effectiveDate": match.regex(
                    "2026-11-03", regex=r"^\d{4}-\d{2}-\d{2}$"
                ),
                "customObject": "Volunteer_Activity",
                "data": {
                    "Activity_ID": match.str(_IDEMPOTENCY_KEY),
                    "Activity_Type": "volunteer_time",
                    "Activity_Date": match.regex(
                        "2026-11-03", regex=r"^\d{4}-\d{2}-\d{2}$"
                    ),
                    "Source_ID": match.str("shift-3001"),
                    "Cause": match.str("Food security"),
                    "Organization_Name": match.str("Riverside Food Bank"),
                    "Hours": match.regex("3.5", regex=r"^\d+(\.\d+)?$"),
                },
            },
            content_type=_JSON,
        )
    )


def _row_written(pact: Pact) -> None:
    _token_refreshed(pact)
    interaction = _write_request(
        pact,
        "a custom object row with a valid access token",
        ACCESS_STATE,
        _ACCESS_TOKEN,
    )
    interaction.will_respond_with(201).with_body(  # type: ignore[attr-defined]
        {"id": match.regex("0f3c" * 8, regex=r"^[0-9a-f]{32}$")}, content_type=_JSON
    )


def _row_unauthorized(pact: Pact) -> None:
    _token_refreshed(pact)
    interaction = _write_request(
        pact,
        "a custom object row with an expired access token",
        EXPIRED_STATE,
        _ACCESS_TOKEN,
    )
    (
        interaction.will_respond_with(401)  # type: ignore[attr-defined]
        .with_header("WWW-Authenticate", match.regex("Bearer", regex=r"^Bearer\b.*"))
        .with_body({"error": "invalid_token"}, content_type=_JSON)
    )


async def _send_with(base_url: str, refresh_token: str) -> SendOutcome:
    secrets = {**SECRETS, "refresh_token": refresh_token}
    return await deliver(
        plugin=_plugin,
        platform=PLATFORM,
        settings=settings_for(
            "workday", base_url, secrets, protocol="rest", options=_OPTIONS
        ),
        record=_record(),
        idempotency_key=_IDEMPOTENCY_KEY,
    )


async def _send(base_url: str) -> SendOutcome:
    return await _send_with(base_url, SECRETS["refresh_token"])


async def _send_with_revoked_token(base_url: str) -> SendOutcome:
    return await _send_with(base_url, _REVOKED_REFRESH_TOKEN)


SCENARIOS = (
    Scenario(platform=PROVIDER, name="row-written", define=_row_written, run=_send),
    Scenario(
        platform=PROVIDER,
        name="refresh-token-revoked",
        define=_grant_rejected,
        run=_send_with_revoked_token,
        expected=AuthenticationError,
    ),
    Scenario(
        platform=PROVIDER,
        name="access-token-expired",
        define=_row_unauthorized,
        run=_send,
        expected=AuthenticationError,
    ),
)
