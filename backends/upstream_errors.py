"""The three ways a call to a worker fails, shared by every upstream client in backends/.

- `UpstreamUnavailable`: the worker could not be reached, or the connection broke before the
  reply was complete (refused, reset, died). Safe to retry elsewhere when nothing was relayed yet.
- `UpstreamTimeout`: the worker said nothing for `read_timeout_s` (one that will not connect in
  `connect_timeout_s` is `UpstreamUnavailable`: it is not slow, it is gone).
  `ReplyTooLarge` is one: a whole reply over the reader's limit.
- `UpstreamBusy`: every connection the gateway may open is in use (its own limit, not a worker's).
- `UpstreamStatusError`: a probe got a non-2xx answer.
"""

from __future__ import annotations


class UpstreamError(Exception):
    pass


class UpstreamUnavailable(UpstreamError):
    pass


class UpstreamTimeout(UpstreamError):
    pass


class ReplyTooLarge(UpstreamUnavailable):
    """A whole reply longer than the caller's limit: the worker is broken, not the caller."""


class UpstreamBusy(UpstreamError):
    """The gateway's own connection limit is reached: no worker is to blame."""


class UpstreamStatusError(UpstreamError):
    def __init__(self, message: str, status: int = 0) -> None:
        super().__init__(message)
        self.status = status
