"""`make demo`: the synthetic world through the whole pipeline, pre-trained against random initialisation."""
