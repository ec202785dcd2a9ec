"""HTTP and HTTP_MULTIPART steps: egress policy and the request itself (httpx).

The policy is engine configuration, never user-settable: `disabled` (default), `allowlist`
(domain suffixes) or `allow-all`. Targets are resolved first and every resolved address is
checked, and the connection is pinned to the checked address, so DNS rebinding cannot sneak a
private, loopback, link-local, CGNAT or IPv4-mapped address past the check. Redirects are never
followed; request and response bodies are capped.
"""

from __future__ import annotations

import base64
import ipaddress
import socket
import time
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

import httpx

from engine.config import EngineConfig

_CGNAT = ipaddress.ip_network("100.64.0.0/10")


class HttpPolicyError(ValueError):
    """The request is refused by the egress policy (not retryable)."""


class HttpTransientError(RuntimeError):
    """5xx, timeout or connection failure: the node fails, retryable under a retry policy."""

    def __init__(self, message: str, kind: str) -> None:
        super().__init__(message)
        self.kind = kind  # http_5xx | http_timeout | http_connection


@dataclass(frozen=True)
class HttpRequest:
    url: str
    method: str
    body: str | None
    headers: dict[str, str]
    timeout: float
    parts: list[dict[str, Any]] | None = None


def _blocked_address(addr: ipaddress.IPv4Address | ipaddress.IPv6Address) -> str | None:
    if isinstance(addr, ipaddress.IPv6Address) and addr.ipv4_mapped is not None:
        return "an IPv4-mapped IPv6 address"
    if addr.is_loopback:
        return "a loopback address"
    if addr.is_link_local:
        return "a link-local address"
    if isinstance(addr, ipaddress.IPv4Address) and addr in _CGNAT:
        return "a CGNAT address"
    if addr.is_private or addr.is_reserved or addr.is_multicast or addr.is_unspecified:
        return "a private or reserved address"
    return None


def check_url(url: str, config: EngineConfig) -> tuple[str, int, list[str]]:
    """Apply the egress policy; returns (host, port, checked addresses)."""
    if config.http_policy == "disabled":
        raise HttpPolicyError(
            "outbound HTTP requests are disabled by the engine's HTTP policy "
            "(start the engine with --http-policy allowlist --http-allow DOMAIN, or allow-all)"
        )
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https"):
        raise HttpPolicyError(f"unsupported URL scheme {parts.scheme!r}: only http and https are allowed")
    host = (parts.hostname or "").lower()
    if not host:
        raise HttpPolicyError(f"URL {url!r} has no host")
    try:
        ipaddress.ip_address(host)
        is_ip = True
    except ValueError:
        is_ip = False
    if is_ip and config.http_policy != "allow-all" and not config.http_allow_private:
        # Under allow-all a public address is as good as a name (as pg_durable's allow-all
        # build); private, loopback, link-local and CGNAT addresses are refused below.
        raise HttpPolicyError(f"bare IP address {host} is not allowed; use a host name")
    if config.http_policy == "allowlist" and not any(
        host == s.lower().lstrip(".") or host.endswith("." + s.lower().lstrip("."))
        for s in config.http_allow
    ):
        raise HttpPolicyError(f"host {host} is not in the allowed domain list of the HTTP policy")
    port = parts.port or (443 if parts.scheme == "https" else 80)
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except socket.gaierror as exc:
        raise HttpTransientError(f"cannot resolve {host}: {exc}", "http_connection") from exc
    addresses = sorted({str(info[4][0]) for info in infos})  # AF_INET/AF_INET6: (host, port, ...)
    if not config.http_allow_private:
        for a in addresses:
            reason = _blocked_address(ipaddress.ip_address(a.split("%")[0]))
            if reason:
                raise HttpPolicyError(f"host {host} resolves to {a}, {reason}; refused by the HTTP policy")
    return host, port, addresses


class _PinnedTransport(httpx.HTTPTransport):
    """Connects to the address we checked, keeping the URL's host for TLS SNI and Host."""

    def __init__(self, address: str, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self._address = address

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        request.extensions = {**request.extensions, "sni_hostname": request.url.host}
        host_header = request.headers.get("host") or request.url.netloc.decode()
        request.headers["host"] = host_header
        ip = self._address
        request.url = request.url.copy_with(host=ip if ":" not in ip else f"[{ip}]")
        return super().handle_request(request)


def perform(req: HttpRequest, config: EngineConfig, idempotency_key: str) -> dict[str, Any]:
    """Run the request and return the HTTP result envelope."""
    _, _, addresses = check_url(req.url, config)
    body_bytes = req.body.encode() if req.body is not None else None
    if body_bytes is not None and len(body_bytes) > config.http_max_request_bytes:
        raise HttpPolicyError(
            f"request body is {len(body_bytes)} bytes; the limit is {config.http_max_request_bytes}"
        )
    headers = {"idempotency-key": idempotency_key, **req.headers}
    # httpx's multipart file tuples: (filename, content) or (filename, content, content type)
    files: list[tuple[str, tuple[str | None, bytes] | tuple[str | None, bytes, str | None]]] | None
    files = None
    data = None
    if req.parts is not None:
        files = []
        for part in req.parts:
            # parts: [{"name", "data_b64", "filename"?, "content_type"?}] (see df.http_multipart)
            try:
                content = base64.b64decode(part.get("data_b64") or "", validate=True)
            except ValueError as exc:
                raise HttpPolicyError(f'part "{part.get("name")}": data_b64 is not valid base64') from exc
            if part.get("filename") is not None or part.get("content_type") is not None:
                files.append((part["name"], (part.get("filename"), content, part.get("content_type"))))
            else:
                files.append((part["name"], (None, content)))
    started = time.monotonic()
    transport = _PinnedTransport(addresses[0])
    try:
        with httpx.Client(transport=transport, follow_redirects=False, timeout=req.timeout) as client, \
                client.stream(req.method, req.url, headers=headers, content=body_bytes,
                              files=files, data=data) as response:
                chunks = []
                size = 0
                for chunk in response.iter_bytes():
                    size += len(chunk)
                    if size > config.http_max_response_bytes:
                        raise HttpPolicyError(
                            f"response body exceeds the limit of {config.http_max_response_bytes} bytes"
                        )
                    chunks.append(chunk)
                raw = b"".join(chunks)
    except httpx.TimeoutException as exc:
        raise HttpTransientError(f"HTTP request timed out after {req.timeout}s: {exc}", "http_timeout") from exc
    except httpx.HTTPError as exc:
        raise HttpTransientError(f"HTTP request failed: {exc}", "http_connection") from exc
    duration_ms = round((time.monotonic() - started) * 1000, 1)
    if response.status_code >= 500:
        raise HttpTransientError(
            f"HTTP {response.status_code} from {req.url}: {raw[:500].decode(errors='replace')}", "http_5xx"
        )
    try:
        text = raw.decode("utf-8")
        body, encoding = text, "text"
    except UnicodeDecodeError:
        body, encoding = base64.b64encode(raw).decode(), "base64"
    return {
        "status": response.status_code,
        "body": body,
        "encoding": encoding,
        "headers": {k.lower(): v for k, v in response.headers.items()},
        "ok": 200 <= response.status_code < 300,
        "duration_ms": duration_ms,
    }
