"""Text corpora for language models: named corpora, batching and the dataset."""
