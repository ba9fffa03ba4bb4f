"""Sampling: noise schedules, samplers and the KSampler loop (k-diffusion formulation)."""
