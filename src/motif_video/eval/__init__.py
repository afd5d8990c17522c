"""Evaluation: objective benchmarks and metrics of generated videos."""
