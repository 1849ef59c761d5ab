"""Layers: the protocol every layer implements (``protocol``), conv/dense blocks, heads and the ViT (``vit``)."""
