"""Presentation of fits: lme4-style text summaries (``summary``), HTML (``html``),
JSON-ready dicts in the reference schema (``export``) and R's number formatting (``rformat``)."""
