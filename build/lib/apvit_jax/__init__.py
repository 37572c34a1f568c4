"""apvit_jax: Vision Transformers that choose where to look (ViT, PiT, DPS-ViT, APViT, IPS) in JAX/Flax."""

__version__ = "0.1.0"
