"""The ``pytest11`` entry point: inert unless a project turns the fixtures on.

Installing teguh must not change anybody's test run, so this module only adds
the ini option ``teguh_testing``; ``teguh_testing = true`` (or ``-p
teguh.testing``, or ``pytest_plugins = ["teguh.testing"]`` in the top
conftest.py) loads `teguh.testing`'s fixtures.
"""

from __future__ import annotations

import pytest


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addini(
        "teguh_testing",
        type="bool",
        default=False,
        help="load teguh.testing's fixtures (teguh_dsn, teguh_app, teguh_clock, teguh_drain)",
    )


def pytest_configure(config: pytest.Config) -> None:
    if config.getini("teguh_testing") and not config.pluginmanager.has_plugin("teguh.testing"):
        config.pluginmanager.import_plugin("teguh.testing")
