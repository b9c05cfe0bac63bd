"""Per-key concurrency limits under attack: wildcards in keys, isolation levels, a removed
limit waking the workers, and claimers racing with no barrier between them."""

from __future__ import annotations

import random
import threading
from collections import Counter
from typing import Any

import psycopg
import pytest
from hypothesis import example, given
from hypothesis import strategies as st

from tests.sql.conftest import Engine, raises_sqlstate
from tests.sql.test_concurrency_limits import keyed, limit, running

LEVELS = {
    "repeatable read": psycopg.IsolationLevel.REPEATABLE_READ,
    "serializable": psycopg.IsolationLevel.SERIALIZABLE,
}


def notified(conn: psycopg.Connection[Any]) -> bool:
    return any(True for _ in conn.notifies(timeout=0.2, stop_after=1))


@pytest.mark.parametrize(
    ("pattern", "key"),
    [
        ("a%*", "abc"),  # % is no LIKE wildcard
        ("a_*", "abc"),  # nor is _
        ("a_b", "axb"),
        ("a\\*", "abc"),  # nor does \ escape anything
        ("é*", "e"),
        ("tenant:*", "tenant"),  # a prefix needs the whole prefix
    ],
)
def test_pattern_characters_in_a_limit_are_literal(eng: Engine, pattern: str, key: str) -> None:
    limit(eng, pattern, 0)
    keyed(eng, key, 2)
    assert len(eng.claim(5)) == 2  # the limit does not match this key


@pytest.mark.parametrize(
    "key", ["a%b", "a_b", "a*b", "*a", "a**b", "a\\b", "ключ:7", "  ", "🙂" * 63 + "xxx", "x" * 255]
)
def test_odd_keys_are_limited_exactly_and_by_their_prefix(eng: Engine, key: str) -> None:
    limit(eng, key, 1)
    keyed(eng, key, 3)
    assert len(eng.claim(5)) == 1
    limit(eng, key, None)
    limit(eng, key[:-1] + "*", 2)  # a prefix of all but the last character
    assert len(eng.claim(5)) == 1  # one more: two in flight
    assert running(eng) == {key: 2}


def test_removing_a_limit_wakes_the_workers(eng: Engine, make_conn: Any) -> None:
    listener = make_conn()
    listener.execute("listen teguh_q")
    limit(eng, "k", 0)
    keyed(eng, "k", 2)
    assert eng.one("select teguh.next_wake_at('q')") is None  # held: nothing is due
    notified(listener)  # drain
    limit(eng, "k", None)  # null removes the limit, as drop_concurrency_limit does
    assert notified(listener)  # the held tasks are claimable now: say so
    assert len(eng.claim(5)) == 2


def test_removing_a_limit_that_is_not_there_notifies_nobody(eng: Engine, make_conn: Any) -> None:
    listener = make_conn()
    listener.execute("listen teguh_q")
    limit(eng, "k", None)
    assert not notified(listener)


@pytest.mark.parametrize("level", ["repeatable read", "serializable"])
def test_other_isolation_levels_still_claim_what_needs_no_count(
    eng: Engine, make_conn: Any, level: str
) -> None:
    limit(eng, "k", 1)
    keyed(eng, "k", 1, delay_seconds=60)  # a keyed task, not ready
    keyed(eng, "free", 1)  # a keyed task with no limit
    plain = keyed(eng, None, 1)
    conn = make_conn(autocommit=False)
    conn.isolation_level = LEVELS[level]
    other = Engine(conn, "q")
    claimed = [row[1] for row in other.claim(5)]
    other.conn.commit()
    assert len(claimed) == 2 and plain[0] in claimed  # as before limits existed


@pytest.mark.parametrize("level", ["repeatable read", "serializable"])
def test_other_isolation_levels_refuse_a_limited_key_and_change_nothing(
    eng: Engine, make_conn: Any, level: str
) -> None:
    limit(eng, "k", 1)
    keyed(eng, "k", 2)
    conn = make_conn(autocommit=False)
    conn.isolation_level = LEVELS[level]
    other = Engine(conn, "q")
    with raises_sqlstate("0A000", "READ COMMITTED"):
        other.claim(5)
    other.conn.rollback()
    assert running(eng) == {}
    assert eng.one("select count(*) from teguh.p_q") == 2


