"""Research tools on top of the engine: :mod:`.compare` (sweeps and paper-style tables),
:mod:`.profile` (parameters, FLOPs, latency), :mod:`.plots` (response distributions,
training curves), :mod:`.export` (torch.export programs and ONNX files), and the sweep
launchers :mod:`.launch` (local worker processes) and :mod:`.slurm` (submitit jobs)."""
