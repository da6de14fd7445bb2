"""The Multi-Granularity Landmark Dataset (paper 3.1, 4.1, App. B): records, questions, annotators, stages 2-3, splits, export.
"""
