"""Drives voxloop's MCP server with the official MCP Python SDK (PyPI `mcp`).

    client.py stdio <voxloop binary> <calls.json>          # `voxloop mcp` as a child process
    client.py http <url> <calls.json> [bearer token]       # the service's /mcp endpoint

calls.json is a list of {"name": ..., "arguments": {...}}. Prints one JSON object: the
server's name, the listed tools (name, description, input schema) and each call's result
(isError, its text, its structured content, and the media type and decoded size of audio
content; the SDK checks structured content against the tool's output schema), for
tests/mcp_server.rs to check.
"""

import asyncio
import base64
import json
import os
import sys

from mcp import ClientSession, StdioServerParameters
from mcp.client.stdio import stdio_client
from mcp.client.streamable_http import streamable_http_client
from mcp.shared._httpx_utils import create_mcp_http_client


async def exercise(read, write, calls):
    async with ClientSession(read, write) as session:
        init = await session.initialize()
        listed = await session.list_tools()
        results = []
        for call in calls:
            result = await session.call_tool(call["name"], call.get("arguments", {}))
            text = "".join(c.text for c in result.content if getattr(c, "type", "") == "text")
            audio = [
                {"mimeType": c.mime_type, "bytes": len(base64.b64decode(c.data))}
                for c in result.content
                if getattr(c, "type", "") == "audio"
            ]
            results.append(
                {
                    "isError": bool(result.is_error),
                    "text": text,
                    "audio": audio,
                    "structured": result.structured_content,
                }
            )
        return {
            "server": init.server_info.name,
            "tools": [
                {
                    "name": t.name,
                    "description": t.description,
                    "inputSchema": t.input_schema,
                    "outputSchema": t.output_schema,
                }
                for t in listed.tools
            ],
            "calls": results,
        }


async def main():
    mode, target, calls_path = sys.argv[1], sys.argv[2], sys.argv[3]
    with open(calls_path, encoding="utf-8") as f:
        calls = json.load(f)
    if mode == "stdio":
        params = StdioServerParameters(command=target, args=["mcp"], env=dict(os.environ))
        async with stdio_client(params) as (read, write):
            out = await exercise(read, write, calls)
    elif mode == "http":
        # A bare address (support::python_report passes one) is the service's endpoint.
        if "://" not in target:
            target = f"http://{target}/mcp"
        headers = {"Authorization": f"Bearer {sys.argv[4]}"} if len(sys.argv) > 4 else None
        async with create_mcp_http_client(headers=headers) as http:
            async with streamable_http_client(target, http_client=http) as streams:
                out = await exercise(streams[0], streams[1], calls)
    else:
        raise SystemExit(f"unknown mode {mode}")
    print(json.dumps(out))


if __name__ == "__main__":
    asyncio.run(main())
