"""Tenant options of the Workday connector, read from ``PlatformSettings``."""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from typing import Any

import attrs

from impactin_core import ConfigError, PlatformSettings, check_option_names

from ._wsdl_cache import is_url

__all__ = ["DEFAULT_FIELD_NAMES", "WorkdayOptions"]

PLATFORM_ID = "workday"

#: Custom object field names the connector writes, keyed by what they carry.
#: A tenant defines its own custom object, so each name can be overridden
#: with the ``field_names`` option.
DEFAULT_FIELD_NAMES: Mapping[str, str] = {
    "row_id": "Activity_ID",
    "kind": "Activity_Type",
    "activity_date": "Activity_Date",
    "hours": "Hours",
    "amount": "Amount",
    "currency": "Currency",
    "cause": "Cause",
    "organization_name": "Organization_Name",
    "organization_id": "Organization_ID",
    "source_id": "Source_ID",
}

_VERSION = re.compile(r"^v\d+\.\d+$")
_TENANT_NAME = re.compile(r"^[A-Za-z0-9_\-]{1,64}$")
# Custom object and field names become XML element names, so they must be
# NCNames; this stricter ASCII form also keeps them valid in JSON keys.
_XML_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_\-]{0,127}$")
_REST_PATH = re.compile(r"^[A-Za-z0-9_\-]+(?:/[A-Za-z0-9_\-]+)*$")
_PROTOCOLS = ("soap", "rest")


def _option_key(settings: PlatformSettings, name: str) -> str:
    return f"tenants.{settings.tenant}.platforms.{settings.platform}.options.{name}"


def _invalid(settings: PlatformSettings, name: str, value: Any, expected: str) -> None:
    key = _option_key(settings, name)
    message = f"Workday option {key} is {value!r}; set it to {expected}."
    raise ConfigError(message, key=key)


def _read_text(
    settings: PlatformSettings,
    name: str,
    pattern: re.Pattern[str],
    expected: str,
    default: str | None = None,
) -> str | None:
    value = settings.options.get(name, default)
    if value is None:
        return None
    if not isinstance(value, str) or not pattern.match(value):
        _invalid(settings, name, value, expected)
    return str(value)


def _read_bool(settings: PlatformSettings, name: str, *, default: bool = False) -> bool:
    value = settings.options.get(name, default)
    if not isinstance(value, bool):
        _invalid(settings, name, value, "true or false")
    return bool(value)


def _read_field_names(settings: PlatformSettings) -> dict[str, str]:
    overrides = settings.options.get("field_names", {})
    if not isinstance(overrides, Mapping):
        _invalid(settings, "field_names", overrides, "a table of field names")
    names = dict(DEFAULT_FIELD_NAMES)
    for purpose, name in overrides.items():
        if purpose not in DEFAULT_FIELD_NAMES:
            expected = f"a table whose keys are among {sorted(DEFAULT_FIELD_NAMES)}"
            _invalid(settings, "field_names", dict(overrides), expected)
        if not isinstance(name, str) or not _XML_NAME.match(name):
            _invalid(settings, f"field_names.{purpose}", name, "an XML element name")
        names[purpose] = name
    return names


