"""Stable Diffusion nodes: loaders, conditioning, sampling, latents, VAE and images."""
