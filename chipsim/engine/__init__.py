"""The engine: quantized, integer-exact training that the modelled chip could run, traced as it runs.

Read it as the pipeline, one folder per concern:

* ``layers/``   -- what a layer is (``layers.protocol``) and the kinds there are: conv/dense blocks
                   (``layers.block``), the heads (``layers.head``), the vision transformer's layers
                   (``layers.vit``);
* ``networks/`` -- stacks of layers with their label input (``networks.network``, ``networks.vit``);
* ``rules/``    -- the learning rules: the rows a step feeds (``rows``), what each block scores and its
                   loss (``objectives``, ``losses``, ``contrastive``), which loss trains which block
                   (``routing``), and the step that composes them (``compose``, ``backward``, ``sequential``);
* ``training/`` -- the trainer, optimizers and the weight update, schedules, the linear probe;
* ``tracing/``  -- what the engine executed, recorded into the trace (``chipsim.trace``) for the chip model.

The engine imports ``chipsim.trace`` (the contract), ``kernels``, ``quant``, ``config``/``modelspec`` and
``errors``; never ``chip``, ``experiments`` or ``report`` (``tests/test_import_boundaries.py``).
"""
