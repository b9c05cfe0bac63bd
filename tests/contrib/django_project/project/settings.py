"""A small Django project using teguh as its task backend (tests/contrib/django)."""

import os

SECRET_KEY = "teguh-tests-only"
DEBUG = False
ALLOWED_HOSTS = ["*"]
USE_TZ = True
ROOT_URLCONF = "project.urls"
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

INSTALLED_APPS = ["teguh.contrib.django", "shop"]
MIDDLEWARE: list[str] = []

DATABASES = {
    "default": {
        "ENGINE": "django.db.backends.postgresql",
        "NAME": os.environ.get("TEGUH_DJANGO_NAME", "teguh_django"),
        "USER": os.environ.get("TEGUH_DJANGO_USER", "postgres"),
        "HOST": os.environ.get("TEGUH_DJANGO_HOST", "localhost"),
        "PORT": os.environ.get("TEGUH_DJANGO_PORT", "5432"),
    }
}

TASKS = {
    "default": {
        "BACKEND": "teguh.contrib.django.TeguhBackend",
        "QUEUES": ["default", "emails"],
        "OPTIONS": {
            "DATABASE": "default",
            "WORKER": {"concurrency": 4, "poll_interval": 1},
            "WORKER_IN_PROCESS": bool(os.environ.get("TEGUH_DJANGO_IN_PROCESS")),
        },
    }
}

LOGGING = {
    "version": 1,
    "handlers": {"console": {"class": "logging.StreamHandler"}},
    "loggers": {
        "teguh": {
            "handlers": ["console"],
            "level": "INFO" if os.environ.get("TEGUH_DJANGO_IN_PROCESS") else "WARNING",
        }
    },
}
