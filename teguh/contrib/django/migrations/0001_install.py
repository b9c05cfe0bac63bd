"""Install teguh's schema (and the configured queues) in the task backend's database."""

from __future__ import annotations

from typing import Any, ClassVar

from django.db import migrations


def install(apps: Any, schema_editor: Any) -> None:
    from teguh.contrib.django.schema import sync

    connection = schema_editor.connection
    connection.ensure_connection()
    sync(connection.alias, connection.connection)


class Migration(migrations.Migration):  # type: ignore[misc]  # Django is untyped
    initial = True
    dependencies: ClassVar[list[tuple[str, str]]] = []
    operations: ClassVar[list[Any]] = [
        migrations.RunPython(install, migrations.RunPython.noop, elidable=False)
    ]
