"""Material properties of a fitted potential, computed through ASE and phonopy in LAMMPS."""
