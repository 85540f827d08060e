"""udalib: learn, explore and run unsupervised domain adaptation for semantic segmentation.

Import the sub-packages you need (``from udalib import data, models, methods``); nothing heavy is
imported here.
"""

__version__ = "0.1.0"
