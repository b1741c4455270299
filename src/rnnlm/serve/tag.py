"""A tagger on the page: tags and entities of a sentence (the API's own path), each token's tag marginals, and the
CRF's transition scores.

The marginals p(y_t = k | sentence) of a CRF come from the forward-backward algorithm over the model's emissions
and the CRF's scores; a softmax head's are its per-token softmax.
"""

from __future__ import annotations

from typing import Any

import torch

from rnnlm.tagging.api import SequenceTagger
from rnnlm.tagging.crf import CRF
from rnnlm.tagging.encoding import collate, encode, tokenize
from rnnlm.tagging.model import CRFTagHead, TaggerEnsemble

# The seed's example pair: one word, two readings.
EXAMPLES = ["I like eating apple", "Apple is a great company"]


def crf_marginals(crf: CRF, emissions: torch.Tensor) -> torch.Tensor:
    """(T, K) emissions of one sentence -> (T, K) marginal probability of each tag at each step."""
    trans, T = crf.transitions.double(), emissions.shape[0]
    e = emissions.double()
    alpha = [crf.start_transitions.double() + e[0]]  # log-sum over the paths up to t that end in each tag
    for t in range(1, T):
        alpha.append(torch.logsumexp(alpha[-1][:, None] + trans, dim=0) + e[t])
    beta = [crf.end_transitions.double()]  # log-sum over the paths from t to the end, given the tag at t
    for t in range(T - 1, 0, -1):
        beta.append(torch.logsumexp(trans + (e[t] + beta[-1])[None, :], dim=1))
    beta.reverse()
    return torch.softmax(torch.stack(alpha) + torch.stack(beta), dim=-1)


@torch.no_grad()
def tag_line(tagger: SequenceTagger, line: str) -> dict[str, Any]:
    """Tokens, tags and entities of one line (``tag_text``), with the marginals of each token over the model's tags."""
    result = tagger.tag_text(line)
    if not result:
        return {"tokens": [], "tags": [], "entities": [], "marginals": [], "tag_names": []}
    item = result[0]
    tokens = [t for t, _, _ in tokenize(line)]
    m = tagger.config.model
    docs = [0] if tagger.char_lm is not None else None
    sent = encode(
        tagger.encoder,
        [tokens],
        None,
        tagger.config.data.max_word_chars,
        tagger.char_lm,
        docs,
        m.char_lm_context == "document",
    )
    batch = collate(sent, [0])
    model = tagger.model
    scores = model(batch.words, batch.chars, batch.lengths, batch.lm)[0]  # (T, K)
    head = model.mean_head() if isinstance(model, TaggerEnsemble) else model.head
    if isinstance(head, CRFTagHead):
        marginals = crf_marginals(head.crf, scores)
    else:
        marginals = torch.softmax(scores.double(), dim=-1)
    item["marginals"] = [[round(p, 4) for p in row] for row in marginals.tolist()]
    item["tag_names"] = list(tagger.encoder.tags.tags)
    return item


def transitions(tagger: SequenceTagger) -> dict[str, Any] | None:
    """The CRF's transition scores [from][to] with the start and end scores, or None for a softmax head."""
    model = tagger.model
    head = model.mean_head() if isinstance(model, TaggerEnsemble) else model.head
    if not isinstance(head, CRFTagHead):
        return None
    crf = head.crf
    return {
        "tags": list(tagger.encoder.tags.tags),
        "matrix": [[round(v, 3) for v in row] for row in crf.transitions.tolist()],
        "start": [round(v, 3) for v in crf.start_transitions.tolist()],
        "end": [round(v, 3) for v in crf.end_transitions.tolist()],
    }
