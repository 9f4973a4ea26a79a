"""The joint search: configuration, objectives and Pareto fronts, the joint space, workers, formulations."""
