"""The EECA model (paper 4.2, App. A): dual-branch LLaVA with a Perceiver resampler, L_EAC and L_HC.
"""
