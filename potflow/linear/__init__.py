"""Linear SNAP: the exact weighted least-squares fit of per-element linear energies (FitSNAP's
``[SOLVER] solver = SVD`` and ``RIDGE``) on the descriptor folders."""
