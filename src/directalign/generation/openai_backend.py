"""Sample completions from any OpenAI-compatible server (vLLM serve, llama.cpp server, Ollama, a hosted API).

One `chat.completions.create` request per prompt, several in flight at once (`concurrency`), with n,
temperature, top_p, max_tokens, seed and stop; top_k is not in the OpenAI API and goes in the request body
as the extra field vLLM and llama.cpp read. Some servers (llama.cpp, Ollama) return one choice whatever n
asks for, so the backend asks again for the rest, with a different seed each time. Token ids are not returned.

The key and the server come as the openai client takes them (directalign.secrets): the arguments, else
OPENAI_API_KEY and OPENAI_BASE_URL, else a local server at http://localhost:8000/v1 with no key. Every message
goes through `redact`, so neither a key nor a password in the URL is ever printed.
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from typing import Any

from directalign.data.types import Message
from directalign.errors import ConfigError
from directalign.generation.base import Completion, GenerationConfig, check_prompts, repeat_greedy
from directalign.secrets import api_key as resolve_api_key
from directalign.secrets import base_url as resolve_base_url
from directalign.secrets import redact, redact_logs

# The loggers that print a request's URL: httpx's at INFO ("httpx2" is the fork recent openai clients use) and
# the openai client's own at DEBUG.
_URL_LOGGERS = ("httpx", "httpx2", "openai._base_client")


class OpenAIGenerator:
    """Generator backed by an OpenAI-compatible HTTP endpoint; base_url and api_key None: the environment's
    (OPENAI_BASE_URL, OPENAI_API_KEY) or a local server's (http://localhost:8000/v1, "EMPTY").

    `base_url` (the attribute) is the URL with any credentials masked, for messages; the client keeps the real one.
    """

    def __init__(
        self,
        model: str,
        base_url: str | None = None,
        api_key: str | None = None,
        timeout: float = 120.0,
        max_retries: int = 2,
        concurrency: int = 8,
    ):
        try:
            import openai
        except ImportError as error:
            raise ConfigError("backend 'openai' needs the openai package: pip install openai") from error
        if concurrency < 1:
            raise ConfigError(f"openai backend: concurrency must be >= 1, got {concurrency}")
        url = resolve_base_url(base_url)
        redact_logs(*_URL_LOGGERS)
        self.model = model
        self.base_url = redact(url)
        self.concurrency = concurrency
        self.client = openai.OpenAI(
            base_url=url, api_key=resolve_api_key(api_key), timeout=timeout, max_retries=max_retries
        )
        self._openai = openai

    def generate(self, prompts: list[list[Message]], config: GenerationConfig | None = None) -> list[list[Completion]]:
        config = config or GenerationConfig()
        check_prompts(prompts)
        with ThreadPoolExecutor(max_workers=self.concurrency) as pool:
            futures = [pool.submit(self._sample, i, prompt, config, len(prompts)) for i, prompt in enumerate(prompts)]
            return [future.result() for future in futures]

    def _sample(
        self, index: int, prompt: list[Message], config: GenerationConfig, num_prompts: int
    ) -> list[Completion]:
        wanted = 1 if config.greedy else config.num_samples
        choices: list[Any] = []
        request = 0
        while len(choices) < wanted:
            # A seed per (prompt, request): a top-up request with the first seed would repeat its samples.
            seed = None if config.seed is None else config.seed + index + request * num_prompts
            response = self._create(prompt, config, wanted - len(choices), seed)
            if not response.choices:
                raise ConfigError(f"the server at {self.base_url} returned no choices for prompt {index}")
            choices.extend(response.choices[: wanted - len(choices)])
            request += 1
        completions = [
            Completion(c.message.content or "", None, "length" if c.finish_reason == "length" else "stop")
            for c in choices
        ]
        return repeat_greedy(completions[0], config.num_samples) if config.greedy else completions

    def _create(self, prompt: list[Message], config: GenerationConfig, n: int, seed: int | None) -> Any:
        optional = {"seed": seed, "stop": config.stop}
        extra_body = {"top_k": config.top_k} if config.top_k > 0 else None
        try:
            return self.client.chat.completions.create(
                model=self.model,
                messages=prompt,
                n=n,
                temperature=config.temperature,
                top_p=config.top_p,
                max_tokens=config.max_new_tokens,
                extra_body=extra_body,
                **{key: value for key, value in optional.items() if value is not None},
            )
        except self._openai.APIConnectionError as error:
            raise ConfigError(
                redact(
                    f"cannot reach an OpenAI-compatible server at {self.base_url} ({error}); "
                    "start one (e.g. vllm serve MODEL) or set the base URL (or OPENAI_BASE_URL)"
                )
            ) from None
        except self._openai.APIStatusError as error:
            raise ConfigError(
                redact(
                    f"the server at {self.base_url} refused the request for model {self.model!r}: "
                    f"HTTP {error.status_code} {error.message}"
                )
            ) from None
        except self._openai.OpenAIError as error:  # e.g. a reply that is not a chat completion
            message = f"the server at {self.base_url} failed for model {self.model!r}: {error}"
            raise ConfigError(redact(message)) from None
