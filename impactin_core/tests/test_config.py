"""Configuration parsing: every bad setting names its key and the fix."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import pytest

from impactin_core import ConfigError, EnvSecrets, load_config
from impactin_core._config import parse_config

VALID = """
[store]
path = "state.db"
key_env = "STORE_KEY"

[tenants.acme]
key_env = "ACME_KEY"

[tenants.acme.platforms.benevity]
base_url = "https://benevity.example/"
credentials = { client_id = "ACME_ID", client_secret = "ACME_SECRET" }
options = { foundation_id = "f-1" }
retry = { max_attempts = 3, deadline = 30 }
breaker = { threshold = 2, reset_timeout = 10 }
rate_limit = { calls = 100, period = 60 }

[tenants.acme.platforms.workday]
base_url = "https://workday.example"
protocol = "soap"
enabled = false
"""


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "impactin.toml"
    path.write_text(text, encoding="utf-8")
    return path


def platform(**changes: Any) -> dict[str, Any]:
    data: dict[str, Any] = {"base_url": "https://x.example"}
    data.update(changes)
    return {"tenants": {"acme": {"key_env": "K", "platforms": {"benevity": data}}}}


def test_valid_file_parses(tmp_path: Path) -> None:
    config = load_config(write(tmp_path, VALID))

    benevity = config.tenants["acme"].platforms["benevity"]
    assert config.store_path == tmp_path / "state.db"
    assert benevity.base_url == "https://benevity.example"
    assert benevity.retry.max_attempts == 3
    assert benevity.breaker.threshold == 2
    assert benevity.rate_limit == (100, 60.0)
    assert config.tenants["acme"].platforms["workday"].enabled is False


def test_settings_resolve_secrets(tmp_path: Path) -> None:
    config = load_config(write(tmp_path, VALID))
    secrets = EnvSecrets({"ACME_ID": "id-1", "ACME_SECRET": "s3cret"})

    settings = config.settings("acme", "benevity", secrets)

    assert settings.secret("client_secret") == "s3cret"
    assert "s3cret" not in repr(settings)


@pytest.mark.parametrize(
    "value", ["s3cret-value\n", "s3cret\r\nvalue", "\x00s3cret", "s3cret-value "]
)
def test_secret_with_control_character_is_rejected(tmp_path: Path, value: str) -> None:
    config = load_config(write(tmp_path, VALID))
    secrets = EnvSecrets({"ACME_ID": "id-1", "ACME_SECRET": value})

    with pytest.raises(ConfigError) as caught:
        config.settings("acme", "benevity", secrets)

    assert (
        caught.value.key == "tenants.acme.platforms.benevity.credentials.client_secret"
    )
    assert "ACME_SECRET" in str(caught.value)
    assert "control character" in str(caught.value)
    assert "s3cret" not in str(caught.value)


def test_unset_secret_names_variable(tmp_path: Path) -> None:
    config = load_config(write(tmp_path, VALID))

    with pytest.raises(ConfigError) as caught:
        config.settings("acme", "benevity", EnvSecrets({"ACME_ID": "id-1"}))

    assert (
        caught.value.key == "tenants.acme.platforms.benevity.credentials.client_secret"
    )
    assert "ACME_SECRET" in str(caught.value)


@pytest.mark.parametrize(
    ("data", "key"),
    [
        pytest.param({}, "tenants", id="no-tenants"),
        pytest.param(
            {"tenants": {"acme": {"platforms": {}}}},
            "tenants.acme.key_env",
            id="no-key-env",
        ),
        pytest.param(
            {"tenants": {"acme": {"key_env": "K", "platforms": {"benevity": {}}}}},
            "tenants.acme.platforms.benevity.base_url",
            id="no-base-url",
        ),
        pytest.param(
            platform(base_url="ftp://x"),
            "tenants.acme.platforms.benevity.base_url",
            id="bad-scheme",
        ),
        pytest.param(
            platform(protocol="grpc"),
            "tenants.acme.platforms.benevity.protocol",
            id="bad-protocol",
        ),
        pytest.param(
            platform(enabled="yes"),
            "tenants.acme.platforms.benevity.enabled",
            id="enabled-not-bool",
        ),
        pytest.param(
            platform(retry={"attempts": 3}),
            "tenants.acme.platforms.benevity.retry.attempts",
            id="unknown-retry-setting",
        ),
        pytest.param(
            platform(breaker={"threshold": 0}),
            "tenants.acme.platforms.benevity.breaker.threshold",
            id="breaker-threshold-zero",
        ),
        pytest.param(
            platform(rate_limit={"calls": 10}),
            "tenants.acme.platforms.benevity.rate_limit.period",
            id="rate-limit-no-period",
        ),
        pytest.param(
            platform(rate_limit={"calls": 10, "period": 60, "burst": 3}),
            "tenants.acme.platforms.benevity.rate_limit.burst",
            id="rate-limit-unknown-key",
        ),
        pytest.param(
            platform(rate_limit={"call": 10, "period": 60}),
            "tenants.acme.platforms.benevity.rate_limit.call",
            id="rate-limit-misspelled-calls",
        ),
        pytest.param(
            platform(rate_limit={"calls": 10**20, "period": 60}),
            "tenants.acme.platforms.benevity.rate_limit.calls",
            id="rate-limit-too-many-calls",
        ),
        pytest.param(
            platform(rate_limit={"calls": 10, "period": 1e-300}),
            "tenants.acme.platforms.benevity.rate_limit.period",
            id="rate-limit-period-too-short",
        ),
        pytest.param(
            platform(options={"tolerance": math.nan}),
            "tenants.acme.platforms.benevity.options.tolerance",
            id="webhook-tolerance-nan",
        ),
        pytest.param(
            platform(options={"future_tolerance": -1}),
            "tenants.acme.platforms.benevity.options.future_tolerance",
            id="webhook-future-tolerance-negative",
        ),
        pytest.param(
            {**platform(), "runtime": {"hook_timeout": 0}},
            "runtime.hook_timeout",
            id="hook-timeout-zero",
        ),
        pytest.param(
            {**platform(), "runtime": {"hook_timeout": math.inf}},
            "runtime.hook_timeout",
            id="hook-timeout-inf",
        ),
        pytest.param(
            platform(options={"tolerance": "300"}),
            "tenants.acme.platforms.benevity.options.tolerance",
            id="webhook-tolerance-text",
        ),
    ],
)
def test_bad_setting_names_key(data: dict[str, Any], key: str, tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as caught:
        parse_config(data, base_dir=tmp_path)

    assert caught.value.key == key
    assert key in str(caught.value)


def _with_store_key(name: str) -> dict[str, Any]:
    data = platform()
    data["store"] = {"key_env": name}
    return data


def _with_tenant_key(name: str) -> dict[str, Any]:
    data = platform()
    data["tenants"]["acme"]["key_env"] = name
    return data


@pytest.mark.parametrize(
    ("data", "key"),
    [
        pytest.param(
            platform(credentials={"client_secret": "hunter2 literal"}),
            "tenants.acme.platforms.benevity.credentials.client_secret",
            id="credential-with-space",
        ),
        pytest.param(
            platform(credentials={"client_secret": "sk_live_hunter2abcdef1234"}),
            "tenants.acme.platforms.benevity.credentials.client_secret",
            id="credential-like-a-name",
        ),
        pytest.param(
            platform(webhook_secret_envs=["whsec_hunter2S3cr3t"]),
            "tenants.acme.platforms.benevity.webhook_secret_envs[0]",
            id="webhook-secret",
        ),
        pytest.param(
            _with_tenant_key("hunter2Base64Key"), "tenants.acme.key_env", id="tenant"
        ),
        pytest.param(_with_store_key("hunter2_key"), "store.key_env", id="store"),
    ],
)
def test_literal_secret_never_echoed(
    data: dict[str, Any], key: str, tmp_path: Path
) -> None:
    with pytest.raises(ConfigError) as caught:
        parse_config(data, base_dir=tmp_path)

    assert caught.value.key == key
    assert "hunter2" not in str(caught.value)


def test_missing_file_says_how_to_fix(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="--config"):
        load_config(tmp_path / "absent.toml")


def test_invalid_toml_is_config_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="not valid TOML"):
        load_config(write(tmp_path, "[tenants\n"))


def test_unknown_tenant_lists_known(tmp_path: Path) -> None:
    config = load_config(write(tmp_path, VALID))

    with pytest.raises(ConfigError, match="configured: acme"):
        config.tenant("globex")


@pytest.mark.parametrize(
    ("changes", "key"),
    [
        pytest.param(
            {"base_url": "https://user:pw@x.example"},
            "tenants.acme.platforms.benevity.base_url",
            id="userinfo",
        ),
        pytest.param(
            {"base_url": "https://x.example/?access_token=abc"},
            "tenants.acme.platforms.benevity.base_url",
            id="query",
        ),
        pytest.param(
            {"retrys": {"max_attempts": 2}},
            "tenants.acme.platforms.benevity.retrys",
            id="unknown-platform-key",
        ),
        pytest.param(
            {"base_url": "http://benevity.example"},
            "tenants.acme.platforms.benevity.base_url",
            id="plain-http-to-remote-host",
        ),
        pytest.param(
            {"base_url": "http://10.0.0.7:8080", "allow_http": "yes"},
            "tenants.acme.platforms.benevity.allow_http",
            id="allow-http-not-boolean",
        ),
    ],
)
def test_platform_setting_rejected(
    changes: dict[str, Any], key: str, tmp_path: Path
) -> None:
    with pytest.raises(ConfigError) as caught:
        parse_config(platform(**changes), base_dir=tmp_path)

    assert caught.value.key == key
    assert "pw" not in str(caught.value)
    assert "abc" not in str(caught.value)


@pytest.mark.parametrize(
    ("base_url", "allow_http"),
    [
        pytest.param("http://127.0.0.1:8080", False, id="loopback-v4"),
        pytest.param("http://127.9.9.9", False, id="loopback-range"),
        pytest.param("http://[::1]:8080", False, id="loopback-v6"),
        pytest.param("http://LOCALHOST:8080", False, id="localhost"),
        pytest.param("http://proxy.internal:8080", True, id="opted-in"),
        pytest.param("https://benevity.example", False, id="https"),
    ],
)
def test_base_url_accepted(base_url: str, allow_http: bool, tmp_path: Path) -> None:
    data = platform(base_url=base_url)
    if allow_http:
        data["tenants"]["acme"]["platforms"]["benevity"]["allow_http"] = True

    config = parse_config(data, base_dir=tmp_path)

    assert config.tenants["acme"].platforms["benevity"].base_url == base_url


def test_plain_http_error_names_host_and_fix(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as caught:
        parse_config(platform(base_url="http://benevity.example/v1"), base_dir=tmp_path)

    assert "'benevity.example'" in str(caught.value)
    assert "use https://, or set allow_http = true" in str(caught.value)


def test_unknown_top_level_key(tmp_path: Path) -> None:
    data = {**platform(), "tenant": {}}

    with pytest.raises(ConfigError) as caught:
        parse_config(data, base_dir=tmp_path)

    assert caught.value.key == "tenant"


def test_type_error_reads_well(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as caught:
        parse_config(platform(enabled="yes"), base_dir=tmp_path)

    assert "set it to true or false" in str(caught.value)


@pytest.mark.parametrize(
    ("name", "quoted"),
    [
        pytest.param("ACME_CLIENT_SECRET", True, id="words"),
        # Upper-case letters and digits pass as a name, but may be a pasted
        # access key, so the message names the setting only.
        pytest.param("QX7LK2P9ZR4TBN8WJ3MV", False, id="secret-like"),
    ],
)
def test_unset_variable_quoted_if_words(
    tmp_path: Path, name: str, quoted: bool
) -> None:
    config = parse_config(
        platform(credentials={"client_secret": name}), base_dir=tmp_path
    )

    with pytest.raises(ConfigError) as caught:
        config.settings("acme", "benevity", EnvSecrets({}))

    message = str(caught.value)
    assert (name in message) is quoted
    assert "credentials.client_secret is not set" in message


@pytest.mark.parametrize(
    ("redaction", "key", "shown", "closest"),
    [
        pytest.param(
            {"deny": ["employe_email"]},
            "redaction.deny[0]",
            "'employe_email'",
            "'employee_email'",
            id="misspelled-deny",
        ),
        pytest.param(
            {"deny": ["employee_id", "Employee_Email"]},
            "redaction.deny[1]",
            "'Employee_Email'",
            "'employee_email'",
            id="wrong-case",
        ),
        pytest.param(
            {"allow": ["employee_nmae"]},
            "redaction.allow[0]",
            "'employee_nmae'",
            "'employee_name'",
            id="misspelled-allow",
        ),
        pytest.param(
            {"allow": ["donor.email"]},
            "redaction.allow[0]",
            "'donor.email'",
            None,
            id="payload-path",
        ),
        pytest.param(
            {"deny": ["description"]},
            "redaction.deny[0]",
            "'description'",
            None,
            id="not-personal",
        ),
        pytest.param(
            {"denny": ["employee_email"]},
            "redaction.denny",
            None,
            "'deny'",
            id="unknown-key",
        ),
    ],
)
def test_redaction_typo_rejected(
    redaction: dict[str, Any],
    key: str,
    shown: str | None,
    closest: str | None,
    tmp_path: Path,
) -> None:
    with pytest.raises(ConfigError) as caught:
        parse_config(platform(redaction=redaction), base_dir=tmp_path)

    message = str(caught.value)
    full_key = f"tenants.acme.platforms.benevity.{key}"
    assert caught.value.key == full_key
    assert message.startswith(f"{full_key} is ")
    if shown is not None:
        assert f"is {shown}, which is not a personal field" in message
        assert (
            "use one of employee_email, employee_id, employee_name, employee_phone"
            in message
        )
    else:
        assert "use one of allow, deny" in message
    if closest is not None:
        assert f"(closest: {closest})" in message
    else:
        assert "closest" not in message


def test_redaction_lists_parse(tmp_path: Path) -> None:
    redaction = {"deny": ["employee_email"], "allow": ["employee_name"]}

    config = parse_config(platform(redaction=redaction), base_dir=tmp_path)

    benevity = config.tenants["acme"].platforms["benevity"]
    assert benevity.deny_fields == {"employee_email"}
    assert benevity.allow_fields == {"employee_name"}


def test_redaction_field_in_both_lists_rejected(tmp_path: Path) -> None:
    redaction = {"deny": ["employee_email"], "allow": ["employee_email"]}

    with pytest.raises(ConfigError) as caught:
        parse_config(platform(redaction=redaction), base_dir=tmp_path)

    message = str(caught.value)
    assert caught.value.key == "tenants.acme.platforms.benevity.redaction.allow"
    assert "names employee_email, which deny names too" in message
    assert "keep each field in one of the two lists" in message


NAN = float("nan")
INF = float("inf")


@pytest.mark.parametrize(
    ("changes", "key", "shown"),
    [
        pytest.param(
            {"retry": {"deadline": NAN}}, "retry.deadline", "nan", id="deadline-nan"
        ),
        pytest.param(
            {"retry": {"deadline": INF}}, "retry.deadline", "inf", id="deadline-inf"
        ),
        pytest.param(
            {"retry": {"base_delay": NAN}},
            "retry.base_delay",
            "nan",
            id="base-delay-nan",
        ),
        pytest.param(
            {"retry": {"max_delay": NAN}}, "retry.max_delay", "nan", id="max-delay-nan"
        ),
        pytest.param(
            {"retry": {"max_delay": -INF}},
            "retry.max_delay",
            "-inf",
            id="max-delay-minus-inf",
        ),
        pytest.param(
            {"breaker": {"reset_timeout": INF}},
            "breaker.reset_timeout",
            "inf",
            id="reset-timeout-inf",
        ),
        pytest.param(
            {"breaker": {"reset_timeout": NAN}},
            "breaker.reset_timeout",
            "nan",
            id="reset-timeout-nan",
        ),
        pytest.param(
            {"rate_limit": {"calls": 10, "period": NAN}},
            "rate_limit.period",
            "nan",
            id="period-nan",
        ),
        pytest.param(
            {"rate_limit": {"calls": 10, "period": INF}},
            "rate_limit.period",
            "inf",
            id="period-inf",
        ),
    ],
)
def test_non_finite_seconds_rejected(
    changes: dict[str, Any], key: str, shown: str, tmp_path: Path
) -> None:
    with pytest.raises(ConfigError) as caught:
        parse_config(platform(**changes), base_dir=tmp_path)

    full_key = f"tenants.acme.platforms.benevity.{key}"
    assert caught.value.key == full_key
    assert str(caught.value) == (
        f"{full_key} is {shown}; set it to a finite number of seconds above 0."
    )


@pytest.mark.parametrize(
    ("changes", "key"),
    [
        pytest.param(
            {"retry": {"max_attempts": NAN}}, "retry.max_attempts", id="attempts-nan"
        ),
        pytest.param(
            {"retry": {"max_attempts": 2.5}},
            "retry.max_attempts",
            id="attempts-fraction",
        ),
        pytest.param(
            {"breaker": {"threshold": INF}}, "breaker.threshold", id="threshold-inf"
        ),
        pytest.param(
            {"rate_limit": {"calls": INF, "period": 60}},
            "rate_limit.calls",
            id="calls-inf",
        ),
    ],
)
def test_count_must_be_whole(changes: dict[str, Any], key: str, tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as caught:
        parse_config(platform(**changes), base_dir=tmp_path)

    full_key = f"tenants.acme.platforms.benevity.{key}"
    assert caught.value.key == full_key
    assert "set it to a whole number" in str(caught.value)


@pytest.mark.parametrize(
    ("changes", "key"),
    [
        pytest.param(
            {"retry": {"max_attempts": 0}}, "retry.max_attempts", id="attempts"
        ),
        pytest.param(
            {"rate_limit": {"calls": 0, "period": 60}}, "rate_limit.calls", id="calls"
        ),
        pytest.param(
            {"rate_limit": {"calls": 10, "period": 0}}, "rate_limit.period", id="period"
        ),
    ],
)
def test_zero_setting_names_its_key(
    changes: dict[str, Any], key: str, tmp_path: Path
) -> None:
    with pytest.raises(ConfigError) as caught:
        parse_config(platform(**changes), base_dir=tmp_path)

    full_key = f"tenants.acme.platforms.benevity.{key}"
    assert caught.value.key == full_key
    assert str(caught.value).startswith(f"{full_key} is 0;")


def test_unknown_retry_setting_lists_names(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as caught:
        parse_config(platform(retry={"deadlines": 30}), base_dir=tmp_path)

    message = str(caught.value)
    assert "use one of base_delay, deadline, max_attempts, max_delay" in message
    assert "(closest: 'deadline')" in message
    assert "[" not in message


def test_unknown_rate_limit_key_lists_names(tmp_path: Path) -> None:
    rate_limit = {"calls": 10, "period": 60, "burst": 3}

    with pytest.raises(ConfigError) as caught:
        parse_config(platform(rate_limit=rate_limit), base_dir=tmp_path)

    assert str(caught.value) == (
        "tenants.acme.platforms.benevity.rate_limit.burst is not a known "
        "setting; use one of calls, period."
    )


def test_bool_shown_as_toml(tmp_path: Path) -> None:
    rate_limit = {"calls": True, "period": 60}

    with pytest.raises(ConfigError) as caught:
        parse_config(platform(rate_limit=rate_limit), base_dir=tmp_path)

    assert str(caught.value) == (
        "tenants.acme.platforms.benevity.rate_limit.calls is true; "
        "set it to a whole number."
    )


def test_key_with_space_is_quoted(tmp_path: Path) -> None:
    data = {"tenants": {"a b": {"key_env": "K", "platforms": {}}}}

    with pytest.raises(ConfigError) as caught:
        parse_config(data, base_dir=tmp_path)

    assert caught.value.key == 'tenants."a b".platforms'
    assert str(caught.value).startswith('tenants."a b".platforms ')
