"""Benchmarks and evaluations of the GenePT and scMPT papers."""
