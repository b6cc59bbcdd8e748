"""The two kernels of a mapping task, with the same arithmetic: ``cpu`` (NumPy and BLAS in
worker threads) and ``gpu`` (torch on a CUDA device; it also runs on torch's CPU device,
which is how the tests check it without a GPU)."""
