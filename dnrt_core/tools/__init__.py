"""Research tools on top of the engine: :mod:`.compare` (sweeps and paper-style tables),
:mod:`.profile` (parameters, FLOPs, latency) and :mod:`.plots` (response distributions,
training curves)."""
