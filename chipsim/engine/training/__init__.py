"""Training: the trainer, optimizers and weight update, learning-rate schedules, the linear probe."""
