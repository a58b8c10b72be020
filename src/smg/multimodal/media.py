"""Image inputs: where an ``image_url`` may point, how it is fetched, and how it is decoded.

* ``data:`` URLs (base64) are decoded in-process.
* ``http(s)://`` URLs are fetched with httpx: a timeout, a byte limit checked while streaming, an
  image content type, at most a few redirects, each hop checked again. Hosts that resolve to
  private, loopback, link-local or otherwise non-public addresses are refused (SSRF) unless the
  gateway's ``url_allow_list`` names the host or a network holding the address; the connection
  goes to the address that was checked (no second lookup for a changed DNS answer to redirect).
* ``file://`` paths are read only inside the directories the gateway allows (none by default).

Decoding (Pillow) checks the pixel count from the header before any pixel is decoded, applies the
EXIF orientation and loads the whole image, so a decompression bomb, a truncated file or a file
that is no image is an :class:`InvalidImage` naming the image, never a crash or a huge allocation.
"""
from __future__ import annotations

import asyncio
import base64
import binascii
import io
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from urllib.parse import unquote, urlsplit

from smg.errors import InvalidImage
from smg.outbound import AllowList, BlockedAddress

MiB = 1 << 20
IMAGE_TYPES = ("image/", "application/octet-stream")  # some servers label images as plain bytes
MAX_REDIRECTS = 3


@dataclass(frozen=True)
class MediaPolicy:
    """Where images may come from and how big they may be (from the gateway's config)."""

    url_allow_list: Sequence[str] = ()  # hosts, or addresses/networks in CIDR form
    allowed_dirs: Sequence[str] = ()  # file:// paths must lie inside one of these
    fetch_timeout: float = 10.0
    max_bytes: int = 20 * MiB
    max_pixels: int = 50_000_000
    allow: AllowList = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "allow", AllowList(self.url_allow_list))

    def address_allowed(self, address: str) -> bool:
        return self.allow.address_allowed(address)


def _bytes_label(count: int) -> str:
    return f"{count / MiB:.1f} MiB" if count >= MiB else f"{count} bytes"


def decode_data_url(url: str, name: str, policy: MediaPolicy) -> bytes:
    header, sep, payload = url.partition(",")
    if not sep:
        raise InvalidImage(f"{name}: a data URL needs a ',' before its payload")
    media_type, *params = header[len("data:"):].split(";")
    if media_type and not media_type.lower().startswith(IMAGE_TYPES):
        raise InvalidImage(f"{name}: data URL of type {media_type!r} is not an image")
    if len(payload) > policy.max_bytes * 4 // 3 + 4:
        raise InvalidImage(f"{name}: the image is over the {_bytes_label(policy.max_bytes)} limit")
    if "base64" not in params:
        return unquote(payload).encode("latin-1")
    try:
        return base64.b64decode(payload, validate=True)
    except (binascii.Error, ValueError):
        raise InvalidImage(f"{name}: the data URL's base64 payload is malformed") from None


def read_file_url(url: str, name: str, policy: MediaPolicy) -> bytes:
    if not policy.allowed_dirs:
        raise InvalidImage(f"{name}: file:// URLs are off (the gateway allows no media directory)")
    path = os.path.realpath(unquote(urlsplit(url).path))
    if not any(os.path.commonpath([path, os.path.realpath(root)]) == os.path.realpath(root)
               for root in policy.allowed_dirs):
        raise InvalidImage(f"{name}: {path} is outside the allowed media directories")
    try:
        with open(path, "rb") as handle:
            data = handle.read(policy.max_bytes + 1)
    except OSError as exc:
        raise InvalidImage(f"{name}: cannot read {path}: {exc.strerror}") from None
    if len(data) > policy.max_bytes:
        raise InvalidImage(f"{name}: the image is over the {_bytes_label(policy.max_bytes)} limit")
    return data


async def _checked_address(host: str, port: int, name: str, policy: MediaPolicy) -> str | None:
    try:
        return await policy.allow.checked_address(host, port)
    except BlockedAddress as exc:
        raise InvalidImage(f"{name}: {exc}") from None


