"""Language models: corpora, the model, training, evaluation and generation."""
