"""digitlab: neural networks from first principles, up to reading handwritten digits from a camera."""

from digitlab.errors import DigitlabError
from digitlab.nn.model import Sequential, load

__version__ = "0.1.0"
__all__ = ["DigitlabError", "Sequential", "__version__", "load"]
