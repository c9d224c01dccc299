"""Presentation of fits: lme4-style text summaries (``summary``), HTML (``html``), tables of
several fits (``tables``), plots and R's number formatting (``rformat``). The JSON-ready dicts
in the reference schema are the results layer's (``multilevel.results.export``)."""
