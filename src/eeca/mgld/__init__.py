"""MGLD, the Multi-Granularity Landmark Dataset (paper 3.1, 4.1, App. B.3-B.4): stages 2 and 3.

``questions`` (the seeded question set), ``tasks`` (versioned prompts and reply schemas),
``client`` (OpenAI-compatible chat client), ``annotators`` (openai / hf / template backends),
``stages`` (the resumable stage verbs and the MGLD export), ``split`` (train/test by landmark),
``schema`` and ``validate`` (record checks and ``eeca mgld validate``).
"""
