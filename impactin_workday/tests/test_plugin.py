"""Plugin registration, hook guards, options and mapping."""

from __future__ import annotations

import subprocess
import sys
from importlib.metadata import entry_points
from typing import Any

import httpx
import pluggy
import pytest

import impactin_workday
from impactin_core import (
    AuthContext,
    ConfigError,
    Credentials,
    MemoryTokenStore,
    PlatformInfo,
    PlatformRequest,
    PlatformSettings,
    RecordInvalid,
    SendContext,
    TokenCache,
    leak_scan,
)
from impactin_core import hookspecs as core_hookspecs
from impactin_core._input import _CURRENCY_DIGITS
from impactin_workday import PLATFORM, WorkdayOptions, _plugin
from impactin_workday._mapping import _MINOR_DIGITS, format_amount, format_hours

from .conftest import EMPLOYEE_ID, make_record

OTHER = PlatformInfo(
    id="other", name="Other", kinds={"donation"}, auth_kinds=("api_key",)
)


def soap_settings(**options: Any) -> PlatformSettings:
    return PlatformSettings(
        tenant="acme",
        platform="workday",
        base_url="https://workday.test/",
        protocol=options.pop("protocol", "soap"),
        options={"tenant_name": "acme1", **options},
    )


def map_one(settings: PlatformSettings, **changes: Any) -> PlatformRequest:
    requests = _plugin.impactin_map(
        platform=PLATFORM,
        records=[make_record(**changes)],
        settings=settings,
        idempotency_keys=["key-1"],
    )
    assert requests is not None
    return requests[0]


def test_entry_point_loads_plugin() -> None:
    (entry,) = [e for e in entry_points(group="impactin") if e.name == "workday"]
    manager = pluggy.PluginManager("impactin")
    manager.add_hookspecs(core_hookspecs)
    manager.register(entry.load())
    manager.check_pending()
    registered: list[PlatformInfo] = []
    manager.hook.impactin_register_platforms(register=registered.append)
    assert [info.id for info in registered] == ["workday"]


def test_platform_declaration() -> None:
    assert PLATFORM.transports == ("soap", "rest")
    assert PLATFORM.personal_fields == frozenset({"employee_id"})
    assert PLATFORM.simulator == "impactin_workday.simulator:create_simulator"


def test_all_is_sorted() -> None:
    assert impactin_workday.__all__ == sorted(impactin_workday.__all__)


def test_dir_lists_lazy_and_module_names() -> None:
    names = dir(impactin_workday)

    assert "__file__" in names
    assert "__path__" in names
    assert "SameDateConflict" in names
    assert "WorkdayFaultError" in names


def test_plugin_import_skips_zeep() -> None:
    code = (
        "import sys, impactin_workday._plugin; "
        "print('zeep' in sys.modules, 'lxml' in sys.modules)"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    )
    assert result.stdout.strip() == "False False"


async def test_hooks_ignore_other_platform() -> None:
    settings = soap_settings()
    request = map_one(settings)
    async with httpx.AsyncClient() as client:
        auth = AuthContext(client=client, tokens=TokenCache(MemoryTokenStore()))
        send = SendContext(client=client, settings=settings)
        credentials = Credentials(kind="none")
        results = {
            "map": _plugin.impactin_map(
                platform=OTHER, records=[], settings=settings, idempotency_keys=[]
            ),
            "authenticate": _plugin.impactin_authenticate(
                platform=OTHER, settings=settings, context=auth
            ),
            "send": _plugin.impactin_send(
                platform=OTHER, request=request, credentials=credentials, context=send
            ),
        }
    assert results == {"map": None, "authenticate": None, "send": None}


def test_volunteer_row() -> None:
    request = map_one(soap_settings())
    assert request.payload == {
        "effective_date": "2026-11-03",
        "employee_id": EMPLOYEE_ID,
        "custom_object": "Volunteer_Activity",
        "row": {
            "Activity_ID": "key-1",
            "Activity_Type": "volunteer_time",
            "Activity_Date": "2026-11-03",
            "Source_ID": "act-1",
            "Cause": "Food bank",
            "Organization_Name": "City Harvest",
            "Hours": "3.5",
        },
    }


def test_donation_row() -> None:
    request = map_one(
        soap_settings(), kind="donation", hours=None, amount_minor=2000, currency="USD"
    )
    assert request.payload["row"]["Amount"] == "20.00"
    assert request.payload["row"]["Currency"] == "USD"
    assert "Hours" not in request.payload["row"]


