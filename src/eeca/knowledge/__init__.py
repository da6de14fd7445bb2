"""What the vision encoder knows (paper section 3.1): CLIP encoding, streaming S / rank / RSR, HDS/HSS/LCS/BRS, stage-1 image choice.
"""
