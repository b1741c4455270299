"""Sequence tagging: bidirectional recurrent taggers for part of speech and named entities."""
