"""Training: the unlearning loop (``unlearn``) and fine-tuning (``finetune``) on one shared loop.

``loop`` steps the model; ``batches`` decides what each step sees; ``forward`` runs the
passes a method asked for; ``stopping`` decides when to stop; ``checkpoints`` resumes;
``output`` publishes; ``setup`` prepares the output, the accelerator and the optimiser.
"""

from unmem.train.setup import add_lora, check_output
from unmem.train.unlearning import load_unlearning_data, unlearn

__all__ = ["add_lora", "check_output", "load_unlearning_data", "unlearn"]
