"""Helpers for the loopback HTTP servers tests start (an OpenAI-compatible model server, a hub)."""

from __future__ import annotations

import json
from http.server import BaseHTTPRequestHandler
from typing import Any


def send_json(handler: BaseHTTPRequestHandler, reply: Any) -> None:
    """Answer the handler's request with ``reply`` as a 200 JSON body."""
    data = json.dumps(reply).encode()
    handler.send_response(200)
    handler.send_header("Content-Type", "application/json")
    handler.send_header("Content-Length", str(len(data)))
    handler.end_headers()
    handler.wfile.write(data)
