"""Flax modules of the MUSIQ network: patch encoders, embeddings, the encoder and the model."""
