"""The load generator's own parts (bench/load.py): its HTTP/1.1 client and its /proc readings.

Fast and loopback-only: a tiny asyncio server answers with Content-Length,
chunked and close-delimited bodies, as uvicorn and Node do.
"""

from __future__ import annotations

import asyncio
import os

from bench.load import Connection, Reply, basic_auth, cpu_seconds, percentile, rss_bytes

ANSWERS = [
    b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nSet-Cookie: a=1; Path=/\r\n"
    b"Set-Cookie: b=2; HttpOnly\r\n\r\nhello",
    b"HTTP/1.1 303 See Other\r\nLocation: https://rp.example/cb?code=x&state=y\r\n"
    b"Transfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n2\r\nde\r\n0\r\n\r\n",
    b"HTTP/1.1 200 OK\r\nConnection: close\r\n\r\nuntil the end",
]


async def _serve() -> tuple[asyncio.Server, int]:
    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        for answer in ANSWERS:
            head = await reader.readuntil(b"\r\n\r\n")
            if b"content-length:" in head.lower():
                size = int(head.lower().split(b"content-length:")[1].split(b"\r\n")[0])
                await reader.readexactly(size)
            writer.write(answer)
            await writer.drain()
        writer.close()
        await writer.wait_closed()

    server = await asyncio.start_server(handle, "127.0.0.1", 0)
    return server, server.sockets[0].getsockname()[1]


def test_client_reads_length_chunked_and_close_delimited_bodies() -> None:
    async def scenario() -> list[Reply]:
        server, port = await _serve()
        conn = Connection("127.0.0.1", port)
        try:
            return [
                await conn.request(b"GET", "/"),
                await conn.request(b"POST", "/token", b"X-A: 1\r\n", b"grant_type=x"),
                await conn.request(b"GET", "/last"),
            ]
        finally:
            conn.close()
            server.close()
            await server.wait_closed()

    first, second, third = asyncio.run(scenario())
    assert (first.status, first.body) == (200, b"hello")
    assert first.cookies() == {"a": "1", "b": "2"}
    assert (second.status, second.body) == (303, b"abcde")
    assert second.header("location") == "https://rp.example/cb?code=x&state=y"
    assert (third.status, third.body) == (200, b"until the end")


def test_basic_auth_form_encodes_id_and_secret() -> None:
    # RFC 6749 2.3.1: "a:b" is sent as "a%3Ab" before base64.
    assert basic_auth("a:b", "s") == b"Authorization: Basic YSUzQWI6cw==\r\n"


def test_proc_readings_and_percentiles() -> None:
    sum(i * i for i in range(200_000))  # some CPU of our own
    assert cpu_seconds(os.getpid()) > 0
    assert rss_bytes(os.getpid()) > 1_000_000
    assert percentile([], 0.5) is None
    assert percentile([3.0, 1.0, 2.0], 0.5) == 2.0
    assert percentile([float(i) for i in range(101)], 0.99) == 99.0