@pytest.mark.parametrize(
    ("minor", "currency", "expected"),
    [
        pytest.param(2000, "USD", "20.00", id="usd"),
        pytest.param(5, "EUR", "0.05", id="eur-cents"),
        pytest.param(500, "JPY", "500", id="jpy"),
        pytest.param(1234, "KWD", "1.234", id="kwd"),
        pytest.param(12345, "CLF", "1.2345", id="clf-four-digits"),
        pytest.param(1, "USD", "0.01", id="one-cent"),
        pytest.param(100, "USD", "1.00", id="whole-usd"),
        pytest.param(999_999_999_999_999, "USD", "9999999999999.99", id="max-usd"),
        pytest.param(999_999_999_999_999, "JPY", "999999999999999", id="max-jpy"),
        pytest.param(999_999_999_999_999, "KWD", "999999999999.999", id="max-kwd"),
        pytest.param(
            12345678901234567890123456789012,
            "JPY",
            "12345678901234567890123456789012",
            id="32-digits-jpy",
        ),
        pytest.param(
            10**30, "USD", "10000000000000000000000000000.00", id="ten-pow-30-usd"
        ),
    ],
)
def test_format_amount(minor: int, currency: str, expected: str) -> None:
    formatted = format_amount(minor, currency)
    assert formatted == expected
    assert "E" not in formatted.upper()


def test_fractional_amount_rejected() -> None:
    record = make_record(kind="donation", hours=None, amount_minor=1250, currency="USD")
    # ImpactRecord rejects a float amount; the connector checks again for a
    # record whose validators were bypassed.
    object.__setattr__(record, "amount_minor", 12.5)
    with pytest.raises(RecordInvalid) as caught:
        _plugin.impactin_map(
            platform=PLATFORM,
            records=[record],
            settings=soap_settings(),
            idempotency_keys=["key-1"],
        )
    assert caught.value.field == "amount_minor"
    assert "12.5" in str(caught.value)


def test_minor_digits_match_input_reader() -> None:
    """An amount read in major units must be written back in the same units."""
    assert dict(_CURRENCY_DIGITS) == _MINOR_DIGITS


@pytest.mark.parametrize(
    ("hours", "expected"),
    [
        pytest.param(3.5, "3.5", id="half"),
        pytest.param(24.0, "24.0", id="max"),
        pytest.param(0.1, "0.1", id="tenth"),
        pytest.param(1e-7, "0.0000001", id="tiny"),
        pytest.param(1.5e-16, "0.00000000000000015", id="tinier"),
        pytest.param(1 / 3, "0.3333333333333333", id="third"),
        pytest.param(5e-324, "0." + "0" * 323 + "5", id="smallest-double"),
    ],
)
def test_format_hours(hours: float, expected: str) -> None:
    formatted = format_hours(hours)
    assert formatted == expected
    assert "E" not in formatted.upper()
    assert float(formatted) == hours


@pytest.mark.parametrize(
    ("protocol", "safe"),
    [pytest.param("soap", True, id="soap"), pytest.param("rest", False, id="rest")],
)
def test_safe_to_repeat(protocol: str, safe: bool) -> None:
    request = map_one(soap_settings(protocol=protocol))
    assert request.safe_to_repeat is safe


def test_payload_passes_leak_scan() -> None:
    request = map_one(soap_settings(), employee_id="ada@example.com")
    assert leak_scan(request.payload, request.personal_paths) == []


def test_field_names_override() -> None:
    request = map_one(soap_settings(field_names={"row_id": "External_ID"}))
    assert request.payload["row"]["External_ID"] == "key-1"


@pytest.mark.parametrize(
    ("changes", "key"),
    [
        pytest.param({"tenant_name": None}, "options.tenant_name", id="no-tenant"),
        pytest.param({"version": "26.1"}, "options.version", id="bad-version"),
        pytest.param(
            {"custom_object": "a b"}, "options.custom_object", id="bad-object"
        ),
        pytest.param(
            {"password_digest": "yes"}, "options.password_digest", id="bad-bool"
        ),
        pytest.param(
            {"field_names": {"nope": "X"}}, "options.field_names", id="bad-field"
        ),
        pytest.param({"protocol": "graphql"}, "protocol", id="bad-protocol"),
        pytest.param({"wsdl_cache_tll": 60}, "options.wsdl_cache_tll", id="misspelled"),
    ],
)
def test_invalid_options_rejected(changes: dict[str, Any], key: str) -> None:
    settings = soap_settings(**changes)
    if changes.get("tenant_name", "") is None:
        settings = PlatformSettings(
            tenant="acme",
            platform="workday",
            base_url="https://w.test",
            protocol="soap",
        )
    with pytest.raises(ConfigError) as caught:
        WorkdayOptions.from_settings(settings)
    assert caught.value.key == f"tenants.acme.platforms.workday.{key}"


def test_soap_endpoint() -> None:
    options = WorkdayOptions.from_settings(soap_settings(version="v40.2"))
    assert (
        options.soap_endpoint == "https://workday.test/ccx/service/acme1/Staffing/v40.2"
    )
