"""Loss summaries: perplexity and bits per token are derived from the mean negative log-likelihood here and
nowhere else."""

from __future__ import annotations

import math

LN2 = math.log(2.0)


def summarize(nll_sum: float, count: int) -> dict[str, float]:
    """Mean NLL in nats per token, perplexity exp(loss), and bits per token loss / ln 2."""
    loss = nll_sum / max(count, 1)
    ppl = math.exp(loss) if loss < 700 else math.inf
    return {"loss": loss, "ppl": ppl, "bpt": loss / LN2}
