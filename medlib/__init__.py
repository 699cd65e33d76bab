"""medlib: a reproducible companion to MedBLIP, ClinicalBLIP and MiniGPT-Med.

The package holds everything the notebooks call: data (`medlib.data`), models
(`medlib.models`), metrics (`medlib.metrics`), the training loop (`medlib.train`)
and one module per experiment (`medlib.experiments`).
"""

from medlib.seeding import pin_cpu_dispatch, seed_everything

# Before torch runs a kernel: the CPU code paths every number is computed on (see medlib.seeding).
pin_cpu_dispatch()

__version__ = "0.1.0"
__all__ = ["seed_everything", "__version__"]
