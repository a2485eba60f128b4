"""The storefront's server side without a browser: pictures (files, placeholders, path safety), the page and its
headers, and how predictor failures reach the page. The browser walks are in test_ui_browser.py.
"""

from __future__ import annotations

import xml.etree.ElementTree as ET
from pathlib import Path

import httpx
import pytest
from fastapi.testclient import TestClient

from recsys.ui.app import create_app
from recsys.ui.media import category_hue, image_path_under, image_url, initials, placeholder_svg, placeholder_url
from recsys.ui.predictor_client import PredictorClient
from recsys.ui.server import UiConfigError, check_predictor_url

pytestmark = pytest.mark.unit

PNG = b"\x89PNG\r\n\x1a\n" + b"\x00" * 16


@pytest.fixture()
def images(tmp_path: Path) -> Path:
    folder = tmp_path / "images"
    folder.mkdir()
    (folder / "i1.png").write_bytes(PNG)
    (tmp_path / "secret.png").write_bytes(PNG)  # outside the images folder
    (folder / "notes.txt").write_text("not an image")
    return folder


def closed_port_url() -> str:
    from recsys.predictor_process import free_loopback_port

    return f"http://127.0.0.1:{free_loopback_port()}"


def test_image_url_serves_files_under_the_images_folder_only(images: Path) -> None:
    assert image_url(str(images / "i1.png"), images, "A|B|C", "Red Shoe") == "/images/i1.png"
    assert image_url("i1.png", images, "A|B|C", "Red Shoe") == "/images/i1.png"  # relative to the folder
    assert image_url("https://cdn.example/i1.png", images, "A", "x", remote=True) == "https://cdn.example/i1.png"
    assert image_url("https://cdn.example/i1.png", images, "A", "x").startswith("/placeholder.svg?")  # offline page
    for link in (None, "", str(images / "gone.png"), str(images.parent / "secret.png"), "../secret.png",
                 str(images / "notes.txt")):  # fmt: skip
        assert image_url(link, images, "A|B|C", "Red Shoe").startswith("/placeholder.svg?"), link
    assert image_url(str(images / "i1.png"), None, "A", "x").startswith("/placeholder.svg?")
    assert image_path_under(Path("../secret.png"), images) is None


def test_placeholder_is_valid_svg_with_category_colour_and_initials() -> None:
    svg = placeholder_svg("Electronics|Audio|Headphones", 'Acme "Pro" <Wireless> Headphones')
    root = ET.fromstring(svg)  # well-formed despite quotes and angle brackets in the name
    assert root.tag.endswith("svg")
    texts = [node.text for node in root.iter() if node.tag.endswith("text")]
    assert texts == ["AH", "Headphones"]  # words starting with a letter or digit give the initials
    assert initials("acme pro wireless") == "AP" and initials("") == "?" and initials("  ") == "?"
    assert category_hue("Electronics|Audio") == category_hue("Electronics|Cameras")  # one colour per department
    assert category_hue("Electronics|Audio") != category_hue("Books|Fiction")
    assert f"hsl({category_hue('Electronics')} " in svg
    long = placeholder_svg("X" * 5000, "Y" * 5000)
    assert len(long) < 2000
    assert len(placeholder_url("X" * 5000, "Y" * 5000)) < 600


def test_page_pictures_and_security_headers(images: Path) -> None:
    with TestClient(create_app(closed_port_url(), images)) as client:
        page = client.get("/")
        assert page.status_code == 200 and "<title>recsys storefront</title>" in page.text
        assert "default-src 'self'" in page.headers["content-security-policy"]
        for asset in ("/static/app.js", "/static/style.css", "/static/favicon.svg"):
            assert client.get(asset).status_code == 200, asset
        image = client.get("/images/i1.png")
        assert image.status_code == 200 and image.content == PNG
        for bad in ("/images/../secret.png", "/images/%2e%2e/secret.png", "/images/notes.txt", "/images/gone.png"):
            assert client.get(bad).status_code == 404, bad
        svg = client.get("/placeholder.svg", params={"category": "Books|Fiction", "name": "Night Train"})
        assert svg.status_code == 200 and svg.headers["content-type"].startswith("image/svg+xml")
        assert ">NT<" in svg.text


def test_unreachable_predictor_is_a_clear_502() -> None:
    url = closed_port_url()
    with TestClient(create_app(url)) as client:
        answer = client.post("/api/recommend", json={"user_id": "u1"})
        assert answer.status_code == 502
        assert answer.json() == {"error": f"the predictor at {url} did not answer (ConnectError)"}
        assert client.get("/healthz").json() == {"ok": True, "predictor_ready": False}


def test_bad_page_requests_are_400_before_reaching_the_predictor() -> None:
    with TestClient(create_app(closed_port_url())) as client:
        assert client.post("/api/recommend", content="[1]").json() == {"error": "body: expected a JSON object"}
        assert client.post("/api/search", json={"k": 3}).json() == {"error": "query: missing"}
        bad_type = client.post("/api/events", json={"user_id": "u", "item_id": "i", "interaction_type": "steal"})
        assert bad_type.status_code == 400 and bad_type.json()["error"].startswith("interaction_type: one of")
        assert client.post("/api/events", json={"user_id": "u"}).json() == {
            "error": "item_id: expected a non-empty string"
        }
        big = client.post("/api/recommend", content=b"{" + b" " * 70_000 + b"}")
        assert big.status_code == 413


def test_events_without_the_predictor_route_say_so() -> None:
    """Stand-in predictor (httpx.MockTransport): one from before POST /v1/events existed answers 404 there; the
    page must get a clear "not available" answer (HTTP 200, so no console error), not a failure."""
    seen: list[str] = []

    def older_predictor(request: httpx.Request) -> httpx.Response:
        seen.append(request.url.path)
        return httpx.Response(404, json={"detail": "Not Found"})

    client = PredictorClient("http://predictor.test", transport=httpx.MockTransport(older_predictor))
    with TestClient(create_app("http://predictor.test", client=client)) as ui:
        answer = ui.post("/api/events", json={"user_id": "u1", "item_id": "i1", "interaction_type": "purchase"})
    assert answer.status_code == 200
    assert answer.json() == {
        "available": False,
        "accepted": 0,
        "message": "events are not available: this predictor has no POST /v1/events",
    }
    assert seen == ["/v1/events"]


def test_predictor_url_is_checked() -> None:
    assert check_predictor_url("http://127.0.0.1:8080/") == "http://127.0.0.1:8080"
    for bad in ("127.0.0.1:8080", "ftp://x", "http://", ""):
        with pytest.raises(UiConfigError, match="--predictor-url"):
            check_predictor_url(bad)
