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

import pytest

from tests.local_server import JSONHandler, LocalServer, serving

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


class JudgeHandler(JSONHandler):
    def do_POST(self):  # noqa: N802 (the http.server API)
        body = self.read_json()
        if body["model"] not in MODELS:
            return self.reply(404, {"error": {"message": f"model {body['model']} not found"}})
        text = verdict_for(body["model"], body["messages"][-1]["content"])
        choice = {"index": 0, "message": {"role": "assistant", "content": text}, "finish_reason": "stop"}
        self.chat_completion(body["model"], [choice])


@pytest.fixture(autouse=True)
def no_openai_environment(monkeypatch):
    """The developer's own OPENAI_API_KEY / OPENAI_BASE_URL must not reach the tests' servers."""
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    monkeypatch.delenv("OPENAI_BASE_URL", raising=False)


@pytest.fixture
def judge_server():
    with serving(LocalServer(JudgeHandler)) as server:
        yield server
