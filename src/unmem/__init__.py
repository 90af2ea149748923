"""unmem: make causal language models forget, and measure that they did.

Layout follows the pipeline: ``data`` (the offline world, loaders, collators) ->
``models`` (tokenizer, presets, loading) -> ``pretrain`` (the world's base model, and the
target/retain models fine-tuned from it) -> ``methods`` (one loss per file, a registry) -> ``train`` (the unlearning
loop) -> ``metrics`` (pure scoring) -> ``evaluate`` -> ``report`` -> ``cli``.
"""

__version__ = "0.1.0"
