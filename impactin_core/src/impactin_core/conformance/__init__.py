"""The connector conformance suite, a pytest plugin shipped with impactin-core.

pytest loads this plugin through the ``pytest11`` entry point, and it does
nothing until a test class subclasses ``ConformanceSuite`` or the command
line names a platform. A connector enables the suite in its own tests::

    from impactin_core.conformance import ConformanceSuite, ConformanceTarget

    class TestConformance(ConformanceSuite):
        target = ConformanceTarget(platform="acme")

``ConformanceTarget(options={...})`` sets connector options, each of which
the connector must accept (the template lists them in ``OPTIONS``). The
suite also runs from the command line, with ``--impactin-option KEY=VALUE``
for connector options::

    pytest -p impactin_core.conformance --impactin-platform=acme
    impactin conformance acme
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

import attrs
import pytest

from ._target import ConformanceTarget, parse_option_pairs

if TYPE_CHECKING:
    from ._suite import ConformanceSuite

__all__ = [
    "CLI_SUITE_PATH",
    "ConformanceSuite",
    "ConformanceTarget",
    "conformance_target",
    "pytest_addoption",
    "pytest_configure",
    "pytest_generate_tests",
]

#: The test module that runs the suite for the platform named on the command line.
CLI_SUITE_PATH = Path(__file__).with_name("cli_suite.py")

_PLATFORM_OPTION = "impactin_platform"
_OPTION_OPTION = "impactin_option"
_TIMEOUT_OPTION = "impactin_rule_timeout"


def __getattr__(name: str) -> Any:
    if name == "ConformanceSuite":
        from ._suite import ConformanceSuite

        return ConformanceSuite
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("impactin", "impactin connector conformance")
    group.addoption(
        "--impactin-platform",
        dest=_PLATFORM_OPTION,
        default=None,
        help="platform id whose installed connector the conformance suite tests",
    )
    group.addoption(
        "--impactin-option",
        dest=_OPTION_OPTION,
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="connector option for the conformance runs (repeatable)",
    )
    group.addoption(
        "--impactin-rule-timeout",
        dest=_TIMEOUT_OPTION,
        type=float,
        default=None,
        metavar="SECONDS",
        help="seconds each conformance rule may take (default: the target's "
        "rule_timeout, 60)",
    )


def pytest_configure(config: pytest.Config) -> None:
    platform = config.getoption(_PLATFORM_OPTION)
    suite = str(CLI_SUITE_PATH)
    if platform and suite not in config.args:
        config.args.append(suite)


def _target_for(cls: type | None, config: pytest.Config) -> ConformanceTarget | None:
    target = getattr(cls, "target", None)
    if not isinstance(target, ConformanceTarget):
        platform = config.getoption(_PLATFORM_OPTION)
        if not platform:
            return None
        options = parse_option_pairs(config.getoption(_OPTION_OPTION))
        target = ConformanceTarget(platform=platform, options=options)
    timeout = config.getoption(_TIMEOUT_OPTION)
    if timeout is not None:
        target = attrs.evolve(target, rule_timeout=timeout)
    return target


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    """Run every rule once per transport of the target platform."""
    if "transport" not in metafunc.fixturenames or metafunc.cls is None:
        return
    from ._suite import ConformanceSuite

    if not issubclass(metafunc.cls, ConformanceSuite):
        return
    target = _target_for(metafunc.cls, metafunc.config)
    transports: tuple[str, ...] = ("none",)
    if target is not None:
        transports = target.transports or _declared_transports(target.platform)
    metafunc.parametrize("transport", transports, scope="function")


def _declared_transports(platform: str) -> tuple[str, ...]:
    from .._errors import PluginError
    from ._harness import plugin_host

    try:
        return plugin_host().platform(platform).info.transports
    except PluginError:
        return ("missing",)


@pytest.fixture
def conformance_target(request: pytest.FixtureRequest) -> ConformanceTarget:
    """The platform the conformance suite tests, from the class or the command line."""
    target = _target_for(request.cls, request.config)
    if target is None:
        pytest.skip(
            "no platform to test: set ConformanceSuite.target or pass "
            "--impactin-platform=NAME"
        )
    from .._errors import PluginError
    from ._harness import plugin_host

    try:
        plugin_host().platform(target.platform)
    except PluginError as exc:
        pytest.fail(str(exc))
    return target
