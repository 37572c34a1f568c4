"""Models: the one ViT encoder and the front-ends that feed it."""
