"""A small Flask + Flask-SQLAlchemy app using teguh (tests/contrib/test_flask.py).

``flask --app tests.contrib.flask_app.app:create_app teguh worker`` with
``TEGUH_TEST_DATABASE_URL`` set runs its worker.
"""

from __future__ import annotations

import logging
import os
from typing import Any

from flask import Flask, abort, jsonify, request
from flask_sqlalchemy import SQLAlchemy
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

import teguh
from teguh.contrib.flask import Teguh
from teguh.contrib.sqlalchemy import spawn


class Base(DeclarativeBase):
    pass


db = SQLAlchemy(model_class=Base)
teguh_ext = Teguh()


class Order(db.Model):  # type: ignore[name-defined,misc]
    id: Mapped[int] = mapped_column(primary_key=True)
    email: Mapped[str]
    fulfilled: Mapped[bool] = mapped_column(default=False)


@teguh_ext.task(max_attempts=3)
def fulfil(ctx: teguh.TaskContext, order_id: int) -> dict[str, Any]:
    """Mark the order fulfilled: needs the app context (Flask-SQLAlchemy's session)."""
    order = db.session.get(Order, order_id)
    if order is None:
        raise LookupError(f"no order {order_id}")
    order.fulfilled = True
    db.session.commit()
    return {"order_id": order_id, "attempt": ctx.attempt}


def create_app(**config: Any) -> Flask:
    app = Flask(__name__)
    url = config.pop("database_url", None) or os.environ["TEGUH_TEST_DATABASE_URL"]
    app.config["SQLALCHEMY_DATABASE_URI"] = url.replace("postgresql://", "postgresql+psycopg://")
    app.config["TEGUH_WORKER_OPTIONS"] = {"poll_interval": 0.5}
    if os.environ.get("TEGUH_TEST_IN_PROCESS"):
        app.config["TEGUH_WORKER_IN_PROCESS"] = True
        logging.basicConfig(level=logging.INFO)
    app.config.update(config)
    db.init_app(app)
    teguh_ext.init_app(app)

    @app.post("/orders")
    def create_order() -> Any:
        order = Order(email=request.form["email"])
        db.session.add(order)
        db.session.flush()  # the order's id, in the session's transaction
        result = spawn(db.session, fulfil, order_id=order.id)
        if request.form.get("fail"):
            db.session.rollback()  # the order and the task go together
            abort(409)
        db.session.commit()
        return jsonify(order_id=order.id, task_id=str(result.task_id))

    @app.get("/health")
    def health() -> Any:
        return {"ok": True}

    return app
