"""Token log-probabilities and the label conventions every layer shares.

Data (collation), metrics (scoring) and methods (losses) all need the same two facts:
which label marks "no loss here" and how a label's log-probability is read off the
logits. They live here, below all three, so none of them imports another for it.
"""

from __future__ import annotations

import torch

IGNORE_INDEX = -100
# Value of a token weight inside a sensitive span (1.0 elsewhere). It is a marker, not a
# weight: collation cannot know a method's config, so DI maps it to its own ``focus_coeff``.
SENSITIVE_MARKER = 2.0


def token_logps(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """log-softmax gathered at the labels; masked positions give 0 (never index -100)."""
    mask = labels != IGNORE_INDEX
    safe_labels = labels.masked_fill(~mask, 0)
    logps = torch.log_softmax(logits.float(), dim=-1).gather(-1, safe_labels.unsqueeze(-1)).squeeze(-1)
    return logps * mask
