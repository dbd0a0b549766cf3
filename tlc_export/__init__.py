"""tlc: Train Large, Then Compress — pretrain a size grid under one wall-clock budget,
finetune, prune, quantize, export and benchmark every variant."""

__version__ = "0.1.0"
