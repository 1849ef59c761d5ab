"""The vision transformer's layers: encoder maths (``transformer``, ``mhsa``, ``token_layers``) and the layer the rules drive (``block``)."""
