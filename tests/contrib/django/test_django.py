"""TeguhBackend end to end: a Django view enqueues in atomic(), the worker command runs it."""

from __future__ import annotations

import signal
import subprocess
import uuid
import warnings
from datetime import timedelta
from typing import Any

import pytest

from tests.contrib.django.conftest import manage
from tests.helpers import wait_for

pytestmark = pytest.mark.usefixtures("django_project")


def _finished(task: Any, result_id: str, timeout: float = 30) -> Any:
    def done() -> Any:
        result = task.get_result(result_id)
        return result if result.is_finished else None

    return wait_for(done, timeout=timeout, message=f"task {result_id} finished")


def _task_rows(where: str, *params: Any) -> list[tuple[Any, ...]]:
    from django.db import connection

    with connection.cursor() as cursor:
        cursor.execute(f"select task_id, state from teguh.t_default where {where}", params)
        return list(cursor.fetchall())


def test_view_commit_runs_the_task(worker_process: subprocess.Popen[str]) -> None:
    from django.tasks import TaskResultStatus
    from django.test import Client
    from shop.models import Order, TaskEvent
    from shop.tasks import fulfil

    response = Client().post("/orders/", {"email": "ada@example.com"})
    assert response.status_code == 200
    body = response.json()
    result = _finished(fulfil, body["task_id"])
    assert result.status == TaskResultStatus.SUCCESSFUL
    assert result.return_value == {
        "order_id": body["order_id"],
        "attempt": 1,
        "teguh_task_id": body["task_id"],
    }
    assert Order.objects.get(pk=body["order_id"]).fulfilled
    assert result.errors == []
    assert len(result.worker_ids) == 1 and result.worker_ids[0]
    assert result.enqueued_at <= result.started_at <= result.finished_at
    assert result.last_attempted_at == result.started_at or result.last_attempted_at
    assert result.args == [body["order_id"]] and result.kwargs == {}
    events = wait_for(lambda: list(TaskEvent.objects.filter(task_id=body["task_id"])))
    assert sorted((e.kind, e.status) for e in events) == [
        ("finished", "SUCCESSFUL"),
        ("started", "RUNNING"),
    ]


def test_view_rollback_leaves_no_task() -> None:
    from django.test import Client
    from shop.models import Order

    before = Order.objects.count()
    client = Client(raise_request_exception=False)
    response = client.post("/orders/", {"email": "rollback@example.com", "fail": "1"})
    assert response.status_code == 500
    assert Order.objects.count() == before
    assert _task_rows("params->'kwargs' = '{}' and params->'args' = %s::jsonb", "[999999]") == []
    # Nothing in the queue mentions the rolled-back order's email: count every task of fulfil
    # whose order row does not exist.
    orphans = _task_rows(
        "task_name = 'shop.tasks.fulfil' and not exists "
        "(select 1 from shop_order o where o.id = (params->'args'->>0)::bigint)"
    )
    assert orphans == []


def test_failing_task_is_failed_with_one_error_per_attempt(
    worker_process: subprocess.Popen[str],
) -> None:
    from django.tasks import TaskResultStatus
    from shop.tasks import explode

    enqueued = explode.enqueue("kaboom")
    result = _finished(explode, enqueued.id)
    assert result.status == TaskResultStatus.FAILED
    assert len(result.errors) == 2 == result.attempts
    for error in result.errors:
        assert error.exception_class is ValueError
        assert "kaboom" in error.traceback
    with pytest.raises(ValueError, match="failed"):
        _ = result.return_value


def test_async_task_and_a_second_queue(worker_process: subprocess.Popen[str]) -> None:
    from shop.tasks import add, send_email

    total = add.enqueue(2, b=3)
    mail = send_email.enqueue("bob@example.com", subject="hi")
    assert _finished(add, total.id).return_value == 5
    assert _finished(send_email, mail.id).return_value == "sent 'hi' to bob@example.com"


