"""A webhook receiver on loopback: where the demo's alerts are delivered, one JSON file each."""

from __future__ import annotations

import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

__all__ = ["WebhookInbox"]


class WebhookInbox:
    """Accepts ``POST`` JSON bodies on ``http://127.0.0.1:<port>/`` and saves them to a folder.

    It stands in for the team's chat or incident tool: the alerts reach it through the same
    webhook channel (HTTP, retries, token) that a real endpoint gets.

    Args:
        folder: Where each received alert is written as ``alert-<n>.json``.
    """

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        folder.mkdir(parents=True, exist_ok=True)
        self.received: list[dict] = []
        inbox = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                try:
                    alert = json.loads(body or b"null")
                except json.JSONDecodeError:
                    self.send_error(400, "expected a JSON body")
                    return
                inbox.received.append(alert)
                path = inbox.folder / f"alert-{len(inbox.received)}.json"
                path.write_text(json.dumps(alert, indent=2) + "\n")
                self.send_response(204)
                self.end_headers()

            def log_message(self, *args) -> None:
                pass

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self._server.server_address[1]}/"
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)
        self._thread.start()

    def close(self) -> None:
        """Stop listening."""
        self._server.shutdown()
        self._server.server_close()
