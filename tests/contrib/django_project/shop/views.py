from django.db import transaction
from django.http import HttpRequest, JsonResponse
from django.views.decorators.csrf import csrf_exempt

from shop.models import Order
from shop.tasks import fulfil


@csrf_exempt
def create_order(request: HttpRequest) -> JsonResponse:
    """Create an order and enqueue its fulfilment in the same transaction."""
    with transaction.atomic():
        order = Order.objects.create(email=request.POST["email"])
        result = fulfil.enqueue(order.pk)
        if request.POST.get("fail"):
            raise RuntimeError("payment declined")  # rolls back the order and the task
    return JsonResponse({"order_id": order.pk, "task_id": result.id})


def health(request: HttpRequest) -> JsonResponse:
    return JsonResponse({"ok": True})
