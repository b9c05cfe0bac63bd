from typing import Any

from django.tasks import task

import teguh
from shop.models import Order


@task(takes_context=True)
def fulfil(context: Any, order_id: int) -> dict[str, Any]:
    """Mark the order fulfilled; report what the task saw."""
    Order.objects.filter(pk=order_id).update(fulfilled=True)
    ctx = teguh.current_context()
    return {"order_id": order_id, "attempt": context.attempt, "teguh_task_id": str(ctx.task_id)}


@task(max_attempts=2, retry={"kind": "fixed", "base_seconds": 0})
def explode(message: str) -> None:
    raise ValueError(message)


@task(queue_name="emails", priority=50, max_attempts=7)
def send_email(to: str, subject: str = "hello") -> str:
    return f"sent {subject!r} to {to}"


@task
async def add(a: int, b: int) -> int:
    return a + b
