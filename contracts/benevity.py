"""Consumer scenarios of the Benevity connector: token request and ``POST /donations``.

Provider states used here, which the provider verification sets up:

- ``Benevity accepts the client's access token``: returns ``accessToken``,
  a token the simulator issued, injected into the ``Authorization`` header;
- ``Benevity is throttling requests``: the next call gets 429 with the
  ``Retry-After`` seconds given in ``retryAfter``;
- ``the client's access token has expired``: nothing to set up, because the
  example token in the contract was never issued by the provider.
"""

from __future__ import annotations

import datetime as dt

from pact import Pact, generate, match
from pact.match.matcher import GenericMatcher

from impactin_benevity import PLATFORM, _plugin
from impactin_benevity._simulator import DEFAULT_CLIENT_ID, DEFAULT_CLIENT_SECRET
from impactin_core import (
    AuthenticationError,
    ImpactRecord,
    PermanentError,
    RateLimited,
    SendOutcome,
)

from ._common import Scenario, basic_auth, deliver, settings_for

__all__ = ["CONSUMER", "PROVIDER", "SCENARIOS"]

CONSUMER = "impactin-benevity"
PROVIDER = "benevity"

TOKEN_STATE = "Benevity accepts the client's access token"
THROTTLE_STATE = "Benevity is throttling requests"
EXPIRED_STATE = "the client's access token has expired"

_SECRETS = {"client_id": DEFAULT_CLIENT_ID, "client_secret": DEFAULT_CLIENT_SECRET}
_WRONG_SECRETS = {"client_id": DEFAULT_CLIENT_ID, "client_secret": "wrong-secret"}
_JSON = "application/json"
_FORM = "application/x-www-form-urlencoded"
_JWT = r"^[A-Za-z0-9_\-]+\.[A-Za-z0-9_\-]+\.[A-Za-z0-9_\-]+$"
_EXAMPLE_TOKEN = "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiJleGFtcGxlIn0.c2lnbmF0dXJl"
_IDEMPOTENCY_KEY = "idem-benevity-0001"


def _record() -> ImpactRecord:
    return ImpactRecord(
        source_id="gift-1001",
        tenant="acme",
        kind="donation",
        activity_date=dt.date(2026, 11, 3),
        employee_id="E-20417",
        employee_email="dana.reyes@example.org",
        amount_minor=2500,
        currency="USD",
        organization_id="124-1234ABCD",
        cause="Food security",
    )


def _bearer(*, injected: bool) -> object:
    if not injected:
        return match.regex(f"Bearer {_EXAMPLE_TOKEN}", regex=r"^Bearer \S+$")
    return GenericMatcher(
        "regex",
        f"Bearer {_EXAMPLE_TOKEN}",
        regex=r"^Bearer \S+$",
        generator=generate.provider_state("Bearer ${accessToken}"),
    )


def _donation_body(*, email: str = "dana.reyes@example.org") -> dict[str, object]:
    # The donor email and the pseudonymized employee reference vary per
    # record, so they are matched by pattern; the shape is exact.
    return {
        "destination": {"recipientId": match.str("124-1234ABCD")},
        "funds": {
            "paymentType": "DONATION_REPORT",
            "currencyCode": match.regex("USD", regex=r"^[A-Z]{3}$"),
            "amount": match.int(2500),
        },
        "donor": {
            "email": match.regex(email, regex=r"^\S+$"),
            "receipted": True,
        },
        "metadata": {
            "impactin_source_id": match.str("gift-1001"),
            "impactin_kind": "donation",
            "impactin_activity_date": match.regex(
                "2026-11-03", regex=r"^\d{4}-\d{2}-\d{2}$"
            ),
            "impactin_employee_ref": match.regex(
                "psn_" + "0123456789abcdef" * 2, regex=r"^psn_[0-9a-f]{32}$"
            ),
            "impactin_cause": match.str("Food security"),
            "impactin_idempotency_key": match.str(_IDEMPOTENCY_KEY),
        },
    }


def _token_request(pact: Pact, description: str, secrets: dict[str, str]) -> object:
    header = basic_auth(secrets["client_id"], secrets["client_secret"])
    return (
        pact.upon_receiving(description)
        .with_request("POST", "/oauth2/token")
        .with_header("Authorization", match.regex(header, regex=r"^Basic \S+$"))
        .with_header("Accept", _JSON)
        .with_body("grant_type=client_credentials", content_type=_FORM)
    )


def _token_granted(pact: Pact) -> None:
    interaction = _token_request(
        pact, "a token request with valid client credentials", _SECRETS
    )
    interaction.will_respond_with(200).with_body(  # type: ignore[attr-defined]
        {
            "access_token": match.regex(_EXAMPLE_TOKEN, regex=_JWT),
            "token_type": "Bearer",
            "expires_in": match.int(3600),
        },
        content_type=_JSON,
    )