@attrs.frozen(kw_only=True)
class WorkdayOptions:
    """Validated connector options of one tenant."""

    protocol: str
    base_url: str
    tenant_name: str
    version: str = "v26.1"
    custom_object: str = "Volunteer_Activity"
    #: A local path or URL of the WSDL; None selects the bundled WSDL.
    wsdl: str | None = None
    #: Seconds a WSDL or schema fetched over HTTP is reused from the disk cache.
    wsdl_cache_ttl: int = 86400
    password_digest: bool = False
    timestamp: bool = False
    #: Reject a second row for one worker, custom object and effective date.
    same_date_guard: bool = True
    #: Seconds between ``wsu:Created`` and ``wsu:Expires`` of the Timestamp.
    timestamp_ttl: int = 300
    #: Path below ``/ccx/api/v1/TENANT/`` that accepts the REST write.
    rest_path: str | None = None
    field_names: Mapping[str, str] = attrs.field(factory=lambda: DEFAULT_FIELD_NAMES)

    @classmethod
    def from_settings(cls, settings: PlatformSettings) -> WorkdayOptions:
        """Read and validate the options, raising ``ConfigError`` naming the key.

        An unknown key is an error too, so that a misspelled option is not
        ignored. The runtime's own keys (``RUNTIME_OPTIONS``) are accepted.
        """
        check_option_names(
            settings.options,
            _OPTION_NAMES,
            tenant=settings.tenant,
            platform=settings.platform,
        )
        protocol = settings.protocol
        if protocol not in _PROTOCOLS:
            key = f"tenants.{settings.tenant}.platforms.{settings.platform}.protocol"
            message = f"Workday protocol {key} is {protocol!r}; use 'soap' or 'rest'."
            raise ConfigError(message, key=key)
        tenant_name = _read_text(
            settings, "tenant_name", _TENANT_NAME, "the Workday tenant name"
        )
        if tenant_name is None:
            key = _option_key(settings, "tenant_name")
            message = (
                f"Workday option {key} is missing; set it to the tenant name "
                "that appears in the Workday service URLs."
            )
            raise ConfigError(message, key=key)
        ttl = settings.options.get("timestamp_ttl", 300)
        if isinstance(ttl, bool) or not isinstance(ttl, int) or ttl <= 0:
            _invalid(settings, "timestamp_ttl", ttl, "a positive number of seconds")
        cache_ttl = settings.options.get("wsdl_cache_ttl", 86400)
        if (
            isinstance(cache_ttl, bool)
            or not isinstance(cache_ttl, int)
            or cache_ttl < 0
        ):
            _invalid(
                settings, "wsdl_cache_ttl", cache_ttl, "a number of seconds, 0 or more"
            )
        wsdl = settings.options.get("wsdl")
        if wsdl is not None and (not isinstance(wsdl, str) or not wsdl.strip()):
            _invalid(settings, "wsdl", wsdl, "a local path or URL of a WSDL")
        if (
            wsdl is not None
            and not is_url(wsdl)
            and not os.path.isabs(os.path.expanduser(wsdl))
        ):
            # A relative path would depend on the folder the process starts in.
            _invalid(settings, "wsdl", wsdl, "an absolute path or the URL of a WSDL")
        return cls(
            protocol=protocol,
            base_url=settings.base_url.rstrip("/"),
            tenant_name=tenant_name,
            version=_read_text(
                settings, "version", _VERSION, "a version such as 'v26.1'", "v26.1"
            )
            or "v26.1",
            custom_object=_read_text(
                settings,
                "custom_object",
                _XML_NAME,
                "the custom object's web service alias",
                "Volunteer_Activity",
            )
            or "Volunteer_Activity",
            wsdl=wsdl,
            wsdl_cache_ttl=cache_ttl,
            password_digest=_read_bool(settings, "password_digest"),
            same_date_guard=_read_bool(settings, "same_date_guard", default=True),
            timestamp=_read_bool(settings, "timestamp"),
            timestamp_ttl=ttl,
            rest_path=_read_text(
                settings,
                "rest_path",
                _REST_PATH,
                "a path such as 'volunteerActivities'",
            ),
            field_names=_read_field_names(settings),
        )

    @property
    def soap_endpoint(self) -> str:
        """``https://HOST/ccx/service/TENANT/Staffing/vNN.N``."""
        return f"{self.base_url}/ccx/service/{self.tenant_name}/Staffing/{self.version}"

    @property
    def token_url(self) -> str:
        """``https://HOST/ccx/oauth2/TENANT/token``."""
        return f"{self.base_url}/ccx/oauth2/{self.tenant_name}/token"

    def rest_url(self, settings: PlatformSettings) -> str:
        """Return ``https://HOST/ccx/api/v1/TENANT/<rest_path>``.

        Raises ``ConfigError`` when the ``rest_path`` option is missing.
        """
        if self.rest_path is None:
            key = _option_key(settings, "rest_path")
            message = (
                f"Workday option {key} is missing; the REST protocol needs the "
                "tenant-specific path that stores these records, such as "
                "'volunteerActivities'."
            )
            raise ConfigError(message, key=key)
        return f"{self.base_url}/ccx/api/v1/{self.tenant_name}/{self.rest_path}"


#: The ``options`` keys the connector reads: every field but the two that
#: come from the platform's own settings, and the webhook scheme, which the
#: verify_webhook hook reads.
_OPTION_NAMES = frozenset(
    {"webhook_scheme"}
    | {
        field.name
        for field in attrs.fields(WorkdayOptions)
        if field.name not in ("protocol", "base_url")
    }
)
