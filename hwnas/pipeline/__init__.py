"""The flow that joins spaces, targets and costs: lower, build, evaluate, emit."""
