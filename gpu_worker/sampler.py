"""Next-token sampling for a batch: greedy, temperature, top-k, top-p, per-request seeds.

Rows with temperature 0 take the argmax. The others are filtered in one batched pass (top-k, then
top-p over the temperature-scaled distribution) and drawn by the exponential race
(argmax p / E, E ~ Exp(1)), which samples from p exactly; a seeded request draws its noise from
its own generator, so its tokens do not depend on what else is in the batch.
"""

from __future__ import annotations

import torch

from gpu_worker.device_upload import upload_list


class Sampler:
    def __init__(self, seed: int, device: torch.device) -> None:
        self._generator = torch.Generator(device=device).manual_seed(seed)

    def sample(
        self,
        logits: torch.Tensor,
        temperatures: list[float],
        top_ps: list[float],
        top_ks: list[int],
        generators: list[torch.Generator | None],
    ) -> torch.Tensor:
        """logits [B, V] float32 → token ids [B] (on the logits' device)."""
        greedy = logits.argmax(dim=-1)
        random_rows = [i for i, t in enumerate(temperatures) if t > 0.0]
        if not random_rows:
            return greedy
        device = logits.device
        rows = upload_list(random_rows, device)
        sub = logits.index_select(0, rows)
        temps = upload_list([temperatures[i] for i in random_rows], device, torch.float32)
        sub = sub / temps[:, None]
        ks = [top_ks[i] for i in random_rows]
        ps = [top_ps[i] for i in random_rows]
        if any(0 < k < sub.shape[1] for k in ks) or any(p < 1.0 for p in ps):
            sub = _filter(sub, ks, ps)
        probs = torch.softmax(sub, dim=-1)
        noise = torch.empty_like(probs)
        for j, i in enumerate(random_rows):
            gen = generators[i]
            if gen is not None:
                noise[j].exponential_(generator=gen)
        unseeded = [j for j, i in enumerate(random_rows) if generators[i] is None]
        if unseeded:
            draw = torch.empty((len(unseeded), probs.shape[1]), device=device)
            draw.exponential_(generator=self._generator)
            noise[upload_list(unseeded, device)] = draw
        chosen = (probs / noise).argmax(dim=-1)
        return greedy.index_copy(0, rows, chosen)


def _filter(logits: torch.Tensor, top_ks: list[int], top_ps: list[float]) -> torch.Tensor:
    """Mask (to -inf) what top-k and top-p exclude; each row keeps at least its best token."""
    vocab = logits.shape[1]
    device = logits.device
    sorted_logits, order = logits.sort(dim=-1, descending=True)
    ranks = torch.arange(vocab, device=device)[None, :]
    ks = upload_list([k if 0 < k < vocab else vocab for k in top_ks], device)
    drop = ranks >= ks[:, None]
    sorted_logits = sorted_logits.masked_fill(drop, float("-inf"))
    ps = upload_list(top_ps, device, logits.dtype)
    probs = torch.softmax(sorted_logits, dim=-1)
    before = torch.cumsum(probs, dim=-1) - probs  # mass of strictly better tokens
    drop = drop | (before >= ps[:, None])
    drop[:, 0] = False
    sorted_logits = sorted_logits.masked_fill(drop, float("-inf"))
    return torch.full_like(logits, float("-inf")).scatter(1, order, sorted_logits)
