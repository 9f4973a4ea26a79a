"""Joint architecture x hardware search, one module per part, each importing only those above it:

* :mod:`~hwnas.search.config`: :class:`~hwnas.search.config.SearchConfig`, the constraint syntax, shared constants;
* :mod:`~hwnas.search.space`: the joint genome (architecture genes, then each target's hardware genes);
* :mod:`~hwnas.search.objectives`: objective and constraint terms, evaluated points, feasibility, the Pareto front;
* :mod:`~hwnas.search.worker`: one point's evaluation, in the workers;
* :mod:`~hwnas.search.surrogate`, :mod:`~hwnas.search.screening`: the surrogate model and the screening of
  NSGA-II's offspring by it;
* :mod:`~hwnas.search.driver`: :class:`~hwnas.search.driver.Search`, the run and its formulations.
"""
