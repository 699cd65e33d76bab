"""medlib: a reproducible companion to MedBLIP, ClinicalBLIP and MiniGPT-Med.

The package holds everything the notebooks call: data (`medlib.data`), models
(`medlib.models`), metrics (`medlib.metrics`), the training loop (`medlib.train`)
and one module per experiment (`medlib.experiments`).
"""

from medlib.seeding import seed_everything

__version__ = "0.1.0"
__all__ = ["seed_everything", "__version__"]
