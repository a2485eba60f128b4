"""`recsys ui`: the storefront page over a running predictor (recsys.ui)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from recsys.cli.output import console, fail
from recsys.config import get_settings

commands = typer.Typer()


@commands.command("ui")
def ui_cmd(
    predictor_url: Annotated[str, typer.Option(help="the running predictor, e.g. http://127.0.0.1:8080")],
    http_port: Annotated[int, typer.Option(help="port of the page")] = 8000,
    host: Annotated[str, typer.Option(help="interface to listen on (0.0.0.0: every one)")] = "127.0.0.1",
    images_dir: Annotated[
        Path | None,
        typer.Option(
            help="folder of `recsys images`, served for img_links inside it", show_default="$RECSYS_DATA_DIR/images"
        ),
    ] = None,
    remote_images: Annotated[
        bool,
        typer.Option(help="also show img_links that are http(s) URLs (off: the page loads nothing from elsewhere)"),
    ] = False,
) -> None:
    """Serve the storefront page: pick a shopper, see their recommendations and why, search, buy, repeat."""
    from recsys.ui.server import UiConfigError, check_port_free, check_predictor_url, serve

    if not 1 <= http_port <= 65535:
        fail(f"--http-port: expected 1..65535, got {http_port}")
    try:
        url = check_predictor_url(predictor_url)
        check_port_free(host, http_port)
    except UiConfigError as exc:
        fail(str(exc))
    folder = images_dir or get_settings().data_dir / "images"
    console.print(
        f"storefront for {url} at http://{'127.0.0.1' if host == '0.0.0.0' else host}:{http_port}/ (Ctrl-C stops)"
    )
    serve(url, http_port, host=host, images_dir=folder, remote_images=remote_images)
