"""The recognition pipeline: find, read and group handwritten digits in photos."""

from digitlab.vision.pipeline import PipelineConfig, PipelineResult
from digitlab.vision.recognizer import Recognizer, load_model

__all__ = ["PipelineConfig", "PipelineResult", "Recognizer", "load_model"]
