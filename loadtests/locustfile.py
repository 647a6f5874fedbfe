"""Locust load test for a running kvgate gateway (chat + completions, streamed and not).

Headless, bounded in users and time, against a local stack started with `kvgate up`:

    locust -f loadtests/locustfile.py --headless -u 16 -r 4 -t 60s \
        --host http://127.0.0.1:8000

Environment: KVGATE_MODEL (default sim-llama), KVGATE_API_KEY (sent as a Bearer token when
set), KVGATE_MAX_TOKENS (default 64). The task weights below set the traffic mix.
"""

from __future__ import annotations

import json
import os
import random

from locust import HttpUser, between, task

MODEL = os.environ.get("KVGATE_MODEL", "sim-llama")
API_KEY = os.environ.get("KVGATE_API_KEY", "")
MAX_TOKENS = int(os.environ.get("KVGATE_MAX_TOKENS", "64"))
TOPICS = [
    "paged attention",
    "prefix caching",
    "continuous batching",
    "speculative decoding",
    "KV cache eviction",
    "request routing",
    "semantic caching",
    "tensor parallelism",
]


class GatewayUser(HttpUser):
    wait_time = between(0.05, 0.5)

    def on_start(self) -> None:
        self.client.headers["Content-Type"] = "application/json"
        if API_KEY:
            self.client.headers["Authorization"] = f"Bearer {API_KEY}"

    def _chat_body(self, stream: bool) -> dict[str, object]:
        topic = random.choice(TOPICS)
        return {
            "model": MODEL,
            "messages": [
                {"role": "system", "content": "You are a concise assistant."},
                {"role": "user", "content": f"Explain {topic} in two sentences."},
            ],
            "max_tokens": MAX_TOKENS,
            "stream": stream,
        }

    def _completion_body(self, stream: bool) -> dict[str, object]:
        topic = random.choice(TOPICS)
        return {
            "model": MODEL,
            "prompt": f"A short note on {topic}:",
            "max_tokens": MAX_TOKENS,
            "stream": stream,
        }

    def _stream(self, path: str, body: dict[str, object], name: str) -> None:
        with self.client.post(
            path, data=json.dumps(body), stream=True, name=name, catch_response=True
        ) as response:
            if response.status_code != 200:
                response.failure(f"status {response.status_code}: {response.text[:200]}")
                return
            done = False
            for line in response.iter_lines():
                if line.startswith(b"data: [DONE]"):
                    done = True
                elif b'"error"' in line:
                    response.failure(line[:200].decode(errors="replace"))
                    return
            if not done:
                response.failure("stream ended without [DONE]")

    @task(4)
    def chat_stream(self) -> None:
        self._stream("/v1/chat/completions", self._chat_body(True), "chat (stream)")

    @task(2)
    def chat(self) -> None:
        self.client.post(
            "/v1/chat/completions", data=json.dumps(self._chat_body(False)), name="chat"
        )

    @task(2)
    def completion_stream(self) -> None:
        self._stream("/v1/completions", self._completion_body(True), "completions (stream)")

    @task(1)
    def completion(self) -> None:
        self.client.post(
            "/v1/completions", data=json.dumps(self._completion_body(False)), name="completions"
        )

    @task(1)
    def models(self) -> None:
        self.client.get("/v1/models", name="models")
