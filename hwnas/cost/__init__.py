"""Cost machinery shared by the backends: the cache, the lookup table, the roofline, the predictors.

The four cost methods of hwnas (see DESIGN.md):

* ``measure``: run the whole module (:mod:`hwnas.ir.runtime`): the reference;
* ``lut``: each kernel measured alone once, cached by workload, summed (:mod:`hwnas.cost.lut`);
* ``analytical``: a roofline on the machine's measured peaks (:mod:`hwnas.cost.roofline`);
* ``predictor``: a model trained on measurements (:mod:`hwnas.cost.predictor`).
"""
