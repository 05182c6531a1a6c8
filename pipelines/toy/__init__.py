"""The bundled toy model: a small Stable Diffusion trained from scratch on coloured shapes.

`dataset.py` draws the training images and captions, `train.py` trains the VAE, the CLIP
text encoder and the UNet and saves a standard diffusers folder in `shapes64/`.
"""
