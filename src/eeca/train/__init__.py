"""Training recipes for stages 1-3 (paper 5.1, App. A): dataset, collator, Trainer, DeepSpeed and LoRA.
"""
