"""The primitives, one topic per file: each a reference forward, ``fwd`` with residuals and a hand-derived ``bwd``.

Files starting with ``_`` hold arithmetic shared by several topics (window/tap geometry, matrix products, norm
statistics). ``funcdl`` re-exports every primitive flat (``fd.conv2d``); the modules are reachable as ``fd.nn.conv``.
"""
