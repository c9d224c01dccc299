"""The report layer: what users read and look at.

Layer: report (above inference and toolkit; below the package's front and the app). Text
summaries in R's layouts (``summary``, ``glmm_summary``, ``lm_summary``), R's number formatting
(``rformat``), HTML for notebooks (``html``), side-by-side model tables and arm's ``display``
(``tables``), the plot data (``plotdata``: tidy frames of the numbers each plot shows, no
matplotlib) and the plots (``plots``: matplotlib drawing of those frames only). May
import every layer below; it never fits a model or runs an optimiser (profiles and other
computations come from inference). The JSON-ready dicts in the reference schema are the
results layer's (``multilevel.results.export``).
"""
