"""potflow: fit neural-network interatomic potentials on LAMMPS descriptors."""

__version__ = "0.1.0"


def __getattr__(name):
    # potflow.ase_calculator, imported only when used (importing potflow stays cheap)
    if name == "ase_calculator":
        import importlib

        return importlib.import_module("potflow.properties.calculator").ase_calculator
    raise AttributeError(f"module 'potflow' has no attribute {name!r}")
