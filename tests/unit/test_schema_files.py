"""Locating the SQL and planning migrations (no database)."""

from __future__ import annotations

import pytest

from teguh import schema
from teguh.errors import SchemaError


def test_schema_version_matches_teguh_sql() -> None:
    assert f"select '{schema.SCHEMA_VERSION}'::text" in schema.sql_text()


def test_version_1_migrates_along_the_chain() -> None:
    assert [p.name for p in schema.migration_path("1")] == ["1-2.sql", "2-3.sql"]
    assert [p.name for p in schema.migration_path("2")] == ["2-3.sql"]


def test_sql_dir_holds_teguh_sql() -> None:
    directory = schema.sql_dir()
    assert (directory / "teguh.sql").is_file()
    assert "teguh" in schema.sql_text()


def test_no_migration_needed_at_the_current_version() -> None:
    assert schema.migration_path(schema.SCHEMA_VERSION) == []


def test_missing_migration_is_reported() -> None:
    with pytest.raises(SchemaError, match="no migration from teguh schema version 0"):
        schema.migration_path("0")
