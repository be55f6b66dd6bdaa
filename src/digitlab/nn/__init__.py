"""The NumPy engine: layers with hand-written backward passes, losses, optimisers, schedules,
initialisers, the `Sequential` model and its file format, gradient checking and the training loop."""

from digitlab.nn.conv import AvgPool2D, BatchNorm, Conv2D, GlobalAvgPool, MaxPool2D
from digitlab.nn.gradcheck import gradcheck, numeric_grad, relative_error
from digitlab.nn.layers import LAYERS, Dense, Dropout, Flatten, Layer, LeakyReLU, ReLU, Sigmoid, Tanh, build_layer
from digitlab.nn.losses import MSE, SoftmaxCrossEntropy, one_hot, softmax
from digitlab.nn.model import Sequential, load
from digitlab.nn.optim import SGD, Adam, Optimizer
from digitlab.nn.schedules import Constant, Cosine, OneCycle, StepDecay, make_schedule
from digitlab.nn.train import History, confusion_matrix, evaluate, fit

__all__ = [
    "LAYERS", "MSE", "SGD", "Adam", "AvgPool2D", "BatchNorm", "Constant", "Conv2D", "Cosine", "Dense", "Dropout",
    "Flatten", "GlobalAvgPool", "History", "Layer", "LeakyReLU", "MaxPool2D", "OneCycle", "Optimizer", "ReLU",
    "Sequential", "Sigmoid", "SoftmaxCrossEntropy", "StepDecay", "Tanh", "build_layer", "confusion_matrix",
    "evaluate", "fit", "gradcheck", "load", "make_schedule", "numeric_grad", "one_hot", "relative_error", "softmax",
]
