"""A small service to run under several worker processes: ``app`` for gunicorn (WSGI),
``asgi_app`` for uvicorn (ASGI). Standard library and predlog only.

POST /predict with a JSON object of features; the answer has the prediction, its prediction
id and the pid of the worker that served it. The store is ``PREDLOG_STORE``::

    PREDLOG_STORE=/tmp/store gunicorn --preload --workers 3 --bind 127.0.0.1:8000 examples.workers_app:app
    PREDLOG_STORE=/tmp/store uvicorn --workers 2 --host 127.0.0.1 --port 8000 examples.workers_app:asgi_app
    curl -s -X POST -H 'X-Request-Id: r1' -d '{"x": 1.5, "y": 2}' http://127.0.0.1:8000/predict
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Iterable
from typing import Any

import predlog

# Store from PREDLOG_STORE; configured at import, so under --preload before the fork.
predlog.configure(model="score", version="1.0")


@predlog.capture
def predict(features: dict[str, float]) -> float:
    return round(0.3 * features["x"] - 0.1 * features["y"], 6)


def handle(method: str, path: str, body: bytes, request_id: str | None) -> tuple[str, dict[str, Any]]:
    """Status line and JSON answer for one request (shared by the WSGI and ASGI apps)."""
    if (method, path) != ("POST", "/predict"):
        return "404 Not Found", {"error": "POST /predict"}
    try:
        features = json.loads(body)
        with predlog.context(request_id=request_id):
            y = predict(features)
            prediction_id = predlog.last_prediction_id()
    except (ValueError, TypeError, KeyError) as exc:
        return "400 Bad Request", {"error": repr(exc)}
    return "200 OK", {"prediction": y, "prediction_id": prediction_id, "pid": os.getpid()}


def app(environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
    """WSGI."""
    length = int(environ.get("CONTENT_LENGTH") or 0)
    status, answer = handle(
        environ["REQUEST_METHOD"],
        environ["PATH_INFO"],
        environ["wsgi.input"].read(length),
        environ.get("HTTP_X_REQUEST_ID"),
    )
    out = json.dumps(answer).encode()
    start_response(status, [("Content-Type", "application/json"), ("Content-Length", str(len(out)))])
    return [out]


async def asgi_app(scope: dict[str, Any], receive: Callable[..., Any], send: Callable[..., Any]) -> None:
    """ASGI: HTTP, and lifespan shutdown, where what is pending is written.

    uvicorn ends a worker by re-raising SIGTERM after its own shutdown, so interpreter exit
    hooks (predlog's included) do not run: ``predlog.shutdown()`` has to be called here.
    """
    if scope["type"] == "lifespan":
        while True:
            message = await receive()
            if message["type"] == "lifespan.shutdown":
                predlog.shutdown()
            await send({"type": message["type"] + ".complete"})
            if message["type"] == "lifespan.shutdown":
                return
    body = b""
    while True:
        message = await receive()
        body += message.get("body", b"")
        if not message.get("more_body"):
            break
    headers = dict(scope["headers"])
    request_id = headers.get(b"x-request-id")
    status, answer = handle(scope["method"], scope["path"], body, request_id.decode("latin-1") if request_id else None)
    out = json.dumps(answer).encode()
    await send(
        {
            "type": "http.response.start",
            "status": int(status.split()[0]),
            "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(out)).encode())],
        }
    )
    await send({"type": "http.response.body", "body": out})
