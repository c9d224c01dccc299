"""The app layer: the ``multilevel`` command line and the self-contained HTML report.

Layer: app (the top). May import every layer below; nothing imports it.
"""
