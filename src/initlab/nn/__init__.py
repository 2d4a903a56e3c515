"""The NumPy engine: the layer contract, Dense and Residual layers, activations, losses,
optimizers, the Sequential model and its training loop (compiled kernels beside the NumPy
reference)."""

from initlab.nn.contract import Gradients, Layer, Trace
from initlab.nn.gradcheck import GradcheckError, GradcheckResult, gradcheck
from initlab.nn.layers import Dense
from initlab.nn.losses import Loss
from initlab.nn.model import NeuralNetwork, Sequential
from initlab.nn.normalization import BatchNorm, LayerNorm
from initlab.nn.optimizers import SGD, Adam
from initlab.nn.replicas import replica_labels, sweep
from initlab.nn.residual import Residual

__all__ = ["SGD", "Adam", "BatchNorm", "Dense", "GradcheckError", "GradcheckResult", "Gradients",
           "Layer", "LayerNorm", "Loss", "NeuralNetwork", "Residual", "Sequential", "Trace",
           "gradcheck", "replica_labels", "sweep"]
