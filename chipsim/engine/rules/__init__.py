"""Learning rules: rows, objectives, losses, routing and the step that composes them (``compose``)."""
