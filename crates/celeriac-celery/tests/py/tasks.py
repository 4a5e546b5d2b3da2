"""Celery tasks the interop tests of celeriac-celery run on real Python Celery.

The app is configured from environment variables (tests/support/mod.rs sets them):

  CELERIAC_BROKER_URL          broker URL (e.g. redis://127.0.0.1:PORT/0)       required
  CELERIAC_BACKEND_URL         result backend URL (e.g. redis://127.0.0.1:PORT/1) required
  CELERIAC_VISIBILITY_TIMEOUT  broker visibility_timeout in seconds (float)      optional
  CELERIAC_RESULT_EXTENDED     "1" -> result_extended = True                     optional
  CELERIAC_TRACK_STARTED       "1" -> task_track_started = True                  optional
  CELERIAC_DEFAULT_QUEUE       task_default_queue (where .delay() sends)         optional
  CELERIAC_RESULT_EXPIRES      result_expires in seconds                         optional
  CELERIAC_BACKEND_PREFIX      result backend global_keyprefix                   optional
  CELERIAC_BROKER_PREFIX       broker global_keyprefix                           optional
  CELERIAC_ACKS_LATE           "1" -> task_acks_late = True                      optional
  CELERIAC_RESULT_COMPRESSION  result_compression (Celery 5.7+, e.g. "gzip")     optional
"""

import os
import time

from celery import Celery


def _env(name, default=None):
    value = os.environ.get(name)
    return default if value in (None, "") else value


def _flag(name):
    return _env(name, "0") in ("1", "true", "yes")


app = Celery(
    "tasks",
    broker=_env("CELERIAC_BROKER_URL", "redis://127.0.0.1:6399/0"),
    backend=_env("CELERIAC_BACKEND_URL", "redis://127.0.0.1:6399/1"),
)

_broker_options = {}
if _env("CELERIAC_VISIBILITY_TIMEOUT"):
    _broker_options["visibility_timeout"] = float(_env("CELERIAC_VISIBILITY_TIMEOUT"))
if _env("CELERIAC_BROKER_PREFIX"):
    _broker_options["global_keyprefix"] = _env("CELERIAC_BROKER_PREFIX")

_backend_options = {}
if _env("CELERIAC_BACKEND_PREFIX"):
    _backend_options["global_keyprefix"] = _env("CELERIAC_BACKEND_PREFIX")

app.conf.update(
    task_serializer="json",
    result_serializer="json",
    accept_content=["json"],
    enable_utc=True,
    timezone="UTC",
    broker_transport_options=_broker_options,
    result_backend_transport_options=_backend_options,
    result_extended=_flag("CELERIAC_RESULT_EXTENDED"),
    task_track_started=_flag("CELERIAC_TRACK_STARTED"),
    task_acks_late=_flag("CELERIAC_ACKS_LATE"),
    broker_connection_retry_on_startup=True,
)
if _env("CELERIAC_DEFAULT_QUEUE"):
    app.conf.task_default_queue = _env("CELERIAC_DEFAULT_QUEUE")
if _env("CELERIAC_RESULT_COMPRESSION"):
    app.conf.result_compression = _env("CELERIAC_RESULT_COMPRESSION")
if _env("CELERIAC_RESULT_EXPIRES"):
    app.conf.result_expires = int(_env("CELERIAC_RESULT_EXPIRES"))


class CustomError(Exception):
    """An exception class of this module (exc_module "tasks")."""


# --- the tasks of the test plan (celery-protocol.md section 14) ---------------------------


@app.task(name="tasks.add")
def add(x, y):
    return x + y


@app.task(name="tasks.tsum")
def tsum(xs):
    return sum(xs)


@app.task(name="tasks.fail")
def fail(msg="boom"):
    raise ValueError(msg)


@app.task(name="tasks.retry_me", bind=True)
def retry_me(self, n):
    """Retries (countdown 1 s) until it has been retried n times; returns the retry count."""
    if self.request.retries < n:
        raise self.retry(countdown=1, max_retries=n + 1)
    return self.request.retries


@app.task(name="tasks.on_err")
def on_err(task_id):
    """An old-style errback: gets the failed task's id; returns it as its result."""
    return task_id


# --- extra helpers for the tests -----------------------------------------------------------


@app.task(name="tasks.echo")
def echo(value):
    """Returns its argument (any JSON value)."""
    return value


@app.task(name="tasks.mul")
def mul(x, y):
    return x * y


@app.task(name="tasks.sleep")
def sleep(seconds):
    """Sleeps, then returns the seconds slept (for crash/timeout tests)."""
    time.sleep(seconds)
    return seconds


@app.task(name="tasks.fail_custom")
def fail_custom(msg="custom"):
    raise CustomError(msg)


@app.task(name="tasks.progress", bind=True)
def progress(self, state, meta):
    """Stores a custom state with `meta` (update_state), then returns meta."""
    self.update_state(state=state, meta=meta)
    return meta


@app.task(name="tasks.request_info", bind=True)
def request_info(self):
    """Returns what the worker saw of the request (id, group, root/parent, retries, hostname)."""
    r = self.request
    return {
        "id": r.id,
        "group": r.group,
        "group_index": getattr(r, "group_index", None),
        "root_id": r.root_id,
        "parent_id": r.parent_id,
        "retries": r.retries,
        "hostname": r.hostname,
        "delivery_info": dict(r.delivery_info or {}),
    }


# --- helpers for client-side snippets ------------------------------------------------------


def announce_when_waiting(marker="WAITING"):
    """Prints "<marker> <task id>" (flushed) once a result waiter has subscribed to the result
    channel and read the key (still pending): from then on only a PUBLISH wakes it, as the Redis
    result consumer does not poll. A test stores the result after seeing the line."""
    from celery.backends.redis import ResultConsumer

    original = ResultConsumer.on_wait_for_pending

    def on_wait_for_pending(self, result, **kwargs):
        out = original(self, result, **kwargs)
        print(marker, result.id, flush=True)
        return out

    ResultConsumer.on_wait_for_pending = on_wait_for_pending
