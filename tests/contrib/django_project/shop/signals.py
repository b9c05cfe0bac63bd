from typing import Any

from django.tasks.signals import task_started


def record(sender: Any, task_result: Any, signal: Any = None, **kwargs: Any) -> None:
    from shop.models import TaskEvent

    kind = "started" if signal is task_started else "finished"
    TaskEvent.objects.create(task_id=task_result.id, kind=kind, status=task_result.status)
