"""Evaluation (paper 3.1, App. C): k sampled answers per question, the four-level judge, metrics.
"""
