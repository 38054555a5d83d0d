"""A small MCP server on stdio, made with the official MCP Python SDK (PyPI `mcp`, installed by
scripts/pyclients.sh), for voxloop's MCP client tests (tests/mcp_client.rs).

Its tools cover what a client must handle: a plain text answer (`echo`), typed arguments
(`add`), an error result (`refuse`), non-text content (`picture`), trace propagation (`trace`),
a destructive tool (`wipe`), a slow one (`pause`, for fillers and timeouts), a process that
dies mid-call (`crash`), a 10 MB answer (`huge`), and a tool list that changes (`unlock` adds
`secret`, drops `picture`, `trace`, `crash` and `huge`, and sends
`notifications/tools/list_changed`). (A tool with a non-object input schema
cannot be made with the SDK, which refuses to list one: tests/mcp/bad_schema.py is that server.) Strings are bounded (`maxLength`) and the argument objects closed
(`additionalProperties: false`) so that a random-weight model's constrained call ends within a
few dozen tokens. `COUNT_FILE`, when set, gets one line per start of the process, so a test
can see a restart; `CANCEL_FILE` one line per `pause` call the client cancelled.
"""

import asyncio
import os
import sys
from typing import Annotated

from pydantic import Field

from mcp.server.mcpserver import Context, MCPServer
from mcp.server.mcpserver.exceptions import ToolError
from mcp.server.mcpserver.utilities.types import Image
from mcp.types import ToolAnnotations

server = MCPServer("voxloop-test-server")


Short = Annotated[str, Field(max_length=12)]


@server.tool(annotations=ToolAnnotations(readOnlyHint=True))
def echo(text: Short) -> str:
    """Answers the text as it is."""
    return text


@server.tool()
def add(a: int, b: int) -> str:
    """Adds two integers."""
    return str(a + b)


@server.tool()
def refuse(reason: Short) -> str:
    """Always fails, with the reason."""
    # A ToolError's message reaches the client (other exceptions give a generic one).
    raise ToolError(f"refused: {reason}")


@server.tool()
def picture() -> Image:
    """A tiny PNG."""
    return Image(data=b"\x89PNG\r\n\x1a\n" + bytes(8), format="png")


@server.tool()
def trace(ctx: Context) -> str:
    """The W3C traceparent the call carried in its _meta ("none" without one)."""
    params = ctx.request_context.params or {}
    meta = params.get("_meta") or {}
    return str(meta.get("traceparent", "none"))


@server.tool(annotations=ToolAnnotations(destructiveHint=True))
def wipe() -> str:
    """Pretends to delete everything (a destructive tool: the client asks a person first)."""
    return "wiped"


@server.tool(annotations=ToolAnnotations(readOnlyHint=True))
async def pause() -> str:
    """Takes a second and a half, then says so (a slow lookup)."""
    try:
        await asyncio.sleep(1.5)
    except asyncio.CancelledError:
        # The client gave up (notifications/cancelled): `CANCEL_FILE` records it.
        if os.environ.get("CANCEL_FILE"):
            with open(os.environ["CANCEL_FILE"], "a") as f:
                f.write("pause cancelled\n")
        raise
    return "paused 1.5 s"


@server.tool()
def crash() -> str:
    """Ends the server process at once."""
    sys.stdout.flush()
    os._exit(3)


@server.tool(annotations=ToolAnnotations(readOnlyHint=True))
def huge() -> str:
    """Answers with 10 MB of text."""
    return "x" * 10_000_000


def secret(word: Short) -> str:
    """Marks the word (listed once unlock ran)."""
    return f"secret {word}"


DROPPED_BY_UNLOCK = ("picture", "trace", "crash", "huge")


@server.tool()
async def unlock(ctx: Context) -> str:
    """Swaps tools: adds secret, drops four."""
    names = {tool.name for tool in server._tool_manager.list_tools()}
    if "secret" not in names:
        server.add_tool(secret)
        close_schemas()
    for name in DROPPED_BY_UNLOCK:
        if name in names:
            server.remove_tool(name)
    await ctx.session.send_tool_list_changed()
    return "unlocked"


def close_schemas():
    """A random-weight model would go on writing properties an open schema allows: close them,
    as a careful server does."""
    for tool in server._tool_manager.list_tools():
        tool.parameters["additionalProperties"] = False


close_schemas()

if __name__ == "__main__":
    count = os.environ.get("COUNT_FILE")
    if count:
        with open(count, "a", encoding="utf-8") as f:
            f.write("start\n")
    server.run("stdio")
