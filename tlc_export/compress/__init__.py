"""Compression: the paper's uniform quantizer, magnitude pruning, packed artifacts, error analysis.

Submodules are imported where used (`from tlc_export.compress.quantize import quantize_`) so that
importing the package does not pull matplotlib or transformers.
"""
