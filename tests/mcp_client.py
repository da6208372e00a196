"""Drives Caxton's MCP face with the official MCP Python SDK (PyPI `mcp` 2.x).

Usage: mcp_client.py stdio CAXTON_BINARY SOCKET MODE
       mcp_client.py http URL TOKEN MODE
MODE is the SDK's connect mode: `auto` (discover, so 2026-07-28) or `legacy` (initialize, so
2025-11-25). Every check is an assert; the last line printed is `ok` when all held.
"""

import sys

import anyio
import httpx2
from mcp import Client, MCPError, StdioServerParameters
from mcp.client.streamable_http import streamable_http_client

TRANSPORT, WHERE, CREDENTIAL, MODE = sys.argv[1:5]
EXPECTED = {"auto": "2026-07-28", "legacy": "2025-11-25"}[MODE]


async def checks(client):
    assert client.protocol_version == EXPECTED, client.protocol_version

    tools = {t.name: t for t in (await client.list_tools()).tools}
    assert {"adder", "slow", "greeter", "test_error_handling"} <= set(tools), sorted(tools)
    assert tools["adder"].description.startswith("Adds and multiplies"), tools["adder"]
    greeter = tools["greeter"].input_schema
    assert greeter["required"] == ["request"], greeter
    assert greeter["properties"]["team"]["default"] == "the Caxton team", greeter

    progress = []

    async def on_progress(value, total, message):
        progress.append((value, message))

    result = await client.call_tool("adder", {"request": "2 + 3"}, progress_callback=on_progress)
    assert not result.is_error, result
    assert result.content[0].text == "The result is 5.", result.content
    assert len(progress) >= 3, progress
    values = [v for v, _ in progress]
    assert values == sorted(values), values
    assert any("calculate" in (m or "") for _, m in progress), progress

    greeted = await client.call_tool("greeter", {"request": "Ada", "team": "the test team"})
    assert not greeted.is_error and greeted.content[0].text, greeted

    failed = await client.call_tool("test_error_handling", {})
    assert failed.is_error, failed
    assert "max_tool_calls" in failed.content[0].text or "limit" in failed.content[0].text, failed

    try:
        await client.call_tool("nobody", {"request": "x"})
        raise AssertionError("an unknown tool was called")
    except MCPError as e:
        assert e.code == -32602, e

    # Cancelling the awaiting task cancels the call (and with it the run).
    with anyio.move_on_after(1.0) as scope:
        await client.call_tool("slow", {"request": "wait"})
    assert scope.cancelled_caught, "the slow call finished within a second"
    # The connection still serves.
    again = await client.call_tool("adder", {"request": "4 * 4"})
    assert again.content[0].text == "The result is 16.", again


async def main():
    if TRANSPORT == "stdio":
        params = StdioServerParameters(command=WHERE, args=["--socket", CREDENTIAL, "mcp"])
        async with Client(params, mode=MODE) as client:
            await checks(client)
    else:
        headers = {"Authorization": f"Bearer {CREDENTIAL}"}
        async with httpx2.AsyncClient(headers=headers, timeout=httpx2.Timeout(30, read=60)) as http:
            async with Client(streamable_http_client(WHERE, http_client=http), mode=MODE) as client:
                await checks(client)
    print("ok")


anyio.run(main)