def _token_rejected(pact: Pact) -> None:
    interaction = _token_request(
        pact, "a token request with a wrong client secret", _WRONG_SECRETS
    )
    (
        interaction.will_respond_with(401)  # type: ignore[attr-defined]
        .with_header("WWW-Authenticate", match.regex("Basic", regex=r"^Basic\b.*"))
        .with_body(
            {"error": "invalid_client", "error_description": match.str("failed")},
            content_type=_JSON,
        )
    )


def _donation_request(
    pact: Pact,
    description: str,
    *,
    state: str,
    injected: bool,
    email: str,
    **parameters: str,
) -> object:
    return (
        pact.upon_receiving(description)
        .given(state, **parameters)
        .with_request("POST", "/donations")
        .with_header("Authorization", _bearer(injected=injected))
        .with_header("Accept", _JSON)
        .with_body(_donation_body(email=email), content_type=_JSON)
    )


def _donation_created(pact: Pact) -> None:
    _token_granted(pact)
    interaction = _donation_request(
        pact,
        "a donation with a valid access token",
        state=TOKEN_STATE,
        injected=True,
        email="dana.reyes@example.org",
    )
    interaction.will_respond_with(201).with_body(  # type: ignore[attr-defined]
        {
            "id": match.uuid("5b0d8f4e-2a51-4c8e-9f3a-0d6c2b7e1a44"),
            "state": {"processingStatus": "ACCEPTED"},
        },
        content_type=_JSON,
    )


def _error_list(status: int, code: str) -> object:
    item = {
        "status": str(status),
        "code": code,
        "detail": match.str("The access token has expired."),
    }
    return {"errors": match.each_like(item, min=1)}


def _donation_unauthorized(pact: Pact) -> None:
    _token_granted(pact)
    interaction = _donation_request(
        pact,
        "a donation with an expired access token",
        state=EXPIRED_STATE,
        injected=False,
        email="dana.reyes@example.org",
    )
    (
        interaction.will_respond_with(401)  # type: ignore[attr-defined]
        .with_header("WWW-Authenticate", match.regex("Bearer", regex=r"^Bearer\b.*"))
        .with_body(_error_list(401, "invalid_token"), content_type=_JSON)
    )


def _donation_throttled(pact: Pact) -> None:
    _token_granted(pact)
    interaction = _donation_request(
        pact,
        "a donation while Benevity is throttling",
        state=THROTTLE_STATE,
        injected=False,
        email="dana.reyes@example.org",
        retryAfter="7",
    )
    interaction.will_respond_with(429).with_header(  # type: ignore[attr-defined]
        "Retry-After", match.regex("7", regex=r"^\d+$")
    )


def _donation_invalid(pact: Pact) -> None:
    _token_granted(pact)
    # The example email is invalid on purpose, so the provider rejects the
    # replayed request. The connector's real email still matches the pattern.
    interaction = _donation_request(
        pact,
        "a donation whose donor email Benevity rejects",
        state=TOKEN_STATE,
        injected=True,
        email="not-an-email",
    )
    interaction.will_respond_with(400).with_body(  # type: ignore[attr-defined]
        _error_list(400, "invalid_attribute"), content_type=_JSON
    )


async def _send(base_url: str) -> SendOutcome:
    return await deliver(
        plugin=_plugin,
        platform=PLATFORM,
        settings=settings_for("benevity", base_url, _SECRETS),
        record=_record(),
        idempotency_key=_IDEMPOTENCY_KEY,
    )


async def _send_with_wrong_secret(base_url: str) -> SendOutcome:
    return await deliver(
        plugin=_plugin,
        platform=PLATFORM,
        settings=settings_for("benevity", base_url, _WRONG_SECRETS),
        record=_record(),
        idempotency_key=_IDEMPOTENCY_KEY,
    )


SCENARIOS = (
    Scenario(
        platform=PROVIDER, name="donation-created", define=_donation_created, run=_send
    ),
    Scenario(
        platform=PROVIDER,
        name="token-rejected",
        define=_token_rejected,
        run=_send_with_wrong_secret,
        expected=AuthenticationError,
    ),
    Scenario(
        platform=PROVIDER,
        name="donation-unauthorized",
        define=_donation_unauthorized,
        run=_send,
        expected=AuthenticationError,
    ),
    Scenario(
        platform=PROVIDER,
        name="donation-throttled",
        define=_donation_throttled,
        run=_send,
        expected=RateLimited,
    ),
    Scenario(
        platform=PROVIDER,
        name="donation-invalid",
        define=_donation_invalid,
        run=_send,
        expected=PermanentError,
    ),
)
