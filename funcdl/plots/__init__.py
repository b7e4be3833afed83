"""funcdl.plots: PNG figures written with matplotlib (``matplotlib.figure.Figure`` objects, no pyplot state
and no display needed).

``training``: loss, accuracy and learning-rate curves of a run directory (read from ``metrics.jsonl``).
``generative``: sample grids, reconstructions, denoising triples, interpolations and 2-D latent scatters.
Other modules add their own figures here.
"""