def _pinned(url: str, address: str | None) -> tuple[str, dict, dict]:
    """``url`` to fetch from ``address``, the one that was checked, so that a second name lookup
    (a DNS answer that changed meanwhile) cannot send the request elsewhere: the URL names the
    address, the Host header and the TLS server name (and its certificate check) the host."""
    parts = urlsplit(url)
    if address is None or address == parts.hostname:
        return url, {}, {}
    netloc = f"[{address}]" if ":" in address else address
    if parts.port is not None:
        netloc += f":{parts.port}"
    extensions = {"sni_hostname": parts.hostname} if parts.scheme == "https" else {}
    return parts._replace(netloc=netloc).geturl(), {"Host": parts.netloc.rpartition("@")[2]}, extensions


async def fetch_http(url: str, name: str, policy: MediaPolicy, client) -> bytes:
    """GET an image over HTTP(S) under ``policy``; each redirect hop is checked like the first."""
    import httpx

    for _ in range(MAX_REDIRECTS + 1):
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise InvalidImage(f"{name}: {url!r} is not an http(s) URL")
        port = parts.port or (443 if parts.scheme == "https" else 80)
        target, headers, extensions = _pinned(url, await _checked_address(parts.hostname, port, name, policy))
        try:
            async with client.stream("GET", target, headers=headers, extensions=extensions,
                                     timeout=policy.fetch_timeout, follow_redirects=False) as response:
                if response.is_redirect:  # (relative to the URL asked for, not to the pinned one)
                    url = str(httpx.URL(url).join(response.headers.get("location", "")))
                    continue
                if response.status_code != 200:
                    raise InvalidImage(f"{name}: fetching {url} answered HTTP {response.status_code}")
                content_type = response.headers.get("content-type", "").lower()
                if not content_type.startswith(IMAGE_TYPES):
                    raise InvalidImage(f"{name}: {url} is {content_type or 'untyped'}, not an image")
                length = response.headers.get("content-length")
                if length is not None and length.isdigit() and int(length) > policy.max_bytes:
                    raise InvalidImage(f"{name}: the image is over the {_bytes_label(policy.max_bytes)} limit")
                body = bytearray()
                async for chunk in response.aiter_bytes():
                    body += chunk
                    if len(body) > policy.max_bytes:
                        raise InvalidImage(f"{name}: the image is over the {_bytes_label(policy.max_bytes)} limit")
                return bytes(body)
        except httpx.TimeoutException:
            raise InvalidImage(f"{name}: fetching {url} took more than {policy.fetch_timeout:g} s") from None
        except httpx.HTTPError as exc:
            raise InvalidImage(f"{name}: fetching {url} failed: {exc}") from None
    raise InvalidImage(f"{name}: more than {MAX_REDIRECTS} redirects")


async def load_bytes(url: str, name: str, policy: MediaPolicy, client) -> bytes:
    """The encoded image behind ``url`` (data:, http(s):// or file://)."""
    scheme = url.split(":", 1)[0].lower() if ":" in url else ""
    if scheme == "data":
        return decode_data_url(url, name, policy)
    if scheme in ("http", "https"):
        return await fetch_http(url, name, policy, client)
    if scheme == "file":
        return await asyncio.to_thread(read_file_url, url, name, policy)
    raise InvalidImage(f"{name}: unsupported URL scheme {scheme or url[:20]!r} (use data:, http(s):// or file://)")


def decode_image(data: bytes, name: str, policy: MediaPolicy):
    """Decoded, EXIF-oriented PIL image; its pixel count is checked before any pixel is decoded."""
    import PIL.Image
    import PIL.ImageOps

    try:
        image = PIL.Image.open(io.BytesIO(data))
    except PIL.Image.DecompressionBombError:
        raise InvalidImage(f"{name}: the image declares more pixels than the {policy.max_pixels} pixel limit "
                           f"(a decompression bomb)") from None
    except (PIL.UnidentifiedImageError, OSError, ValueError, SyntaxError) as exc:
        raise InvalidImage(f"{name}: not a readable image ({exc.__class__.__name__})") from None
    width, height = image.size
    if width * height > policy.max_pixels:
        raise InvalidImage(f"{name}: {width}x{height} is over the {policy.max_pixels} pixel limit")
    if width < 1 or height < 1:
        raise InvalidImage(f"{name}: the image is empty ({width}x{height})")
    try:
        image.load()
        return PIL.ImageOps.exif_transpose(image)
    except (PIL.Image.DecompressionBombError, OSError, ValueError, SyntaxError, EOFError) as exc:
        raise InvalidImage(f"{name}: the image is truncated or corrupt ({exc})") from None
