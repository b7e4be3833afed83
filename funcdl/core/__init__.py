"""The mechanism every primitive uses: registration (``primitive``), example inputs, the checker, compiler options.

Nothing here knows a layer, a model or the training loop; the primitives in ``funcdl.nn`` build on it.
"""
