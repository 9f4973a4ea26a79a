"""Accuracy evaluators: the NAS-Bench-201 table, short training, zero-cost proxies; and the datasets they read."""
