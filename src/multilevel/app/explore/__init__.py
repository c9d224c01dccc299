"""``multilevel explore``: the live pooling-and-shrinkage explorer (work in progress).

So far: :mod:`multilevel.app.explore.state`, the JSON the page will be drawn from (one
function from data + formula to every view's numbers, errors as data). The server (Starlette
+ uvicorn behind an ``explore`` extra) and the page are still to come.

Layer: app (the top). May import every layer below; nothing imports it.
"""
