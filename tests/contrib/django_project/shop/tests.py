"""Run by ``manage.py test shop`` (tests/contrib/django runs that command).

Django creates the test database and migrates it: teguh's migration installs
the schema there, and the database can be dropped at the end because the
backend enqueues through Django's own connection and the worker closes its
pool when stopped.
"""

from django.db import transaction
from django.tasks import TaskResultStatus
from django.tasks.exceptions import TaskResultDoesNotExist
from django.test import TestCase, TransactionTestCase

from shop.models import Order
from shop.tasks import fulfil
from teguh.contrib.django.worker import make_worker


class EnqueueTests(TestCase):
    def test_enqueue_is_part_of_the_transaction(self) -> None:
        order = Order.objects.create(email="a@example.com")
        result = fulfil.enqueue(order.pk)
        self.assertEqual(fulfil.get_result(result.id).status, TaskResultStatus.READY)

    def test_rolled_back_enqueue_leaves_no_task(self) -> None:
        task_id = None
        try:
            with transaction.atomic():
                task_id = fulfil.enqueue(1).id
                raise RuntimeError("roll back")
        except RuntimeError:
            pass
        assert task_id is not None
        with self.assertRaises(TaskResultDoesNotExist):
            fulfil.get_result(task_id)


class WorkerTests(TransactionTestCase):
    """Committed tasks run in the test's thread with worker.drain() (no polling)."""

    def test_drain_runs_the_committed_task(self) -> None:
        order = Order.objects.create(email="b@example.com")
        result = fulfil.enqueue(order.pk)
        worker = make_worker("default", ["default"])
        try:
            ran = worker.drain(timeout=30)
        finally:
            worker.app.close()  # drain() used the app's pool: the test database can be dropped
        self.assertEqual(ran, 1)
        result.refresh()
        self.assertEqual(result.status, TaskResultStatus.SUCCESSFUL)
        self.assertEqual(result.return_value["order_id"], order.pk)
        self.assertTrue(Order.objects.get(pk=order.pk).fulfilled)

    def test_started_worker_runs_the_task(self) -> None:
        import time

        order = Order.objects.create(email="c@example.com")
        result = fulfil.enqueue(order.pk)
        worker = make_worker("default", ["default"], poll_interval=0.5).start()
        try:
            deadline = time.monotonic() + 30
            while not result.is_finished and time.monotonic() < deadline:
                time.sleep(0.05)
                result.refresh()
        finally:
            worker.stop(5)  # it opened only its own pool, closed here
        self.assertEqual(result.status, TaskResultStatus.SUCCESSFUL)
