"""Machine translation, the paper's second system (§3, Figure 5): parallel data, BPE, a Transformer
encoder-decoder built from a config, label-smoothed training, decoding and BLEU / chrF."""
