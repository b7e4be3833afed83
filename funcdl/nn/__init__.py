"""The primitives, one topic per file: each a reference forward, ``fwd`` with residuals and a hand-derived ``bwd``.

Files starting with ``_`` hold arithmetic shared by several topics, each in one place: ``_windows`` (window and
tap geometry of conv and pool), ``_matmul`` (matrix products with a compute dtype, bias sums), ``_norm`` (norm
statistics and the affine map), ``_dropout`` (the one dropout rule), ``_gelu``, ``_scores`` (attention masks and
scale); ``losses`` is a package with its own ``_common``. ``funcdl`` re-exports every primitive flat
(``fd.conv2d``); the modules are reachable as ``fd.nn.conv``. The conventions every primitive follows are in
``funcdl.core.primitive``'s docstring.
"""