def test_claimers_with_no_barrier_never_exceed_a_limit(eng: Engine, make_engine: Any) -> None:
    """Claimers and completers run freely; a watcher snapshots the committed counts."""
    limit(eng, "k", 3)
    limit(eng, "t:*", 1)
    for key in ["k", "t:1", "t:2", None]:
        keyed(eng, key, 150)
    workers = [make_engine() for _ in range(5)]
    watcher = make_engine()
    errors: list[BaseException] = []
    stop = threading.Event()
    peak: Counter[str | None] = Counter()

    def work(i: int) -> None:
        rng = random.Random(i)
        held: list[Any] = []
        try:
            for _ in range(120):
                held += [row[0] for row in workers[i].claim(rng.randint(1, 3), worker=f"w{i}")]
                rng.shuffle(held)
                done = rng.randint(0, len(held))
                for run in held[:done]:
                    workers[i].complete(run)
                held = held[done:]
        except BaseException as exc:  # surfaced below
            errors.append(exc)

    def watch() -> None:
        try:
            while not stop.is_set():
                now = running(watcher)
                peak.update({k: v - peak[k] for k, v in now.items() if v > peak[k]})
        except BaseException as exc:  # surfaced below
            errors.append(exc)

    threads = [threading.Thread(target=work, args=(i,)) for i in range(len(workers))]
    spy = threading.Thread(target=watch)
    spy.start()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    stop.set()
    spy.join()
    assert not errors, errors
    assert peak["k"] <= 3 and peak["t:1"] <= 1 and peak["t:2"] <= 1, peak
    assert peak["k"] == 3  # reached, not just respected


def test_a_claim_reads_only_the_limits_that_match_its_keys(eng: Engine) -> None:
    """Per-tenant exact limits: a claim must not read every limit for every key."""
    eng.conn.execute(
        "select teguh.set_concurrency_limit('q', 'tenant:' || i, 1) from generate_series(1, 400) i"
    )
    limit(eng, "tenant:*", 1)
    limit(eng, "*", 5)
    eng.conn.execute(
        "select count(*) from generate_series(1, 200) i cross join lateral teguh.spawn_task("
        "'q', 't', to_jsonb(i), jsonb_build_object('concurrency_key', 'tenant:' || i))"
    )
    eng.conn.execute("begin")
    claimed = eng.claim(3)
    read = eng.one(
        "select coalesce(sum(idx_tup_fetch + seq_tup_read), 0)::int"
        " from pg_stat_xact_user_tables"
        " where schemaname = 'teguh' and relname = 'concurrency_limits'"
    )
    eng.conn.execute("commit")
    assert len(claimed) == 3
    # one pass over the queue's 402 limits (the lengths of its prefixes), then each of
    # the 200 keys matches 3 (its own, tenant:*, *) by a probe each: not the 402 rows
    # of the queue for every key (80 400 before)
    assert read <= 402 + 200 * 3, read


def governing(limits: dict[str, int], key: str) -> int | None:
    """The oracle: the exact key's limit, else the longest prefix's (a key ending
    in "*" is a prefix pattern, so only prefixes can govern it)."""
    if key in limits and not key.endswith("*"):
        return limits[key]
    best = [(len(p), n) for p, n in limits.items() if p.endswith("*") and key.startswith(p[:-1])]
    return max(best)[1] if best else None


TEXT = st.text(alphabet="a*%_\\é", min_size=1, max_size=4)


@given(limits=st.dictionaries(TEXT, st.integers(0, 3), max_size=6), key=TEXT)
@example(limits={"a*": 1, "a**": 2}, key="a*")  # a key ending in "*": its longest prefix wins
def test_generated_keys_find_the_limit_the_docs_describe(
    eng: Engine, limits: dict[str, int], key: str
) -> None:
    eng.conn.execute("delete from teguh.concurrency_limits")
    for table in ["r_q", "p_q", "t_q"]:
        eng.conn.execute(f"delete from teguh.{table}")  # test-only identifiers
    for pattern, n in limits.items():
        limit(eng, pattern, n)
    want = governing(limits, key)
    assert eng.one("select teguh._concurrency_limit('q', %s)", key) == want
    keyed(eng, key, 4)
    assert len(eng.claim(5)) == (4 if want is None else min(want, 4))  # the claim agrees
