"""The synthetic landmark world in GLDv2 format and the tiny stand-in CLIP, tokenizer and LLM trained on it (DESIGN section 8).
"""
