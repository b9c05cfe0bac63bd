"""Integrations with web frameworks and ORMs (each imported on its own).

- `teguh.contrib.sqlalchemy`: spawn inside a SQLAlchemy ``Session`` or
  ``Connection`` transaction (psycopg 3 driver).
- `teguh.contrib.django`: a ``django.tasks`` backend, the ``teguh_worker``
  management command, migrations and system checks (``teguh[django]``).
- `teguh.contrib.flask`: the ``Teguh`` Flask extension and ``flask teguh``
  commands (``teguh[flask]``).

Nothing here is imported by ``import teguh``.
"""
