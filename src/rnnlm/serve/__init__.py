"""``rnnlm serve``: a local web page over trained runs (generate, inspect, training curves, tag, frames).

Needs the optional extra ``rnnlm[serve]`` (starlette, uvicorn). The page is plain HTML, JavaScript and CSS in
``static/``, drawn with SVG and canvas: no CDN, no build step, so it works offline.
"""
