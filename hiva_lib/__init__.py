"""hiva_lib: the model and data code of the HiVA reproducibility study.

One module per paper concept; notebooks in ``notebooks/`` call into it.
"""
__version__ = "0.1.0"

import sys as _sys

if "ipykernel" in _sys.modules:  # a notebook's kernel: the project's errors read as their fix
    from hiva_lib.notebook import install_error_handler as _install_error_handler

    _install_error_handler()
