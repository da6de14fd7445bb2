"""The four recognition levels of the paper (section 3.1): their keys in files and their labels.

Accuracy is the share of Strongly Known + Known (section 3.1, "Evaluation metric").
"""

LEVELS = ("strongly_known", "known", "weakly_unknown", "unknown")
RECOGNISED = ("strongly_known", "known")
LEVEL_TO_LABEL = {"strongly_known": "Strongly Known", "known": "Known", "weakly_unknown": "Weakly Unknown",
                  "unknown": "Unknown"}
LABEL_TO_LEVEL = {label: level for level, label in LEVEL_TO_LABEL.items()}
