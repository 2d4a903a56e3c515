"""The NumPy engine: Dense layers, activations, losses, optimizers and the Sequential model."""

from initlab.nn.gradcheck import GradcheckError, GradcheckResult, gradcheck
from initlab.nn.layers import Dense, Residual
from initlab.nn.losses import Loss
from initlab.nn.model import NeuralNetwork, Sequential, replica_labels, sweep
from initlab.nn.optimizers import SGD, Adam

__all__ = ["SGD", "Adam", "Dense", "GradcheckError", "GradcheckResult", "Loss",
           "NeuralNetwork", "Residual", "Sequential", "gradcheck", "replica_labels", "sweep"]
