"""The ground floor of the node library: the vocabulary every other floor shares.

Errors, model folders, the MODEL/CLIP/VAE handles and a model's sigma table live here, so the floors
above import downwards only: base <- models <- sampling <- the node modules (nodes/sd, ...).
Nothing here imports another floor.
"""
