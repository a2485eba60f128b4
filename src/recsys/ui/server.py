"""Run the storefront (uvicorn) until interrupted: `recsys ui --http-port P --predictor-url URL [--host H]`."""

from __future__ import annotations

import socket
from pathlib import Path
from urllib.parse import urlsplit

DEFAULT_HOST = "127.0.0.1"  # loopback unless asked: the page can send events on a shopper's behalf


class UiConfigError(ValueError):
    """A bad --predictor-url (exit code 2)."""


def check_predictor_url(url: str) -> str:
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise UiConfigError(f"--predictor-url: expected http(s)://host:port, got {url!r}")
    return url.rstrip("/")


def check_port_free(host: str, port: int) -> None:
    """Fail early (before a long demo run) when the page's port cannot be bound."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        try:
            sock.bind((host, port))
        except OSError as exc:
            raise UiConfigError(f"--http-port: cannot listen on {host}:{port} ({exc.strerror})") from None


def serve(
    predictor_url: str,
    http_port: int,
    host: str = DEFAULT_HOST,
    images_dir: Path | None = None,
    remote_images: bool = False,
) -> None:
    """Serve the page for `predictor_url` on host:http_port (blocks). Pictures come from `images_dir` (the
    folder of `recsys images`; items whose file is not there, or not yet, get placeholders)."""
    import uvicorn

    from recsys.ui.app import create_app

    app = create_app(check_predictor_url(predictor_url), images_dir, remote_images)
    uvicorn.run(app, host=host, port=http_port, log_level="warning", access_log=False)
