"""Code generators, run by ``just gen``; their outputs are committed and tests check they are current."""
