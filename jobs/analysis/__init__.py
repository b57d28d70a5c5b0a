"""Analyses of the model and its data: does it learn or copy? Self-contained job code (numpy, torch, PIL)."""
