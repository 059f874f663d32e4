"""HRM-LM: a Hierarchical Reasoning Model encoder (Wang et al. 2025, arXiv 2506.21734) with a causal LM decoder.

Import submodules directly (`runners.hrm_lm.model`, `.config`, ...): this package stays import-light so that
`prepare.py --help` and error paths do not pay for torch.
"""
