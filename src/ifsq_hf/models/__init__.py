"""Model classes: the iFSQ autoencoder (diffusers), the DiT transformer (diffusers) and LlamaGen (transformers)."""
