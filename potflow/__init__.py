"""potflow: fit neural-network interatomic potentials on LAMMPS descriptors."""

__version__ = "0.1.0"
