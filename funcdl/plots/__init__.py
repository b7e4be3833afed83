"""funcdl.plots: PNG figures written with matplotlib (Agg backend, no display needed).

``training``: loss, accuracy and learning-rate curves of a run directory (read from ``metrics.jsonl``).
Other modules add their own figures here.
"""
