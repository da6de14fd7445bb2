"""eeca: measure what a CLIP vision encoder knows, build MGLD, train and evaluate EECA.

Implements "Beyond Sight: Towards Cognitive Alignment in LVLM via Enriched Visual Knowledge".
"""

__version__ = "0.1.0"
