"""``OneSendTransport``: a response's head and body leave in one system call."""

from __future__ import annotations

import asyncio

from service.transport import OneSendTransport


class _RecordingTransport(asyncio.Transport):
    def __init__(self) -> None:
        super().__init__()
        self.calls: list[tuple[str, list[bytes]]] = []
        self.closing = False

    def write(self, data: bytes | bytearray | memoryview) -> None:
        self.calls.append(("write", [bytes(data)]))

    def writelines(self, chunks: object) -> None:
        self.calls.append(("writelines", list(chunks)))  # type: ignore[call-overload]

    def close(self) -> None:
        self.calls.append(("close", []))
        self.closing = True

    def abort(self) -> None:
        self.calls.append(("abort", []))
        self.closing = True

    def is_closing(self) -> bool:
        return self.closing

    def get_write_buffer_size(self) -> int:
        return 0


def test_writes_within_one_turn_of_the_loop_leave_in_one_call() -> None:
    async def scenario() -> list[tuple[str, list[bytes]]]:
        inner = _RecordingTransport()
        transport = OneSendTransport(inner, asyncio.get_running_loop())
        transport.write(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\n")
        transport.write(memoryview(b"{}"))
        assert inner.calls == [] and transport.get_write_buffer_size() == 40
        await asyncio.sleep(0)
        transport.write(b"next turn")
        await asyncio.sleep(0)
        return inner.calls

    assert asyncio.run(scenario()) == [
        ("writelines", [b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\n", b"{}"]),
        ("writelines", [b"next turn"]),
    ]


def test_closing_sends_what_is_held_and_aborting_drops_it() -> None:
    async def scenario(end: str) -> list[tuple[str, list[bytes]]]:
        inner = _RecordingTransport()
        transport = OneSendTransport(inner, asyncio.get_running_loop())
        transport.write(b"last words")
        getattr(transport, end)()
        await asyncio.sleep(0)  # The scheduled send finds nothing more to send.
        transport.write(b"after the end")
        await asyncio.sleep(0)
        return inner.calls

    assert asyncio.run(scenario("close")) == [("writelines", [b"last words"]), ("close", [])]
    assert asyncio.run(scenario("abort")) == [("abort", [])]
