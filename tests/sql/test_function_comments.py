"""Every public function of schema teguh says what it does and which errors it raises."""

from __future__ import annotations

import itertools
import re
from typing import Any

import psycopg

from tests.conftest import SCHEMA_FILE


def test_every_public_function_has_a_description(conn: psycopg.Connection[Any]) -> None:
    """`comment on function`, for psql's \\df+."""
    undescribed = conn.execute(
        """select p.oid::regprocedure::text from pg_proc p
            where p.pronamespace = 'teguh'::regnamespace and p.proname !~ '^_'
              and obj_description(p.oid, 'pg_proc') is null
            order by 1"""
    ).fetchall()
    assert undescribed == [], "add `comment on function` for these in schema/teguh.sql"


def test_every_public_function_has_a_comment_above_it() -> None:
    lines = SCHEMA_FILE.read_text(encoding="utf-8").splitlines()
    uncommented = [
        line
        for above, line in itertools.pairwise(lines)
        if re.match(r"create (or replace )?function teguh\.[a-z]", line)
        and not above.startswith("--")
    ]
    assert uncommented == [], "say what these do and which errors they raise, above them"
