"""The design layer: from a formula and a data source to the arrays of a model.

Layer: design (above formula). The only code that touches data frames (pandas, polars through
narwhals). May import: ``multilevel.formula``, ``multilevel.errors``, ``multilevel.control``.
Never the engine, results or anything above.

One module per concept; each imports only the ones before it (an acyclic graph):

- ``contrasts``: R's contrasts (``contr.treatment``, ``contr.sum``, ``contr.helmert``,
  ``contr.poly``, ``contr.SAS``, a matrix) and the ``contrasts=`` argument;
- ``source``: the data source (:class:`DataSource`, its :class:`Column` objects,
  :func:`take_rows`): the only code that reads a pandas/polars frame or a dict of arrays;
- ``variables``: each variable of a term and its encoding (factor levels, ``factor()``,
  ``relevel()``, numeric expressions), factor levels learnt on the fitting rows, stateful
  transforms on all rows (as R's model frame);
- ``matrices``: R's ``model.matrix`` (the column plan, :func:`fill_columns`) and its
  rank-deficiency rule (:func:`rank_keep`);
- ``grouped``: a model matrix of group intercepts and slopes kept as its blocks (group codes,
  shared base columns, the other columns), its cross products and rank rule without the
  dense matrix (``build_model_frame(..., group_key=)`` makes a :class:`GroupedFrame`);
- ``grouping``: grouping factors and the random-effect terms (:class:`ReTerm`);
- ``response``: the response as each family reads it;
- ``newdata``: the specification learnt once and its re-application to new data
  (:class:`NewDesign`);
- ``frame``: builds the :class:`ModelFrame` (y, X, the random-effect terms with their level
  references, weights, offset) with :func:`build_model_frame` / :func:`build_fixed_frame`;
- ``stream``: data read as a stream of Arrow batches (Parquet / CSV files and directories,
  Arrow datasets and readers, polars LazyFrames, DuckDB relations);
- ``chunked``: the specification learnt in passes over chunks (stateful transforms, then a
  skeleton of the levels) and each chunk's rows of Z, X and y (:class:`ChunkedDesign`), and
  the frame of such a fit (:class:`ChunkedModelFrame`);
- ``dasksource``: Dask frames as chunks, each pass a Dask tree reduction; partitions of whole
  groups by a Dask shuffle (GLMMs);
- ``buckets``: a model's row arrays in temporary files by bucket of groups, read back one
  bucket at a time (GLMMs read out of core).
"""
from multilevel.design.frame import GroupedFrame, ModelFrame, build_fixed_frame, build_model_frame
from multilevel.design.grouping import ReTerm
from multilevel.design.matrices import fill_columns, rank_keep
from multilevel.design.newdata import NewDesign
from multilevel.design.source import DataSource, take_rows

__all__ = ["ReTerm", "NewDesign", "ModelFrame", "GroupedFrame", "build_model_frame", "build_fixed_frame",
           "DataSource", "take_rows", "fill_columns", "rank_keep"]
