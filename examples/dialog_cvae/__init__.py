"""Example 2 of Fu et al. (NAACL 2019): a dialog CVAE with a bag-of-words loss; see README.md.

python examples/dialog_cvae/compare.py
"""
