"""initlab: a laboratory for neural-network weight initialization."""

__version__ = "0.1.0"

from initlab import fans, initializers  # noqa: E402
from initlab.nn import Dense, NeuralNetwork, Sequential, gradcheck  # noqa: E402

__all__ = ["Dense", "NeuralNetwork", "Sequential", "__version__", "fans", "gradcheck",
           "initializers"]
