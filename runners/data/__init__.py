"""Data side of the runners: readers, field mapping, mixtures, tokenization and packing.

Modules here import only stdlib + pyarrow/numpy at top level; tokenizers/transformers/datasets load lazily.
"""
