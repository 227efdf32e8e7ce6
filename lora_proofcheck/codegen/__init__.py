"""Stage 2 of the pipeline: print the derivations into array-API-generic kernel modules."""
