from django.apps import AppConfig


class ShopConfig(AppConfig):
    name = "shop"

    def ready(self) -> None:
        from django.tasks.signals import task_finished, task_started

        from shop import signals

        task_started.connect(signals.record, dispatch_uid="shop-started")
        task_finished.connect(signals.record, dispatch_uid="shop-finished")
