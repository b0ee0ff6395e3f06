"""A small HTTP/1.1 keep-alive client for load generation (what wrk is to curl).

The load generator shares the machine with the server it measures: every core it takes is one the server does
not get. httpx's AsyncClient took 0.20-0.26 cores at 180-190 requests/s and 0.65 at 64 connections (the bench's
`client cores` column; gRPC's client 0.08), and the faster a server answered the more it took from it. This client
writes a request head and the body and reads the status line, the headers and a Content-Length or chunked body,
nothing else: no URL objects, cookies, redirects or header models. One request at a time per connection (the
closed loop's workers), connections kept alive and reopened after an error or `Connection: close`.
"""

import asyncio
import contextlib
from collections.abc import AsyncIterator
from dataclasses import dataclass
from urllib.parse import urlsplit


@dataclass(frozen=True)
class RawResponse:
    status: int
    headers: dict[str, str]  # names lower-cased; a repeated header keeps its last value
    body: bytes


class _Connection:
    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader, self.writer = reader, writer

    def close(self) -> None:
        self.writer.close()

    async def exchange(self, request: list[bytes]) -> tuple[RawResponse, bool]:
        """Send `request` (head, body) and read the answer; (response, whether the connection may be reused)."""
        self.writer.writelines(request)
        await self.writer.drain()
        head = await self.reader.readuntil(b"\r\n\r\n")
        lines = head[:-4].decode("latin-1").split("\r\n")
        version, _, rest = lines[0].partition(" ")
        status = int(rest[:3])
        headers = {}
        for line in lines[1:]:
            name, _, value = line.partition(":")
            headers[name.strip().lower()] = value.strip()
        if "content-length" in headers:
            body = await self.reader.readexactly(int(headers["content-length"]))
        elif headers.get("transfer-encoding", "").lower() == "chunked":
            body = await self._chunked()
        else:
            body = b""
        reusable = version == "HTTP/1.1" and headers.get("connection", "").lower() != "close"
        return RawResponse(status, headers, body), reusable

    async def _chunked(self) -> bytes:
        parts = []
        while True:
            size = int((await self.reader.readuntil(b"\r\n"))[:-2].split(b";")[0], 16)
            if size == 0:
                while await self.reader.readuntil(b"\r\n") != b"\r\n":  # trailers, then the blank line
                    pass
                return b"".join(parts)
            parts.append(await self.reader.readexactly(size))
            await self.reader.readexactly(2)


class RawHttpClient:
    """Keep-alive connections to the server of `url` (http:// only), at most `connections` open at once."""

    def __init__(self, url: str, connections: int, headers: dict[str, str] | None = None, timeout_s: float = 60.0):
        parts = urlsplit(url)
        if parts.scheme != "http" or not parts.hostname:
            raise ValueError(f"RawHttpClient speaks plain http://host:port only, got {url!r}")
        self.host, self.port = parts.hostname, parts.port or 80
        self.base_path = parts.path.rstrip("/")
        self.timeout_s = timeout_s
        fixed = {"Host": parts.netloc, **(headers or {})}
        self._fixed = "".join(f"{name}: {value}\r\n" for name, value in fixed.items())
        self._idle: list[_Connection] = []
        self._slots = asyncio.Semaphore(connections)

    def request_head(self, method: str, path: str, length: int, headers: dict[str, str] | None = None) -> bytes:
        extra = "".join(f"{name}: {value}\r\n" for name, value in (headers or {}).items())
        line = f"{method} {self.base_path}{path} HTTP/1.1\r\n"
        return f"{line}{self._fixed}{extra}Content-Length: {length}\r\n\r\n".encode("latin-1")

    async def send(self, head: bytes, body: bytes = b"") -> RawResponse | None:
        """One request (`head` from `request_head`, then `body`); None when it failed on the wire or timed out."""
        async with self._slots:
            connection = self._idle.pop() if self._idle else None
            try:
                async with asyncio.timeout(self.timeout_s):
                    if connection is None:
                        connection = _Connection(*await asyncio.open_connection(self.host, self.port))
                    response, reusable = await connection.exchange([head, body])
            # a reset or timeout (OSError), a cut answer (EOFError), garbage (ValueError), or a response head over
            # the stream reader's 64 KiB limit (LimitOverrunError)
            except (OSError, EOFError, ValueError, asyncio.LimitOverrunError):
                if connection is not None:
                    connection.close()
                return None
            if reusable:
                self._idle.append(connection)
            else:
                connection.close()
            return response

    async def post(self, path: str, body: bytes, headers: dict[str, str] | None = None) -> RawResponse | None:
        return await self.send(self.request_head("POST", path, len(body), headers), body)

    def close(self) -> None:
        for connection in self._idle:
            connection.close()
        self._idle.clear()


@contextlib.asynccontextmanager
async def raw_http_client(
    url: str, connections: int, headers: dict[str, str] | None = None
) -> AsyncIterator[RawHttpClient]:
    client = RawHttpClient(url, connections, headers)
    try:
        yield client
    finally:
        client.close()
