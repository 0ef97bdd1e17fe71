"""A local OpenAI-compatible judge server on 127.0.0.1, deterministic and, on purpose, position-biased.

POST /v1/chat/completions reads the two responses out of the judging prompt. The response containing
"(correct)" wins; neither does: a tie. Model "biased-judge" answers "A" whatever the responses on any
conversation marked "[hard]", as position-biased LLM judges do on pairs they find hard; "fair-judge" never
does. A conversation marked "[garbage]" gets a reply with no verdict in it. Replies vary in form (plain JSON,
a ```json fence, JSON inside prose) so that the parsing is exercised too.
"""

from __future__ import annotations

import json
import re
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

MODELS = ("fair-judge", "biased-judge")
_SECTION = re.compile(r"\[Response ([AB])\]\n(.*?)\n\[End of Response \1\]", re.DOTALL)


def verdict_for(model: str, user_text: str) -> str:
    conversation = user_text.split("[End of conversation]")[0]
    if "[garbage]" in conversation:
        return "I would rather not say which one is better."
    responses = dict(_SECTION.findall(user_text))
    if model == "biased-judge" and "[hard]" in conversation:
        winner = "A"
    else:
        winner = next((letter for letter in "AB" if "(correct)" in responses[letter]), "tie")
    verdict = json.dumps({"winner": winner, "rationale": f"{model} read response {winner}"})
    forms = (verdict, f"```json\n{verdict}\n```", f"Having compared both: {verdict} That is my verdict.")
    return forms[len(conversation) % 3]


class JudgeServer(ThreadingHTTPServer):
    def __init__(self):
        super().__init__(("127.0.0.1", 0), JudgeHandler)
        self.requests: list[dict] = []
        self.lock = threading.Lock()

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}/v1"


class JudgeHandler(BaseHTTPRequestHandler):
    timeout = 10

    def do_POST(self):  # noqa: N802 (the http.server API)
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        with self.server.lock:
            self.server.requests.append(body)
        if body["model"] not in MODELS:
            return self._reply(404, {"error": {"message": f"model {body['model']} not found"}})
        text = verdict_for(body["model"], body["messages"][-1]["content"])
        choice = {"index": 0, "message": {"role": "assistant", "content": text}, "finish_reason": "stop"}
        self._reply(
            200, {"id": "j", "object": "chat.completion", "created": 0, "model": body["model"], "choices": [choice]}
        )

    def _reply(self, status: int, payload: dict) -> None:
        data = json.dumps(payload).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, *args):
        pass


@pytest.fixture
def judge_server():
    server = JudgeServer()
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    yield server
    server.shutdown()
    server.server_close()
    thread.join(timeout=5)
