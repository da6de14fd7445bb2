"""The experiment grid (paper Tables 1-4, Fig. 5): select -> train -> generate -> judge per cell, resumable.
"""
