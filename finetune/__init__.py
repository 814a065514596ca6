"""finetune: instruction and chain-of-thought finetuning that tells you whether it helped."""

__version__ = "0.1.0"
