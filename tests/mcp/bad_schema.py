"""A misbehaving MCP server on stdio for voxloop's MCP client tests (tests/mcp_client.rs): it
speaks JSON-RPC well enough to be started, but lists one tool whose input schema is an array
schema, which MCP forbids (the official SDK will not even send it) and no call grammar can take,
beside one good tool. A client must leave the bad tool out and keep the good one.

Standard library only; one JSON-RPC message per line, as MCP's stdio transport frames them.
"""

import json
import sys

TOOLS = [
    {"name": "good", "description": "Says ok.",
     "inputSchema": {"type": "object", "properties": {}, "additionalProperties": False}},
    {"name": "bad", "description": "Declares an array schema.",
     "inputSchema": {"type": "array", "items": {"type": "string"}}},
]


def answer(request_id, result):
    sys.stdout.write(json.dumps({"jsonrpc": "2.0", "id": request_id, "result": result}) + "\n")
    sys.stdout.flush()


for line in sys.stdin:
    message = json.loads(line)
    method, request_id = message.get("method"), message.get("id")
    if request_id is None:
        continue  # a notification
    if method == "initialize":
        answer(request_id, {
            "protocolVersion": message["params"]["protocolVersion"],
            "capabilities": {"tools": {"listChanged": False}},
            "serverInfo": {"name": "bad-schema", "version": "0"},
        })
    elif method == "tools/list":
        answer(request_id, {"tools": TOOLS})
    elif method == "tools/call":
        answer(request_id, {"content": [{"type": "text", "text": "ok"}], "isError": False})
    else:
        sys.stdout.write(json.dumps({"jsonrpc": "2.0", "id": request_id,
                                     "error": {"code": -32601, "message": "no such method"}}) + "\n")
        sys.stdout.flush()