def test_enqueue_options_map_to_teguh() -> None:
    from django.tasks import default_task_backend
    from django.utils import timezone
    from shop.tasks import send_email

    from teguh.contrib.django._conf import raw_connection

    later = timezone.now() + timedelta(hours=1)
    result = send_email.using(priority=-20, run_after=later, max_attempts=3).enqueue("x@y")
    client = default_task_backend.client
    info = client.get_task("emails", uuid.UUID(result.id), conn=raw_connection("default"))
    assert info is not None
    assert (info.task_name, info.priority, info.max_attempts) == ("shop.tasks.send_email", -20, 3)
    assert info.params == {"args": ["x@y"], "kwargs": {}}
    fetched = send_email.get_result(result.id)
    assert fetched.status == "READY" and fetched.task.queue_name == "emails"
    keyed = send_email.using(idempotency_key="once").enqueue("z@y")
    assert send_email.using(idempotency_key="once").enqueue("z@y").id == keyed.id
    limited = send_email.using(concurrency_key="tenant:1").enqueue("k@y")
    with raw_connection("default").cursor() as cursor:
        cursor.execute(
            "select concurrency_key from teguh.t_emails where task_id = %s",
            (uuid.UUID(limited.id),),
        )
        assert cursor.fetchall() == [("tenant:1",)]


def test_enqueue_inside_atomic_is_visible_to_the_transaction_only() -> None:
    from django.db import transaction
    from django.tasks import TaskResultStatus
    from django.tasks.exceptions import TaskResultDoesNotExist
    from shop.tasks import fulfil

    with pytest.raises(RuntimeError), transaction.atomic():  # noqa: PT012
        result = fulfil.enqueue(424242)
        assert fulfil.get_result(result.id).status == TaskResultStatus.READY
        raise RuntimeError("roll back")
    with pytest.raises(TaskResultDoesNotExist):
        fulfil.get_result(result.id)


def test_unknown_results() -> None:
    from django.tasks import default_task_backend
    from django.tasks.exceptions import TaskResultDoesNotExist

    for bad in (str(uuid.uuid4()), "not-a-uuid"):
        with pytest.raises(TaskResultDoesNotExist):
            default_task_backend.get_result(bad)


def test_invalid_enqueue_is_refused_before_writing() -> None:
    from django.tasks.exceptions import InvalidTask
    from shop.tasks import send_email

    with pytest.raises(InvalidTask, match="max_attempts"):
        send_email.using(max_attempts=0)
    with pytest.raises(TypeError):
        send_email.enqueue(object())


def test_checks(django_project: dict[str, Any]) -> None:
    from django.conf import settings
    from django.core import checks
    from django.test import override_settings

    before = {m.id for m in django_project["checks_before_migrate"]}
    assert "teguh.W101" in before  # schema missing: a warning, so migrate still ran
    assert not [m for m in checks.run_checks(databases=["default"]) if m.id.startswith("teguh")]

    tasks = {
        "default": {
            "BACKEND": "teguh.contrib.django.TeguhBackend",
            "QUEUES": ["default", "not_created", "Bad-Name"],
        },
        "other": {"BACKEND": "teguh.contrib.django.TeguhBackend", "OPTIONS": {"DATABASE": "lite"}},
        "nowhere": {"BACKEND": "teguh.contrib.django.TeguhBackend", "OPTIONS": {"DATABASE": "x"}},
    }
    databases = {
        "default": settings.DATABASES["default"],
        "lite": {"ENGINE": "django.db.backends.sqlite3", "NAME": ":memory:"},
    }
    with warnings.catch_warnings():
        # Django warns that overriding DATABASES is risky; the check only reads it.
        warnings.simplefilter("ignore", UserWarning)
        with override_settings(TASKS=tasks, DATABASES=databases):
            found = {m.id: m.msg for m in checks.run_checks(databases=["default"])}
    assert "not_created" in found["teguh.W103"]
    assert "Bad-Name" in found["teguh.E004"]
    assert "sqlite3" in found["teguh.E002"]
    assert "'x'" in found["teguh.E001"]


def test_manage_py_test(django_env: dict[str, str]) -> None:
    proc = manage(django_env, "test", "shop", "--noinput", "-v", "2")
    out, _ = proc.communicate(timeout=180)
    assert proc.returncode == 0, out
    assert "Ran 4 tests" in out
    assert "Destroying test database" in out


