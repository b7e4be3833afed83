"""Explainability and the geometry of learning: attributions and their sanity checks (``attribution``, ``cam``,
``sanity``), loss landscapes (``landscape``), curvature through the hand-derived rules (``curvature``), and the
dynamics of training: gradient flow, initialisation and depth, capacity (``dynamics``, ``depth``).

The functions take plain callables (an ``apply``, a ``loss``) and parameter pytrees, so they work on any funcdl
model and on any run loaded from disk; the command line (``funcdl explain``, ``funcdl landscape``) wraps them."""

from . import attribution, cam, sanity
from .attribution import (
    completeness,
    gradient,
    gradient_x_input,
    guided_backprop,
    integrated_gradients,
    smoothgrad,
)
from .cam import gradcam, gradcam_plus_plus, tokens_to_map
from .sanity import cascading_randomization, deletion_insertion, saliency_map, spearman

__all__ = [
    "attribution", "cam", "sanity", "completeness", "gradient", "gradient_x_input", "guided_backprop",
    "integrated_gradients", "smoothgrad", "gradcam", "gradcam_plus_plus", "tokens_to_map", "cascading_randomization",
    "deletion_insertion", "saliency_map", "spearman",
]
