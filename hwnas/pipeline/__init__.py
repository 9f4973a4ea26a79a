"""One candidate's path and where its results go: evaluate, the executors, the results store, artifacts."""