def test_runserver_autoreloader_runs_exactly_one_in_process_worker(
    django_env: dict[str, str],
) -> None:
    import socket
    import urllib.request

    from shop.tasks import send_email

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    proc = manage({**django_env, "TEGUH_DJANGO_IN_PROCESS": "1"}, "runserver", f"127.0.0.1:{port}")

    def up() -> bool:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/health/", timeout=2) as r:
                return r.status == 200
        except OSError:
            return False

    try:
        wait_for(up, timeout=60, interval=0.2)
        up()
        mail = send_email.enqueue("in-process@example.com")
        assert _finished(send_email, mail.id).return_value.startswith("sent")
    finally:
        proc.send_signal(signal.SIGINT)
        out, _ = proc.communicate(timeout=30)
    started = [line for line in out.splitlines() if "in-process worker started" in line]
    assert len(started) == 1, out


def test_cancelled_task_is_failed_with_a_cancellation_error() -> None:
    from django.tasks import TaskResultStatus, default_task_backend
    from django.tasks.signals import task_enqueued
    from django.utils import timezone
    from shop.tasks import send_email

    from teguh.contrib.django._conf import raw_connection

    seen: list[Any] = []

    def receiver(sender: Any, task_result: Any, **kwargs: Any) -> None:
        seen.append((sender, task_result.id))

    task_enqueued.connect(receiver)
    try:
        later = send_email.using(run_after=timezone.now() + timedelta(days=1)).enqueue("c@x")
    finally:
        task_enqueued.disconnect(receiver)
    from teguh.contrib.django import TeguhBackend

    assert seen == [(TeguhBackend, later.id)]
    available_at = _task_rows_in("emails", "available_at", later.id)
    assert available_at > timezone.now() + timedelta(hours=23)
    default_task_backend.client.cancel_task(
        "emails", uuid.UUID(later.id), conn=raw_connection("default")
    )
    result = send_email.get_result(later.id)
    assert result.status == TaskResultStatus.FAILED
    assert [e.exception_class_path for e in result.errors] == ["teguh.errors.TaskCancelled"]


def _task_rows_in(queue: str, column: str, task_id: str) -> Any:
    from django.db import connection
    from psycopg import sql

    query = sql.SQL("select {} from teguh.{} where task_id = %s").format(
        sql.Identifier(column), sql.Identifier(f"t_{queue}")
    )
    with connection.cursor() as cursor:
        cursor.execute(query.as_string(connection.connection), [task_id])
        return cursor.fetchone()[0]


def test_outdated_schema_check() -> None:
    from django.core import checks
    from django.db import connection

    with connection.cursor() as cursor:
        cursor.execute("select teguh.version()")
        (current,) = cursor.fetchone()
        cursor.execute(
            "create or replace function teguh.version() returns text "
            "language sql immutable as $$ select '0'::text $$"
        )
        try:
            found = {m.id: m.msg for m in checks.run_checks(databases=["default"])}
        finally:
            cursor.execute(
                "create or replace function teguh.version() returns text "
                f"language sql immutable as $$ select '{int(current)}'::text $$"
            )
    assert "version 0" in found.get("teguh.W102", ""), found


def test_before_spawn_hooks_of_the_backend_app_see_every_enqueue() -> None:
    from django.tasks import default_task_backend
    from shop.tasks import send_email

    from teguh.contrib.django._conf import raw_connection

    hooks = default_task_backend.app._hooks

    def hook(name: str, params: Any, options: dict[str, Any]) -> dict[str, Any]:
        return {**options, "headers": {"traceparent": "00-abc-01"}}

    default_task_backend.app.before_spawn(hook)
    try:
        result = send_email.enqueue("hooked@example.com")
    finally:
        hooks.remove(hook)
    info = default_task_backend.client.get_task(
        "emails", uuid.UUID(result.id), conn=raw_connection("default")
    )
    assert info is not None and info.headers == {"traceparent": "00-abc-01"}
