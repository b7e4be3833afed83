"""Explainability and the geometry of learning: attributions and their sanity checks (``attribution``, ``cam``,
``sanity``), loss landscapes (``landscape``), curvature through the hand-derived rules (``curvature``), and the
dynamics of training: gradient flow, initialisation and depth, capacity (``dynamics``, ``depth``).

The functions take plain callables (an ``apply``, a ``loss``) and parameter pytrees, so they work on any funcdl
model and on any run loaded from disk; the command line (``funcdl explain``, ``funcdl landscape``) wraps them."""
