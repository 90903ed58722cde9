"""Preprocessing: cell sentences and input checks."""
