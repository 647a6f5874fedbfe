"""`may_serve_hit`, table-driven: when the gateway answers a hit, asks a worker, or refuses."""

from __future__ import annotations

import pytest

from config.context_length import ContextLimit
from config.protocol import RequestError
from config.worker_wire import WorkerStats
from gateway.hit_context import limit_of, may_serve_hit

SMALL = ContextLimit(max_model_len=100, max_prompt_tokens=99)
LARGE = ContextLimit(max_model_len=1000, max_prompt_tokens=999)
KV_BOUND = ContextLimit(max_model_len=1000, max_prompt_tokens=63)  # a small KV cache


@pytest.mark.parametrize(
    ("limits", "prompt", "max_tokens", "serve"),
    [
        ([], 50, 10, True),  # no worker reports limits: nothing to apply
        ([SMALL, None], 500, 900, True),  # a worker of unknown limits might take it
        ([SMALL], None, 10, False),  # limits known, length not: a worker decides
        ([SMALL], 50, 50, True),  # exactly the context
        ([SMALL], 99, None, True),  # no max_tokens: the worker fills in the 1 token left
        ([SMALL, LARGE], 50, 500, True),  # one worker takes it
        ([KV_BOUND], 63, 900, True),
    ],
)
def test_served_or_sent_on(limits, prompt, max_tokens, serve):
    assert may_serve_hit(limits, prompt, max_tokens, param="messages") is serve


@pytest.mark.parametrize(
    ("limits", "prompt", "max_tokens", "param", "said"),
    [
        ([SMALL], 50, 51, "max_tokens", "exceed the context of 100"),
        ([SMALL], 100, None, "prompt", "takes at most 99"),
        ([KV_BOUND], 64, 1, "prompt", "takes at most 63"),
        # Every worker refuses: the most generous one's refusal is the answer.
        ([SMALL, LARGE], 50, 951, "max_tokens", "context of 1000"),
    ],
)
def test_refused_as_the_workers_refuse(limits, prompt, max_tokens, param, said):
    with pytest.raises(RequestError) as caught:
        may_serve_hit(limits, prompt, max_tokens, param="prompt")
    err = caught.value
    assert (err.status, err.code, err.param) == (400, "context_length_exceeded", param)
    assert said in err.message


def test_limits_from_stats():
    assert limit_of(None) is None
    assert limit_of(WorkerStats(model="m")) is None  # max_model_len not reported
    old = WorkerStats(model="m", max_model_len=512)  # a worker without max_prompt_tokens
    assert limit_of(old) == ContextLimit(max_model_len=512, max_prompt_tokens=511)
    new = WorkerStats(model="m", max_model_len=512, max_prompt_tokens=127)
    assert limit_of(new) == ContextLimit(max_model_len=512, max_prompt_tokens=127)
