"""Plumbing written once: row blocks, devices, progress bars, result keys, stores, docs."""
