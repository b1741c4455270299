"""Frame sequences: recurrent models over real-valued feature vectors (e.g. speech frames)."""
