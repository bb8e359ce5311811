"""Measurement, not teaching: ``python -m benchmarks.bench`` (per update and per epoch, against autograd, numpy,
JAX and the FLOP floor) and ``python -m benchmarks.gpu_check`` (everything a lent GPU should run, in one call)."""
