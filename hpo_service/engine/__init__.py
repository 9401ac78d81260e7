"""The optimisation core: designers that turn a study's history into new points."""
