"""Text VAE example: KL vanishing and its cure with cyclical annealing (Fu et al., NAACL 2019).

Run ``python examples/text_vae/compare.py`` from the repository root; see README.md here.
"""
