"""The web service of latent morph: a Gradio page and a named API around `pipelines`.

`python -m service` starts it; `service.app.build_demo` builds the page from
already loaded models; `service.limits` checks every request before any work.
"""
