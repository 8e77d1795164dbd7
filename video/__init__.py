"""Video input: probing, decoding with PyAV, temporal sampling and the model's recorded preprocessing."""
