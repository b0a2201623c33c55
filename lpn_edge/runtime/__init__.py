"""Torch-free onboard runtime: numpy (and, lazily, CUDA) code that a drone without PyTorch can run."""
