"""What every use shares: errors, atomic writes, checkpoint files, text reading, the vocabulary, the
config field toolkit and plots."""
