"""teguh as Django 6.1's task backend (``pip install teguh[django]``).

Add ``"teguh.contrib.django"`` to ``INSTALLED_APPS`` (its migration installs
the schema) and configure the backend::

    TASKS = {
        "default": {
            "BACKEND": "teguh.contrib.django.TeguhBackend",
            "QUEUES": ["default", "emails"],
            "OPTIONS": {"DATABASE": "default"},
        }
    }

``Task.enqueue()`` writes the task through Django's own connection for that
database alias, so inside ``transaction.atomic()`` it exists only if the
transaction commits. ``python manage.py teguh_worker`` runs the tasks.
See docs/django.md.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from teguh.contrib.django.backend import TeguhBackend, TeguhTask

__all__ = ["TeguhBackend", "TeguhTask"]


def __getattr__(name: str) -> Any:
    # Lazy: Django imports this package while it loads INSTALLED_APPS, before
    # the task framework may be imported.
    if name in __all__:
        from teguh.contrib.django import backend

        return getattr(backend, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
