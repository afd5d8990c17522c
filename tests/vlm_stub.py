"""A local stand-in for a vLLM server: the OpenAI chat-completions endpoint on 127.0.0.1 with scripted answers."""

from __future__ import annotations

import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


def answer(**tags) -> str:
    """A valid captioner answer (150+ word caption_long, 18-word caption_short) with tags overridden."""
    long = "A wide static shot shows a textured panel of soft colour patches drifting slowly to the left. " + " ".join(
        f"word{i}" for i in range(150)
    )
    data = {
        "caption_long": long,
        "caption_short": "A textured panel of soft colour patches drifts slowly to the left across a static "
        "wide frame today.",
        "style": "3D render",
        "subject": "objects",
        "action": "Dynamic",
        "camera_move": "static",
        "quality": "high",
        "watermark": False,
        "nsfw": False,
        "padded": False,
        "multi_scene": False,
        "timelapse": False,
    }
    data.update(tags)
    return json.dumps(data)


class StubServer:
    """`script`: behaviours consumed one per request, then `default`. A behaviour is an answer text,
    ("status", code), or ("slow", seconds, text)."""

    def __init__(self, script=(), default=None) -> None:
        self.script = list(script)
        self.default = default if default is not None else answer()
        self.requests: list[dict] = []
        stub = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args) -> None:  # quiet
                pass

            def do_POST(self) -> None:
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                with threading.Lock():
                    stub.requests.append({"path": self.path, "body": body, "auth": self.headers.get("Authorization")})
                    behaviour = stub.script.pop(0) if stub.script else stub.default
                if isinstance(behaviour, tuple) and behaviour[0] == "status":
                    self.send_response(behaviour[1])
                    self.end_headers()
                    self.wfile.write(b"stub error")
                    return
                if isinstance(behaviour, tuple) and behaviour[0] == "slow":
                    time.sleep(behaviour[1])
                    behaviour = behaviour[2]
                reply = json.dumps({"choices": [{"message": {"role": "assistant", "content": behaviour}}]}).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(reply)))
                self.end_headers()
                self.wfile.write(reply)

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/v1"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def __enter__(self) -> StubServer:
        self.thread.start()
        return self

    def __exit__(self, *_) -> None:
        self.server.shutdown()
        self.server.server_close()
