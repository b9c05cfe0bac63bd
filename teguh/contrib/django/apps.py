"""The Django app: migrations that install the schema, and the system checks."""

from __future__ import annotations

from typing import Any

from django.apps import AppConfig
from django.core import checks
from django.db.models.signals import post_migrate


class TeguhConfig(AppConfig):  # type: ignore[misc]  # Django is untyped
    """``teguh.contrib.django`` in ``INSTALLED_APPS``."""

    name = "teguh.contrib.django"
    label = "teguh"
    verbose_name = "teguh"
    default = True

    def ready(self) -> None:
        from teguh.contrib.django import checks as teguh_checks
        from teguh.contrib.django.worker import arm_in_process_workers

        checks.register(teguh_checks.check_database, checks.Tags.database)
        post_migrate.connect(_post_migrate, sender=self, dispatch_uid="teguh-post-migrate")
        arm_in_process_workers()


def _post_migrate(sender: TeguhConfig, using: str = "default", **kwargs: Any) -> None:
    # A newer teguh brings a newer schema with no new Django migration: every
    # `migrate` brings the schema up to date and creates the configured queues.
    from teguh.contrib.django import schema

    schema.sync(using)
