"""The records every data format is parsed into, and their tokenised form.

A record is one prompt with k >= 1 responses and the preference pairs among them, so that paired data (k=2),
ranked or rated data (k>2, several pairs) and unpaired data (k=1, KTO) share one path through tokenisation,
batching and the forward pass, where the prompt is computed once for all its responses.
"""

from __future__ import annotations

from dataclasses import dataclass, field

Message = dict[str, str]


@dataclass
class PreferenceRecord:
    """One prompt, its responses and which response is preferred to which.

    prompt: the conversation before the responses (system/user/assistant turns), as chat messages.
    responses: k responses, each a list of messages (normally one assistant message).
    pairs: (preferred, dispreferred) indices into responses; a plain pair is [(0, 1)] with 0 = chosen.
    source: "file:line" (1-based line or row) for error messages.
    labels: per-response desirability for unpaired data (KTO), else None.
    """

    prompt: list[Message]
    responses: list[list[Message]]
    pairs: list[tuple[int, int]] = field(default_factory=lambda: [(0, 1)])
    source: str = ""
    labels: list[bool] | None = None

    @property
    def chosen(self) -> list[Message]:
        return self.responses[self.pairs[0][0]]

    @property
    def rejected(self) -> list[Message]:
        return self.responses[self.pairs[0][1]]


@dataclass
class TokenizedRecord:
    """Token ids of one record: the prompt once, then each response on its own.

    prompt_ids + response_ids[i] is exactly the token sequence the model sees for response i; the loss covers
    response_ids only. ref_logps[i], once precomputed, is the reference policy's log-prob of response i.
    """

    prompt_ids: list[int]
    response_ids: list[list[int]]
    pairs: list[tuple[int, int]]
    source: str = ""
    labels: list[bool] | None = None
    prompt_truncated: bool = False
    response_truncated: bool = False
    ref_logps: list[float] | None = None

    @property
    def num_tokens(self) -> int:
        """Tokens when the prompt is shared by all responses (the prefix-sharing layout)."""
        return len(self.prompt_ids) + sum(len(r) for r in self.response_ids)

    @property
    def num_tokens_unshared(self) -> int:
        """Tokens when each response carries its own copy of the prompt (the classic padded layout)."""
        return sum(len(self.prompt_ids) + len(r) for r in self.response_ids)
