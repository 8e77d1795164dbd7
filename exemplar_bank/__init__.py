"""exemplar_bank."""
