"""Every body the predictor accepts is JSON: a POST without a JSON Content-Type is read as JSON anyway.

`curl -d '{...}'` sends `application/x-www-form-urlencoded` unless told otherwise, and KServe then hands the
raw bytes on (400 "expected a JSON object") while FastAPI refuses V2 and events bodies. The predictor takes no
form posts, so such a header (or none) is replaced by `application/json` before any route sees the request.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

Scope = MutableMapping[str, Any]
ASGIApp = Callable[[Scope, Any, Any], Awaitable[None]]

JSON = b"application/json"
READ_AS_JSON = (b"", b"application/x-www-form-urlencoded", b"text/plain")  # what curl -d and browsers default to


class JsonBodyByDefault:
    """ASGI middleware: POST bodies without a JSON (or other explicit) Content-Type are declared JSON."""

    def __init__(self, app: ASGIApp):
        self.app = app

    async def __call__(self, scope: Scope, receive: Any, send: Any) -> None:
        if scope["type"] == "http" and scope.get("method") == "POST":
            headers = [(name, value) for name, value in scope.get("headers", ()) if name != b"content-type"]
            declared = dict(scope.get("headers", ())).get(b"content-type", b"")
            if declared.split(b";")[0].strip().lower() in READ_AS_JSON:
                scope = {**scope, "headers": [*headers, (b"content-type", JSON)]}
        await self.app(scope, receive, send)
