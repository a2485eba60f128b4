"""Product pictures for the storefront: the image files `recsys images` wrote, or a generated SVG placeholder.

An item's `img_link` is a path to a file under the images folder the UI was given (served by the UI at
/images/...), an http(s) URL (shown only when remote images are allowed: the synthetic catalogue's links point at
images.example.com, a domain reserved never to resolve, and an offline page must not try), or anything else
(missing, a file elsewhere, a file that is gone): then the page shows a placeholder drawn from the item's
category colour and the initials of its name, so no card ever shows a broken image.
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from urllib.parse import quote, urlencode
from xml.sax.saxutils import escape

from recsys import schema

IMAGE_SUFFIXES = frozenset({".png", ".jpg", ".jpeg", ".webp", ".gif"})
IMAGES_ROUTE = "/images"
PLACEHOLDER_ROUTE = "/placeholder.svg"
MAX_LABEL_CHARS = 200  # longer category / name query values are cut: the SVG only needs a colour and initials


def image_url(img_link: str | None, images_dir: Path | None, category: str, name: str, remote: bool = False) -> str:
    """The URL the page should load for an item's picture (never one that is known to be missing)."""
    link = (img_link or "").strip()
    if link.startswith(("http://", "https://")):
        return link if remote else placeholder_url(category, name)
    if link and images_dir is not None:
        relative = image_path_under(Path(link), images_dir)
        if relative is not None:
            return f"{IMAGES_ROUTE}/{quote(relative.as_posix())}"
    return placeholder_url(category, name)


def image_path_under(path: Path, images_dir: Path) -> Path | None:
    """`path` relative to `images_dir` when it is an existing image file inside it, else None."""
    root = images_dir.resolve()
    try:
        resolved = (path if path.is_absolute() else root / path).resolve()
    except (OSError, RuntimeError):  # a symlink loop or an unreadable component
        return None
    if resolved.suffix.lower() not in IMAGE_SUFFIXES or not resolved.is_relative_to(root) or not resolved.is_file():
        return None
    return resolved.relative_to(root)


def placeholder_url(category: str, name: str) -> str:
    return f"{PLACEHOLDER_ROUTE}?{urlencode({'category': category[:MAX_LABEL_CHARS], 'name': name[:MAX_LABEL_CHARS]})}"


def category_hue(category: str) -> int:
    """A stable hue (0..359) per department (the first segment of the category path)."""
    department = category.split(schema.CATEGORY_SEPARATOR)[0].strip().lower()
    return int.from_bytes(hashlib.sha256(department.encode()).digest()[:2], "big") % 360


def initials(name: str) -> str:
    """Up to two letters: the first letters of the first two words ('?' for a name without letters)."""
    words = [w for w in name.split() if w[:1].isalnum()]
    letters = "".join(w[0] for w in words[:2]).upper()
    return letters or "?"


def placeholder_svg(category: str, name: str) -> str:
    """A 400x400 SVG: the department's colour, the product's initials and the category's last segment."""
    category, name = category[:MAX_LABEL_CHARS], name[:MAX_LABEL_CHARS]
    hue = category_hue(category)
    leaf = category.split(schema.CATEGORY_SEPARATOR)[-1].strip() or "Product"
    label = leaf if len(leaf) <= 28 else leaf[:27] + "…"
    return (
        '<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 400 400" role="img" '
        f'aria-label="{escape(name or leaf, {chr(34): "&quot;"})}">'
        f'<rect width="400" height="400" fill="hsl({hue} 55% 88%)"/>'
        f'<circle cx="200" cy="180" r="92" fill="hsl({hue} 45% 42%)"/>'
        '<text x="200" y="212" font-family="system-ui, sans-serif" font-size="84" font-weight="600" '
        f'fill="#fff" text-anchor="middle">{escape(initials(name))}</text>'
        '<text x="200" y="330" font-family="system-ui, sans-serif" font-size="24" '
        f'fill="hsl({hue} 40% 25%)" text-anchor="middle">{escape(label)}</text>'
        "</svg>"
    )
