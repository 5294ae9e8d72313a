"""Benchmarks of the prediction API against a floor app, and the stress tool behind stress_test.sh."""
