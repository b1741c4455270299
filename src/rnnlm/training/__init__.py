"""Training any model on any task: the trainer loop, its callbacks, optimizers, and the run lifecycle."""
