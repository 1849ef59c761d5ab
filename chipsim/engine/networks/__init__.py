"""Networks: stacks of layers with their label input, for conv/dense models (``network``) and the ViT (``vit``)."""
