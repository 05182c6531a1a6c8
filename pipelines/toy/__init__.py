"""The bundled toy models: small Stable Diffusions trained from scratch on procedural images.

`configs.py` declares each model (sizes, data, step counts); `dataset.py` draws the coloured
shapes of `shapes64/`, `scenes_data.py` and `scenes_draw.py` the landscapes of `scenes/`;
`autoencoder.py` and `train.py` train the VAE, the CLIP text encoder and the UNet and save a
standard diffusers folder (`python -m pipelines.toy.train --model shapes64|scenes`).
"""
