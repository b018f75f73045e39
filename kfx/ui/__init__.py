"""`kfx ui`: a read-only web UI over a root's run records, MLMD store and model registry."""
