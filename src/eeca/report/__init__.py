"""Reports from result files only (no torch): the paper's tables and figures as HTML and markdown.
"""
