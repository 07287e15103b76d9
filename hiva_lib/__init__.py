"""hiva_lib: the model and data code of the HiVA reproducibility study.

One module per paper concept; notebooks in ``notebooks/`` call into it.
"""
__version__ = "0.1.0"
