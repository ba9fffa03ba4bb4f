"""`comfy_api` for ComfyUI V3 packs: `latest` and the versioned names packs pin (v0_0_1, v0_0_2, v0_0_3),
all the same protocol here."""
