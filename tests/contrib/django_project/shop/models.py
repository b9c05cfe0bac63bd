from django.db import models


class Order(models.Model):
    email = models.CharField(max_length=200)
    fulfilled = models.BooleanField(default=False)


class TaskEvent(models.Model):
    """Written by the task signal receivers (in the worker process)."""

    task_id = models.CharField(max_length=64)
    kind = models.CharField(max_length=20)
    status = models.CharField(max_length=20)
